"""The on-disk spool: group commit, ordered replay, bounded size, torn tails and damaged lines quarantined."""
from __future__ import annotations

import itertools
import shutil
import threading

import pytest

from inference.recording.spool import Spool, SpoolFull, decode, encode


def drain(spool: Spool) -> list[dict]:
    out: list[dict] = []
    while True:
        cursor, docs = spool.read(7)
        spool.consume(cursor)
        if not docs:
            return out
        out += docs


def test_concurrent_appends_are_all_read_back_once_in_commit_order(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=2_000)  # small segments: many rotations
    def writer(t):
        for i in range(50):
            spool.append([encode({"t": t, "i": i})])
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    docs = drain(spool)
    assert len(docs) == 400 and len({(d["t"], d["i"]) for d in docs}) == 400
    for t in range(8):  # each writer's records come back in its own order
        assert [d["i"] for d in docs if d["t"] == t] == list(range(50))
    assert spool.unconsumed_bytes() == 0
    assert len(list(tmp_path.glob("seg-*.log"))) <= 2  # consumed sealed segments are deleted
    spool.close()


def test_unconsumed_records_survive_a_restart(tmp_path):
    spool = Spool(tmp_path, max_bytes=1_000_000)
    spool.append([encode({"i": i}) for i in range(10)])
    cursor, docs = spool.read(4)
    spool.consume(cursor)
    assert [d["i"] for d in docs] == [0, 1, 2, 3]
    # a crash (no close; the directory as it is now): the restart replays from the segment start, the database
    # ignores the 4 it already has (idempotent)
    crashed = tmp_path.parent / f"{tmp_path.name}-crashed"
    shutil.copytree(tmp_path, crashed)
    assert [d["i"] for d in drain(Spool(crashed, max_bytes=1_000_000))] == list(range(10))
    spool.close()
    # a graceful close discards what was consumed: the restart replays only what the database has not taken
    reopened = Spool(tmp_path, max_bytes=1_000_000)
    assert [d["i"] for d in drain(reopened)] == list(range(4, 10))


def test_a_graceful_close_after_everything_was_consumed_leaves_no_records(tmp_path):
    spool = Spool(tmp_path, max_bytes=1_000_000, segment_bytes=200)
    spool.append([encode({"i": i}) for i in range(30)])  # several segments
    assert [d["i"] for d in drain(spool)] == list(range(30))
    spool.close()
    assert sum(p.stat().st_size for p in tmp_path.glob("seg-*.log")) == 0
    assert drain(Spool(tmp_path, max_bytes=1_000_000)) == []


def test_full_spool_refuses_and_frees_space_when_consumed(tmp_path):
    line = encode({"x": "y" * 100})
    spool = Spool(tmp_path, max_bytes=len(line) * 3)
    spool.append([line, line, line])
    with pytest.raises(SpoolFull):
        spool.append([line])
    cursor, _ = spool.read(10)
    spool.consume(cursor)
    spool.append([line])
    assert spool.unconsumed_bytes() == len(line)


def test_torn_tail_is_quarantined_not_fatal(tmp_path):
    spool = Spool(tmp_path, max_bytes=1_000_000)
    spool.append([encode({"i": 1}), encode({"i": 2})])
    spool.close()
    [segment] = tmp_path.glob("seg-*.log")
    with open(segment, "ab") as fh:
        fh.write(encode({"i": 3})[:9])  # a write cut short by kill -9
    reopened = Spool(tmp_path, max_bytes=1_000_000)
    assert [d["i"] for d in drain(reopened)] == [1, 2]
    [bad] = (tmp_path / "quarantine").iterdir()
    assert bad.read_bytes() == encode({"i": 3})[:9]


def test_damaged_line_in_the_middle_is_skipped_and_kept(tmp_path):
    spool = Spool(tmp_path, max_bytes=1_000_000)
    spool.append([encode({"i": 1}), encode({"i": 2}), encode({"i": 3})])
    spool.close()
    [segment] = tmp_path.glob("seg-*.log")
    data = segment.read_bytes().replace(b'{"i":2}', b'{"i":9}')  # same length, CRC no longer matches
    segment.write_bytes(data)
    assert [d["i"] for d in drain(Spool(tmp_path, max_bytes=1_000_000))] == [1, 3]
    assert len(list((tmp_path / "quarantine").iterdir())) == 1


