"""The prediction log with a stand-in database (a pure unit test of batching, spooling, replay and overload)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from database.connect import DatabaseUnavailable, RejectedData
from database.records import PredictionBatch, PredictionRecord, as_rows
from inference.errors import Overloaded
from inference.recording.prediction_log import PredictionLog
from inference.recording.spool import Spool
from tests.support.procs import wait_for


class FakeDb:
    """Stores records by request_id (ignoring repeats, like ON CONFLICT DO NOTHING); can be switched off."""

    def __init__(self):
        self.rows: dict[str, PredictionRecord] = {}
        self.up = True
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def insert(self, records):
        if not self.up:
            raise DatabaseUnavailable("connection refused")
        records = as_rows(records)  # bulk batches: one row each
        if any(r.model == "poison" or r.request_id.startswith("poison") for r in records):
            raise RejectedData("value too long")
        with self.lock:
            self.batches.append(len(records))
            for r in records:
                self.rows.setdefault(r.request_id, r)


def rec(i: int, model: str = "iris") -> PredictionRecord:
    return PredictionRecord(prediction_id=f"p{i}", request_id=f"r{i}", model=model, model_version="1",
                            features={"x": float(i)}, label="a", probabilities={"a": 1.0}, transport="grpc",
                            latency_ms=0.5, created_at=time.time())


def bulk(first: int, n: int, poison: int | None = None) -> PredictionBatch:
    """A bulk batch of n rows (request ids r<first>…; the row at index `poison` is refused by FakeDb)."""
    rids = [f"poison{first + i}" if i == poison else f"r{first + i}" for i in range(n)]
    probabilities = np.random.default_rng(first).dirichlet([1, 1, 1], n)
    return PredictionBatch(prediction_ids=[f"p{first + i}" for i in range(n)], request_ids=rids, model="iris",
                           model_version="1", feature_names=("x", "y"),
                           features=np.arange(2 * n, dtype=float).reshape(n, 2) / 3, classes=("a", "b", "c"),
                           labels=probabilities.argmax(axis=1), probabilities=probabilities, transport="batch",
                           latency_ms=1.5, created_at=time.time())


@pytest.fixture(params=["async", "durable"])
def mode(request):
    return request.param


def make(tmp_path, db, mode, **kw):
    options = {"durable": mode == "durable", "batch_size": 50, "flush_interval_s": 0.01, "retry_interval_s": 0.1}
    options.update(kw)
    spool = Spool(tmp_path / "spool", kw.pop("max_bytes", 10_000_000))
    options.pop("max_bytes", None)
    return PredictionLog(spool, db.insert, **options)


def test_records_from_many_threads_arrive_in_batches(tmp_path, mode):
    db = FakeDb()
    plog = make(tmp_path, db, mode)
    threads = [threading.Thread(target=lambda t=t: [plog.record([rec(t * 100 + i)]) for i in range(100)])
               for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert plog.flush(10)
    assert len(db.rows) == 800
    assert len(db.batches) < 800  # batched, not one insert per record
    plog.close()


def test_outage_spools_then_replays_everything_once(tmp_path, mode):
    db = FakeDb()
    plog = make(tmp_path, db, mode)
    db.up = False
    for i in range(120):  # batch_size 50: several batches (each record a synchronous write in durable mode)
        plog.record([rec(i)])
    wait_for(lambda: plog.spool.unconsumed_bytes() > 0, 5, what="records spooled during the outage")
    assert len(db.rows) == 0
    db.up = True
    wait_for(lambda: len(db.rows) == 120, 10, what="replay after the outage")
    assert plog.flush(5) and plog.spool.unconsumed_bytes() == 0
    plog.close()


def test_full_spool_during_outage_answers_overloaded(tmp_path, mode):
    db = FakeDb()
    db.up = False
    plog = make(tmp_path, db, mode, max_bytes=20_000, max_queue=100)
    accepted, refused = 0, 0
    for i in range(1000):
        try:
            plog.record([rec(i)])
            accepted += 1
        except Overloaded:
            refused += 1
    assert refused > 0 and accepted > 0
    db.up = True
    wait_for(lambda: len(db.rows) == accepted, 10, what="every accepted record stored")
    plog.close()
    assert len(db.rows) == accepted  # never more: nothing refused was stored, nothing accepted was lost


def test_a_record_the_database_refuses_is_quarantined_and_does_not_block_the_rest(tmp_path, mode):
    db = FakeDb()
    plog = make(tmp_path, db, mode)
    plog.record([rec(1), rec(2, model="poison"), rec(3)])
    assert plog.flush(5)
    assert set(db.rows) == {"r1", "r3"}
    assert len(list((tmp_path / "spool" / "quarantine").iterdir())) == 1
    plog.close()


def test_a_refused_row_of_a_bulk_batch_is_quarantined_alone(tmp_path, mode):
    db = FakeDb()
    plog = make(tmp_path, db, mode)
    plog.record([bulk(0, 40, poison=17), rec(1000)])
    assert plog.flush(5)
    assert set(db.rows) == {f"r{i}" for i in range(40) if i != 17} | {"r1000"}
    [quarantined] = (tmp_path / "spool" / "quarantine").iterdir()
    assert b'"poison17"' in quarantined.read_bytes() and b'"r16"' not in quarantined.read_bytes()
    plog.close()


def test_bulk_batches_spooled_during_an_outage_are_replayed_row_for_row(tmp_path, mode):
    db = FakeDb()
    plog = make(tmp_path, db, mode)
    db.up = False
    batches = [bulk(i * 100, 100) for i in range(5)]
    for b in batches:
        plog.record([b])
    wait_for(lambda: plog.spool.unconsumed_bytes() > 0, 5, what="batches spooled during the outage")
    db.up = True
    wait_for(lambda: len(db.rows) == 500, 10, what="replay after the outage")
    expected = {r.request_id: r for b in batches for r in b.rows()}
    assert db.rows == expected  # every field of every row, floats bit for bit
    plog.close()


def test_close_keeps_what_the_database_did_not_take(tmp_path):
    db = FakeDb()
    db.up = False
    plog = make(tmp_path, db, "async", flush_interval_s=10.0, batch_size=1000)
    for i in range(20):
        plog.record([rec(i)])
    plog.close(timeout=0.1)  # the database takes nothing: what close could not flush goes to the spool
    db.up = True
    replay = make(tmp_path, db, "async")  # the next start replays the spool
    wait_for(lambda: len(db.rows) == 20, 10, what="replay on the next start")
    replay.close()


def test_spool_documents_round_trip_every_record_field():
    import dataclasses

    from inference.recording.documents import from_doc, to_doc
    record = dataclasses.replace(rec(7), request_hash="0f" * 16)  # a keyed request: every field is written
    assert set(to_doc(record)) == {f.name for f in dataclasses.fields(PredictionRecord)}
    assert from_doc(to_doc(record)) == record
    unkeyed = rec(8)  # no fingerprint: the line is as before fingerprints (no request_hash), and reads back
    assert "request_hash" not in to_doc(unkeyed) and from_doc(to_doc(unkeyed)) == unkeyed
    batch = bulk(0, 30)
    batch = dataclasses.replace(batch, request_hashes=[f"{i:032x}" for i in range(len(batch))])
    assert set(to_doc(batch)) == {f.name for f in dataclasses.fields(PredictionBatch)}
    import json
    back = from_doc(json.loads(json.dumps(to_doc(batch))))
    assert type(back) is PredictionBatch and back.rows() == batch.rows()


@pytest.mark.parametrize("max_queue", [10_000, 7])  # 7: memory holds only a few, the rest is replayed
def test_durable_writer_inserts_synced_records_from_memory_and_consumes_the_spool(tmp_path, monkeypatch,
                                                                                   max_queue):
    db = FakeDb()
    plog = make(tmp_path, db, "durable", max_queue=max_queue)
    read_back = []  # records the writer had to read back from the spool
    real_read = plog.spool.read
    def counting_read(n, max_bytes=None):
        cursor, docs = real_read(n, max_bytes)
        read_back.extend(docs)
        return cursor, docs
    monkeypatch.setattr(plog.spool, "read", counting_read)
    threads = [threading.Thread(target=lambda t=t: [plog.record([rec(t * 100 + i), rec(t * 100 + 50 + i)])
                                                    for i in range(50)]) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert plog.flush(10)
    assert len(db.rows) == 600 and plog.spool.unconsumed_bytes() == 0
    if max_queue >= 600:
        assert read_back == []  # all from memory; the spool was only written and consumed
    else:
        assert read_back  # memory overflowed: the rest came from the spool, still each record once
    plog.close()
    assert len(db.rows) == 600


def test_durable_backlog_is_inserted_in_parallel_batches_and_a_failed_one_is_replayed(tmp_path, monkeypatch):
    """writers=3: a backlog of synced bulk batches goes in up to three inserts at once (on different threads, so
    different connections); when one of them fails the spool is replayed and every row is still stored once."""
    db = FakeDb()
    threads_seen, in_flight, peak = set(), [0], [0]
    failed: list[object] = []
    real_insert = db.insert
    backlog = threading.Event()
    groups_now, arrivals, meet = [0], [0], threading.Barrier(2, timeout=10)

    def insert(records):
        backlog.wait(10)  # the first insert waits until a backlog has been synced behind it
        with db.lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            threads_seen.add(threading.current_thread().name)
            arrivals[0] += groups_now[0] > 1
            meets = groups_now[0] > 1 and arrivals[0] <= 2
        try:
            if meets:  # the first two inserts of a parallel round wait, in flight, for each other
                meet.wait()
            if not failed and any(r.request_id == "r1500" for r in as_rows(records)):
                failed.append(1)
                raise DatabaseUnavailable("connection reset")
            return real_insert(records)
        finally:
            with db.lock:
                in_flight[0] -= 1

    monkeypatch.setattr(db, "insert", insert)
    plog = make(tmp_path, db, "durable", writers=3, batch_size=100, retry_interval_s=0.05)
    store_all = plog._writers.store_all

    def counted(groups):
        groups_now[0] = len(groups)  # inserted at once: the first in the writer's thread, the others in a pool
        return store_all(groups)
    plog._writers.store_all = counted
    for i in range(20):
        plog.record([bulk(i * 100, 100)])
    backlog.set()
    assert plog.flush(20)
    assert set(db.rows) == {f"r{i}" for i in range(2000)} and failed
    assert peak[0] >= 2 and len(threads_seen) >= 2
    assert plog.spool.unconsumed_bytes() == 0
    plog.close()


def test_a_durable_backlog_during_an_outage_does_not_spin_the_writer(tmp_path, monkeypatch):
    """A full synced tail stays ready while the database is down; the writer must wait for the retry time instead
    of waking on it. It went round ~280,000 times in 0.5 s (a core); now once per flush interval (10 ms here)."""
    db = FakeDb()

    def down(records):
        raise DatabaseUnavailable("down")
    monkeypatch.setattr(db, "insert", down)
    plog = make(tmp_path, db, "durable", batch_size=100, retry_interval_s=30.0)
    takes = [0]  # the writer's rounds: each takes from the async queue first
    take = plog._queue.take

    def counted(*args):
        takes[0] += 1
        return take(*args)
    plog._queue.take = counted
    for i in range(5):
        plog.record([bulk(i * 100, 100)])
    deadline = time.monotonic() + 5
    while not plog._db.probe_due() and plog._db.ok and time.monotonic() < deadline:  # the first try, which fails
        time.sleep(0.01)
    before = takes[0]
    time.sleep(0.5)
    assert takes[0] - before < 200, f"the writer went round {takes[0] - before} times in 0.5 s of outage"
    plog.close(timeout=0.1)


def test_durable_rows_arriving_during_an_insert_wait_for_the_interval_or_a_full_batch(tmp_path):
    """A steady load is stored in batches of the flush interval's rows, not of what arrived during the previous
    insert (each batch has a fixed cost in the database: ~100-row batches at 5,700 calls/s cost ~40% more of
    PostgreSQL's CPU per row than 500-row ones)."""
    db = FakeDb()
    started, release = threading.Event(), threading.Event()
    insert = db.insert

    def slow(records):
        started.set()
        release.wait(5)
        insert(records)
    plog = make(tmp_path, db, "durable", batch_size=100, flush_interval_s=0.5)
    plog._db._insert = slow
    plog.record([bulk(0, 100)])  # a full batch: stored at once
    assert started.wait(5)
    plog.record([rec(1000 + i) for i in range(10)])  # arrive while it is being inserted
    release.set()
    wait_for(lambda: db.batches == [100], 5)
    time.sleep(0.2)
    assert db.batches == [100], "the 10 rows went in at once instead of waiting for the interval"
    wait_for(lambda: db.batches == [100, 10], 5)  # then the interval's flush takes them
    plog.record([bulk(2000, 100)])
    wait_for(lambda: db.batches == [100, 10, 100], 0.4)  # a full batch does not wait for the interval
    plog.close()