def test_line_codec_detects_damage():
    line = encode({"a": 1.5})
    assert decode(line) == {"a": 1.5}
    assert decode(line.replace(b"1.5", b"2.5")) is None
    assert decode(b"zzzz {}\n") is None


def test_claim_gives_each_process_its_own_slot(tmp_path):
    first = Spool.claim(tmp_path, 1_000_000)
    second = Spool.claim(tmp_path, 1_000_000)
    assert first.dir != second.dir
    first.append([encode({"i": 1})])
    first.close()  # releases the lock: a successor takes the slot over and finds the record
    successor = Spool.claim(tmp_path, 1_000_000)
    assert successor.dir == first.dir and drain(successor) == [{"i": 1}]


def test_age_tracks_how_long_records_have_been_waiting(tmp_path, monkeypatch):
    import types

    from inference.recording import spool as spool_module
    now = [1_000_000.0]
    monkeypatch.setattr(spool_module, "time", types.SimpleNamespace(time=lambda: now[0]))  # the spool's clock
    spool = Spool(tmp_path, max_bytes=1_000_000)
    assert spool.oldest_age() == 0.0
    spool.append([encode({"i": 1})])
    now[0] += 7.5
    assert spool.oldest_age() == 7.5
    cursor, _ = spool.read(10)
    spool.consume(cursor)
    assert spool.oldest_age() == 0.0


def test_records_in_an_abandoned_slot_are_adopted(tmp_path):
    first, second = Spool.claim(tmp_path, 1_000_000), Spool.claim(tmp_path, 1_000_000)
    first.append([encode({"i": 1})])
    second.append([encode({"i": 2})])
    first.close()
    second.close()  # both processes gone; only one comes back
    survivor = Spool.claim(tmp_path, 1_000_000)
    assert sorted(d["i"] for d in drain(survivor)) == [1, 2]
    assert not list((tmp_path / "p1").glob("seg-*.log"))


def test_an_idle_append_writes_in_the_callers_thread(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000)
    spool.append([encode({"i": 1})])
    assert spool._flusher is None  # no hand-off to the flusher thread when nothing else was writing
    assert drain(spool) == [{"i": 1}]
    spool.close()


def test_on_synced_reports_tagged_appends_in_file_order_with_consumable_positions(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=1_500)  # rotations between appends
    seen: list[tuple] = []
    spool.on_synced = seen.extend
    def writer(t):
        for i in range(40):
            spool.append([encode({"t": t, "i": i}), encode({"t": t, "i": i, "second": True})], tag=(t, i))
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(tag for tag, _, _ in seen) == [(t, i) for t in range(6) for i in range(40)]
    # contiguous, in file order: each entry starts where the previous ended (or at the start of the next
    # segment), so consuming up to an entry's end never skips an entry that was not reported
    for (_, start, end), (_, nxt, _) in itertools.pairwise(seen):
        assert start < end and (nxt == end or (nxt[0] == end[0] + 1 and nxt[1] == 0))
    # consuming to each reported end in turn releases exactly what was appended, in order
    assert spool.position() == seen[0][1]
    for tag, start, end in seen:
        assert spool.position() == start
        cursor, docs = spool.read(2)
        assert cursor == end and [(d["t"], d["i"]) for d in docs] == [tag, tag]
        spool.consume(end)
    assert spool.unconsumed_bytes() == 0
    spool.close()


# -- preallocated segments: records end at the first zero byte, not at the file's size -------------------------
def crash_copy(spool: Spool):
    """The directory as a kill -9 would leave it now (no close: the live segment keeps its preallocated tail)."""
    crashed = spool.dir.parent / f"{spool.dir.name}-crashed"
    shutil.copytree(spool.dir, crashed, ignore=shutil.ignore_patterns(".lock"))
    return crashed


def test_the_live_segment_is_preallocated_and_a_crash_recovers_exactly_its_records(tmp_path):
    spool = Spool(tmp_path / "s", max_bytes=10_000_000, segment_bytes=64 * 1024)
    lines = [encode({"i": i}) for i in range(20)]
    spool.append(lines)
    [segment] = spool.dir.glob("seg-*.log")
    data = segment.read_bytes()
    assert len(data) == 64 * 1024 and data.startswith(b"".join(lines))  # the size says nothing about the records
    assert data[len(b"".join(lines)):] == b"\0" * (len(data) - len(b"".join(lines)))
    crashed = crash_copy(spool)
    recovered = Spool(crashed, max_bytes=10_000_000)
    assert [d["i"] for d in drain(recovered)] == list(range(20))
    assert not list((crashed / "quarantine").iterdir())  # a zero tail is free space, not damage
    # appends after the restart go to a new segment and come back after the replayed ones
    recovered.append([encode({"i": 20})])
    assert [d["i"] for d in drain(recovered)] == [20]
    spool.close()


def test_a_torn_write_into_the_preallocated_tail_is_quarantined_and_cut(tmp_path):
    spool = Spool(tmp_path / "s", max_bytes=10_000_000, segment_bytes=64 * 1024)
    spool.append([encode({"i": 1}), encode({"i": 2})])
    crashed = crash_copy(spool)
    [segment] = crashed.glob("seg-*.log")
    good = len(encode({"i": 1}) + encode({"i": 2}))
    # a write that kill -9 (or a power cut) tore: part of a line, a sector that never reached the disk (zeros),
    # then another part of the same unacknowledged write
    with open(segment, "r+b") as fh:
        fh.seek(good)
        fh.write(encode({"i": 3})[:7] + b"\0" * 512 + b"tail of it")
    recovered = Spool(crashed, max_bytes=10_000_000)
    assert segment.stat().st_size == good  # cut: the next start finds nothing to quarantine again
    [bad] = (crashed / "quarantine").iterdir()
    assert bad.read_bytes() == encode({"i": 3})[:7] + b"\0" * 512 + b"tail of it"
    assert [d["i"] for d in drain(recovered)] == [1, 2]
    spool.close()


def test_a_graceful_close_cuts_the_live_segment_to_its_records(tmp_path):
    spool = Spool(tmp_path, max_bytes=10_000_000, segment_bytes=64 * 1024)
    spool.append([encode({"i": i}) for i in range(5)])
    spool.close()
    [segment] = tmp_path.glob("seg-*.log")
    assert segment.read_bytes() == b"".join(encode({"i": i}) for i in range(5))


def test_a_spool_with_only_a_preallocated_segment_holds_no_records(tmp_path):
    from inference.recording.spool import holds_records

    spool = Spool.claim(tmp_path, 10_000_000)  # kill -9 right after the start: an all-zero live segment
    assert sum(p.stat().st_size for p in tmp_path.glob("p*/seg-*.log")) > 0
    assert not holds_records(tmp_path)
    spool.append([encode({"i": 1})])
    assert holds_records(tmp_path)
    spool.close()


def test_a_line_never_holds_a_zero_byte():
    line = encode({"request_id": "a\0b", "label": "\x00\x01é"})
    assert b"\0" not in line and decode(line) == {"request_id": "a\0b", "label": "\x00\x01é"}
def test_read_stops_near_max_bytes_but_returns_at_least_one_document(tmp_path):
    spool = Spool(tmp_path / "s", 10_000_000)
    lines = [encode({"i": i, "pad": "x" * 1000}) for i in range(10)]
    spool.append(lines)
    cursor, docs = spool.read(100, max_bytes=2500)
    assert [d["i"] for d in docs] == [0, 1, 2]  # stops once ~2500 bytes are read
    spool.consume(cursor)
    assert [d["i"] for d in spool.read(100, max_bytes=1)[1]] == [3]
    assert len(spool.read(100)[1]) == 7
    spool.close()


def test_the_spool_is_readable_by_its_owner_only(tmp_path):
    """Its records hold every answered request's features: directories 0700, files 0600 (they followed the umask,
    0644 here, so any local user could read them)."""
    import os
    import stat

    base = tmp_path / "spool"
    spool = Spool.claim(base, 1_000_000)
    spool.append([encode({"i": i}) for i in range(3)])
    cursor, _ = spool.read(2)
    spool.consume(cursor)
    spool.close()  # the graceful close rewrites the head segment without what was consumed
    found = list(base.rglob("*"))
    assert any(p.name.startswith("seg-") for p in found)
    for path in [base, *found]:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if path.is_dir():
            assert mode == 0o700, (path, oct(mode))
        elif path.name != "database.json":  # bound by persistence, not here
            assert mode == 0o600, (path, oct(mode))
