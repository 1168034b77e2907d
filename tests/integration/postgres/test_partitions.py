"""Partitioned predictions (m0008, database/partitions.py) and retention (database/retention.py, `predmesh
retention`): the migration converts a filled table of the previous layout keeping every row, and the guarantees
the table carried still hold on it (exactly-once storage by prediction_id, request_id unique as the idempotency
key, feedback, keyset paging across partitions); retention drops whole old partitions while a writer keeps
storing (SQLite: deletes the rows), with nothing newer lost and the aggregates unchanged."""
from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from database import partitions, repo, retention
from database.connect import open_database, session
from database.migrate import migrate
from database.models import to_datetime, to_epoch
from database.records import PredictionRecord, prediction_id_of, uuid5_id
from tests.integration.postgres.test_database import record
from tests.support.pg import schema_database

DAY = 86400.0
ROOT = Path(__file__).resolve().parents[3]


def _rows(database, sql: str, params=()) -> list[tuple]:
    return [tuple(r) for r in database.execute_sql(sql, params).fetchall()]


def _page_all(flt: repo.PredictionFilter, size: int) -> list[str]:
    seen, token = [], ""
    while True:
        page, token = repo.list_predictions(flt, size, token)
        seen += [p.record.request_id for p in page]
        if not token:
            return seen


@pytest.mark.postgres
def test_migration_converts_a_filled_table_and_keeps_every_guarantee():
    now = time.time()
    # 6 days of rows (ties on created_at: ordered by prediction_id), one far in the past
    old = [record(f"old-{i}", ("setosa", "versicolor", "virginica")[i % 3], model=("iris", "wine")[i % 2],
                  version=str(1 + i % 3), at=now - (i % 6) * DAY - i // 2) for i in range(240)]
    old.append(record("ancient", at=datetime(2020, 1, 2, tzinfo=UTC).timestamp()))
    old = [dataclasses.replace(r, request_hash=f"{i:032x}") for i, r in enumerate(old)]
    with schema_database() as (_schema, database):
        with session():  # the database as the previous release left it
            migrate(database, stop_before="m0008")
            repo.insert_predictions(old)
            repo.upsert_feedback_many({r.prediction_id: "setosa" for r in old[::7]}, now)
            before = _rows(database, "SELECT * FROM predictions ORDER BY prediction_id")
            feedback = _rows(database, "SELECT prediction_id, label FROM feedback ORDER BY prediction_id")
            stats = repo.stats(repo.PredictionFilter(), now=now + 60)
            assert not partitions.keyed()
        assert "m0008_partition_predictions" in migrate(database)
        with session():
            assert partitions.is_partitioned(database) and partitions.keyed()
            names = set(partitions.partitions(database))
            days = {to_datetime(r.created_at).date() for r in old}
            assert {partitions.partition_name(d) for d in days} | {partitions.DEFAULT} <= names
            assert _rows(database, "SELECT * FROM predictions ORDER BY prediction_id") == before  # every row
            assert _rows(database, "SELECT prediction_id, label FROM feedback ORDER BY prediction_id") == feedback
            assert _rows(database, "SELECT prediction_id FROM prediction_keys ORDER BY 1") == sorted(
                (r.prediction_id,) for r in old)
            assert repo.stats(repo.PredictionFilter(), now=now + 60) == stats
            # each row sits in its day's partition (the DEFAULT partition holds none)
            assert _rows(database, f"SELECT COUNT(*) FROM {partitions.DEFAULT}") == [(0,)]

            # exactly once: a replay (COPY refused, staging insert) stores only the new rows, counted once
            new = [record(f"new-{i}", at=now - i) for i in range(5)]
            repo.insert_predictions(old[:50] + new)
            repo.insert_predictions(new)  # replayed again
            assert repo.count_predictions() == len(old) + 5
            assert repo.stats(repo.PredictionFilter(), now=now + 60).total == stats.total + 5

            # idempotency: a key's stored answer is found; the key under another prediction is not stored
            found = repo.answered([old[3].request_id, "ancient", "never"])
            assert {k: v.prediction_id for k, v in found.items()} == {
                old[3].request_id: old[3].prediction_id, "ancient": old[-1].prediction_id}
            assert found[old[3].request_id].request_hash == old[3].request_hash
            # the same with the keys' prediction ids handed in (the bulk path derives them once, vectorised)
            asked = [old[3].request_id, "ancient", "never"]
            assert repo.answered(asked, [prediction_id_of(r) for r in asked]) == found
            twice = [*asked, asked[0]]  # a key twice: the ids handed in no longer line up, and are derived again
            assert repo.answered(twice, [prediction_id_of(r) for r in twice]) == found
            # the key again, for another request (its prediction_id is the key's: prediction_id_of)
            other = dataclasses.replace(record(old[3].request_id, "virginica", at=now - 4 * DAY),
                                        request_hash="f" * 32)
            for batch in ([other], [other, record("fresh")]):  # alone, and next to a new row
                conflicts: list[str] = []
                repo.insert_predictions(batch, conflicts)
                assert conflicts == [old[3].request_id]
            kept = repo.get_prediction(old[3].prediction_id)
            assert kept is not None and kept.label == old[3].label
            assert kept.created_at == pytest.approx(old[3].created_at, abs=1e-6)
            assert repo.get_prediction(repo.answered(["fresh"])["fresh"].prediction_id) is not None
            assert repo.answered([old[3].request_id])[old[3].request_id].prediction_id == old[3].prediction_id

            # keyset paging across partitions, with and without filters; the request_id filter
            everything = sorted(old + new + [record("fresh")], key=lambda r: (r.created_at, r.prediction_id),
                                reverse=True)
            assert _page_all(repo.PredictionFilter(), 37) == [r.request_id for r in everything]
            assert _page_all(repo.PredictionFilter(model="wine", start=now - 3 * DAY), 11) == [
                r.request_id for r in everything if r.model == "wine" and r.created_at >= now - 3 * DAY]
            page, _ = repo.list_predictions(repo.PredictionFilter(request_id=old[7].request_id), 10)
            assert [(p.record.prediction_id, p.feedback_label) for p in page] == [(old[7].prediction_id,
                                                                                    "setosa")]


@pytest.mark.postgres
def test_m0010_converts_a_filled_table_to_json_keeping_every_row_and_key():
    """m0010 on a database the previous release filled: features and probabilities become json (every row reads
    back the same), prediction_keys' btree on created_at becomes a BRIN; then rows of every kind are stored, a
    replay is still dropped, a NUL string is still refused and retention still forgets the keys it removes."""
    from database.connect import RejectedData
    now = time.time()
    typed: dict[str, float | str | bool | None] = {
        "contract": 'say "hi" \\u0000 Zürich', "senior": True, "tenure": None, "charges": 1e-07}
    old = [dataclasses.replace(record(f"old-{i}", at=now - (i % 4) * DAY - i), request_hash=f"{i:032x}")
           for i in range(60)] + [dataclasses.replace(record("typed", at=now - 10), features=typed)]
    with schema_database() as (_schema, database):
        with session():  # the database as the previous release left it
            migrate(database, stop_before="m0010")
            partitions.forget(database)
            repo.insert_predictions(old)
            before = _rows(database, "SELECT * FROM predictions ORDER BY prediction_id")
            keys = _rows(database, "SELECT * FROM prediction_keys ORDER BY request_id")
        assert migrate(database, stop_before="m0012") == ["m0010_lighter_rows", "m0011_series_widths"]
        with session():
            assert _rows(database, "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                         "attrelid = 'predictions'::regclass AND atttypid IN ('json'::regtype, "
                         "'jsonb'::regtype) ORDER BY 1") == [("features", "json"), ("probabilities", "json")]
            assert _rows(database, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND "
                         "tablename = 'prediction_keys' AND indexdef LIKE '%%created_at%%'") == [
                (partitions.KEYS_INDEX,)]
            assert _rows(database, "SELECT * FROM predictions ORDER BY prediction_id") == before  # every row
            assert _rows(database, "SELECT * FROM prediction_keys ORDER BY request_id") == keys
        assert migrate(database, stop_before="m0013") == ["m0012_keys_by_prediction_id"]
        with session():
            stored = repo.get_prediction(old[-1].prediction_id)
            assert stored is not None and stored.features == typed

            plain: dict[str, float | str | bool | None] = {"petal_width": 0.2, "sepal_length": 5.1}
            new = [dataclasses.replace(record(f"new-{i}", at=now - i), features=typed if i % 2 else plain)
                   for i in range(6)]
            repo.insert_predictions(old[:10] + new)  # a replay beside new rows: only the new ones stored
            assert repo.count_predictions() == len(old) + len(new)
            assert [getattr(repo.get_prediction(r.prediction_id), "features", None)
                    for r in new] == [r.features for r in new]
            assert repo.answered([old[5].request_id])[old[5].request_id].request_hash == old[5].request_hash
            with pytest.raises(RejectedData, match="NUL"):
                repo.insert_predictions([dataclasses.replace(record("nul"), features={"contract": "a\x00"})])
            assert repo.answered(["nul"]) == {}

            report = retention.run(database, 2, now=now)  # the days before yesterday go, with their keys
            gone = {r.request_id for r in old + new if r.created_at < retention.boundary_of(2, now).replace(
                tzinfo=UTC).timestamp()}
            assert gone and report.keys == len(gone)
            assert {k for (k,) in _rows(database, "SELECT prediction_id FROM prediction_keys")} == {
                r.prediction_id for r in old + new if r.request_id not in gone}


@pytest.mark.postgres
def test_m0012_keys_by_prediction_id_keeping_every_row_and_key():
    """m0012 on a database the previous release filled (rows over 5 days and one in the DEFAULT partition, with
    feedback): prediction_keys becomes (prediction_id PRIMARY KEY, created_at) holding every key, predictions loses
    its primary key, every row stays; afterwards a request_id is still stored once across partitions (a replay
    under another created_at is skipped, a direct insert of a held id refused), and every lookup by request_id or
    prediction_id finds its row through the claim, one partition probed."""
    import psycopg2

    now = time.time()
    old = [dataclasses.replace(record(f"old-{i}", ("setosa", "virginica")[i % 2], at=now - (i % 5) * DAY - i),
                               request_hash=f"{i:032x}") for i in range(80)]
    old.append(record("ancient", at=datetime(2020, 1, 2, tzinfo=UTC).timestamp()))
    with schema_database() as (_schema, database):
        with session():  # the database as the previous release left it
            migrate(database, stop_before="m0012")
            partitions.forget(database)
            repo.insert_predictions(old)
            repo.upsert_feedback_many({r.prediction_id: "setosa" for r in old[::4]}, now)
            before = _rows(database, "SELECT * FROM predictions ORDER BY prediction_id")
            claims = _rows(database, "SELECT prediction_id, created_at FROM prediction_keys ORDER BY 1")
            assert len(claims) == len(old)
            stats = repo.stats(repo.PredictionFilter(), now=now + 60)
        assert migrate(database, stop_before="m0013") == ["m0012_keys_by_prediction_id"]
        assert migrate(database, stop_before="m0014") == ["m0013_ordered_prediction_ids"]  # the trigger claims
        with session():
            partitions.forget(database)
            assert _rows(database, "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint "
                         "WHERE contype = 'p' AND conrelid IN ('predictions'::regclass, "
                         "'prediction_keys'::regclass)") == [("prediction_keys", "PRIMARY KEY (prediction_id)")]
            assert _rows(database, "SELECT attname FROM pg_attribute WHERE attrelid = 'prediction_keys'::regclass "
                         "AND attnum > 0 AND NOT attisdropped ORDER BY attnum") == [("prediction_id",),
                                                                                  ("created_at",)]
            assert _rows(database, "SELECT * FROM predictions ORDER BY prediction_id") == before  # every row
            assert _rows(database, "SELECT * FROM prediction_keys ORDER BY 1") == claims  # every key
            assert repo.stats(repo.PredictionFilter(), now=now + 60) == stats

            # a request_id stays stored once across partitions: a retry answered days later is skipped
            # (replayed beside a new row), and the database refuses a held id in another partition itself
            again = dataclasses.replace(old[1], created_at=now - 3 * DAY - 7, label="setosa")
            assert to_datetime(again.created_at).date() != to_datetime(old[1].created_at).date()
            repo.insert_predictions([again, record("new-1", at=now)])
            repo.insert_predictions([again])  # COPY refused alone, then skipped
            assert repo.count_predictions() == len(old) + 1
            assert repo.count_predictions(repo.PredictionFilter(request_id=old[1].request_id)) == 1
            with pytest.raises(psycopg2.errors.UniqueViolation), database.atomic():
                database.cursor().execute(
                    "INSERT INTO predictions SELECT prediction_id, request_id, model, model_version, features, "
                    "label, probabilities, transport, latency_ms, created_at - interval '2 days', request_hash "
                    "FROM predictions WHERE prediction_id = %s", (old[1].prediction_id,))
            conflicts: list[str] = []
            repo.insert_predictions([dataclasses.replace(again, request_hash="f" * 32)], conflicts)
            assert conflicts == [old[1].request_id]

            # every lookup finds its row, by request_id or by prediction_id, the DEFAULT partition's too
            found = repo.answered([old[1].request_id, "ancient", "never"])
            assert {k: (v.prediction_id, v.label) for k, v in found.items()} == {
                old[1].request_id: (old[1].prediction_id, "virginica"),
                "ancient": (old[-1].prediction_id, "setosa")}
            assert found[old[1].request_id].request_hash == old[1].request_hash
            stored = repo.get_prediction(old[1].prediction_id)
            assert stored is not None and stored.created_at == pytest.approx(old[1].created_at, abs=1e-6)
            assert repo.get_prediction(record("never").prediction_id) is None
            glued = f"{old[1].prediction_id}\n{old[2].prediction_id}"  # not an id: never split into two
            assert repo.get_prediction(glued) is None and repo.predictions_by_id([glued]) == {}
            repo.upsert_feedback_many({glued: "setosa"}, now)
            page, _ = repo.list_predictions(repo.PredictionFilter(request_id=old[8].request_id), 10)
            assert [(p.record.prediction_id, p.feedback_label) for p in page] == [(old[8].prediction_id,
                                                                                    "setosa")]
            assert set(repo.predictions_by_id([r.prediction_id for r in old[:9]] + ["none"])) == {
                r.prediction_id for r in old[:9]}
            repo.upsert_feedback_many({old[1].prediction_id: "versicolor", "none": "setosa"}, now)
            page, _ = repo.list_predictions(repo.PredictionFilter(request_id=old[1].request_id), 10)
            assert [p.feedback_label for p in page] == ["versicolor"]

            # a lookup by id probes one partition (pruned when planned), by its page index
            pairs = partitions.claims(database, [old[2].prediction_id])
            plan = "\n".join(r[0] for r in _rows(database, *((f"EXPLAIN {q}", p) for q, p in [
                partitions.by_claims("p.prediction_id", pairs)]).__next__()))
            assert plan.count(" on predictions_") == 1 and "Index" in plan, plan


class StoringWriter:
    """What a server's writer does while a migration or a retention run goes on: batches of 20 new rows at the
    current time, each batch offered again with the next (a replay), until the block ends; .written lists the
    request ids stored, .errors what any insert raised (the thread stops at the first)."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        n, last = 0, list[PredictionRecord]()
        while not self._stop.is_set():
            batch = [record(f"w-{n}-{i}", at=time.time()) for i in range(20)]
            n += 1
            try:
                with session():
                    repo.insert_predictions(batch + last)  # the previous batch replayed with it
                self.written.extend(r.request_id for r in batch)
                last = batch
            except BaseException as exc:  # the tests assert there is none
                self.errors.append(exc)
                return
            time.sleep(0.01)

    def wait_for(self, count: int, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while len(self.written) < count and not self.errors and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> StoringWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.mark.postgres
def test_m0012_converts_while_a_writer_keeps_storing():
    """`predmesh migrate` applies m0012 (its index built concurrently, then the swap under a lock timeout), m0013
    and m0014 (the claim trigger dropped: this writer read the layout before, and reads it again under predictions'
    lock while it says the trigger claims) while a writer keeps storing batches, each replayed once with the next:
    the writer never fails, and afterwards every row is stored once and claimed once, the rows of before and during
    the migration alike."""
    now = time.time()
    old = [record(f"old-{i}", at=now - (i % 3) * DAY - i) for i in range(3000)]
    with schema_database() as (schema, database):
        with session():
            migrate(database, stop_before="m0012")
            partitions.forget(database)
            repo.insert_predictions(old)
        with StoringWriter() as writer:
            writer.wait_for(100)
            job = subprocess.run([sys.executable, "-m", "cli", "migrate"], capture_output=True, text=True,
                                 timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                             "PREDMESH_DATABASE_URL": schema.url})
            during = len(writer.written)
            writer.wait_for(during + 100)
        written = writer.written
        assert job.returncode == 0 and "m0012_keys_by_prediction_id" in job.stdout, job.stderr
        assert "m0014_claims_by_writer" in job.stdout
        assert not writer.errors, writer.errors
        assert len(written) >= during + 100 > 200
        with session():
            partitions.forget(database)
            assert _rows(database, "SELECT attname FROM pg_attribute WHERE attrelid = "
                         "'prediction_keys'::regclass AND attname = 'request_id' AND NOT attisdropped") == []
            stored = _rows(database, "SELECT request_id, prediction_id FROM predictions ORDER BY 1")
            assert sorted(rid for rid, _ in stored) == sorted([r.request_id for r in old] + written)  # each once
            assert sorted(pid for _, pid in stored) == [pid for (pid,) in _rows(
                database, "SELECT prediction_id FROM prediction_keys ORDER BY 1")]  # each claimed once


@pytest.mark.postgres
def test_m0014_the_writer_claims_every_id_it_stores_once_whoever_races_for_it(monkeypatch):
    """m0014 drops the claim trigger (with it, PostgreSQL's COPY into the partitioned table went row by row) and the
    writer claims the ids it stores itself. On a table the previous release filled: every row and claim stays; then
    through each of the writer's paths (COPY of new rows and of a bulk batch, the staging path of a replay with a
    key twice in its batch, the INSERT path) and with two writers racing for the same ids, every row is stored
    once, claimed once under its own created_at, and a key held for another request is reported, not stored."""
    import numpy as np

    from database.records import PredictionBatch

    now = time.time()
    old = [dataclasses.replace(record(f"old-{i}", at=now - (i % 3) * DAY - i), request_hash=f"{i:032x}")
           for i in range(60)]
    with schema_database() as (_schema, database):
        with session():  # the database as the previous release left it: the trigger claims
            migrate(database, stop_before="m0014")
            partitions.forget(database)
            assert partitions.keyed(database) and not partitions.writer_claims(database)
            repo.insert_predictions(old)
            before = _rows(database, "SELECT * FROM predictions ORDER BY prediction_id")
            claims = _rows(database, "SELECT prediction_id, created_at FROM prediction_keys ORDER BY 1")
            assert len(claims) == len(old)
        assert migrate(database) == ["m0014_claims_by_writer"]
        assert migrate(database) == []  # once
        with session():
            partitions.forget(database)
            assert partitions.keyed(database) and partitions.writer_claims(database)
            assert _rows(database, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'predictions'::regclass "
                         "AND NOT tgisinternal") == []
            assert _rows(database, "SELECT proname FROM pg_proc WHERE proname = 'prediction_keys_claim' "
                         "AND pronamespace = current_schema()::regnamespace") == []
            assert _rows(database, "SELECT * FROM predictions ORDER BY prediction_id") == before
            assert _rows(database, "SELECT prediction_id, created_at FROM prediction_keys ORDER BY 1") == claims

            def consistent() -> list[tuple]:
                """Every row claimed once, by its own id and created_at; no claim without its row."""
                rows = _rows(database, "SELECT prediction_id, created_at FROM predictions ORDER BY 1")
                assert len({pid for pid, _ in rows}) == len(rows), "a prediction id stored twice"
                assert _rows(database, "SELECT prediction_id, created_at FROM prediction_keys ORDER BY 1") == rows
                return rows

            # COPY: new records, and a bulk batch (its claims in id order, one created_at)
            fresh = [record(f"new-{i}", at=now - i) for i in range(30)]
            assert repo.insert_predictions(fresh) == 30
            n = 40
            batch = PredictionBatch(
                prediction_ids=[prediction_id_of(f"bulk-{i}") for i in range(n)],
                request_ids=[f"bulk-{i}" for i in range(n)], model="iris", model_version="1",
                feature_names=("petal_width", "sepal_length"), features=np.full((n, 2), 0.5),
                classes=("setosa", "versicolor"), labels=np.zeros(n, dtype=np.int64),
                probabilities=np.tile([0.75, 0.25], (n, 1)), transport="batch", latency_ms=1.0, created_at=now,
                request_hashes=[f"{i:032x}" for i in range(n)])
            repo.insert_predictions([batch])
            assert len(consistent()) == len(old) + 30 + n

            # the staging path: a replay of stored rows with new ones, a key twice in one batch (the first
            # stays), a held key offered for another request (reported, not stored)
            twice = record("twice-1", label="versicolor", at=now)
            conflicts: list[str] = []
            repo.insert_predictions([old[0], fresh[1], twice, dataclasses.replace(twice, label="virginica"),
                                     dataclasses.replace(old[5], request_hash="f" * 32, label="virginica")],
                                    conflicts)
            assert conflicts == [old[5].request_id]
            assert len(consistent()) == len(old) + 30 + n + 1
            assert repo.answered(["twice-1"])["twice-1"].label == "versicolor"
            assert repo.answered([old[5].request_id])[old[5].request_id].label == old[5].label

            # the INSERT path (taken when COPY refuses a value): a held id is skipped, a new one claimed
            with monkeypatch.context() as m:
                m.setattr(repo, "copy_text", lambda records, claims: io.StringIO("not\ta row\n"))  # no claim by
                # COPY, and the rows' COPY is refused
                repo.insert_predictions([record("inserted-1", at=now), fresh[2]])
            assert len(consistent()) == len(old) + 30 + n + 2

        # two writers racing for the same ids, by COPY and by the staging path at once
        racing = [[record(f"race-{b}-{i}", at=now) for i in range(50)] for b in range(8)]
        errors: list[BaseException] = []

        def store(batches: list[list[PredictionRecord]]) -> None:
            try:
                for b in batches:
                    with session():
                        repo.insert_predictions(b)
            except BaseException as exc:  # asserted empty below
                errors.append(exc)

        threads = [threading.Thread(target=store, args=(racing,)),
                   threading.Thread(target=store, args=([b + racing[(k + 1) % 8][:5] for k, b in
                                                         enumerate(reversed(racing))],))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        with session():
            stored = {pid for pid, _ in consistent()}
            assert {r.prediction_id for b in racing for r in b} <= stored


@pytest.mark.postgres
def test_a_partition_created_late_takes_its_rows_from_the_default_partition():
    with schema_database() as (_schema, database):
        migrate(database)
        later = time.time() + 30 * DAY  # beyond the partitions made ahead: the DEFAULT partition takes it
        with session():
            repo.insert_predictions([record("later", at=later)])
            assert _rows(database, f"SELECT request_id FROM {partitions.DEFAULT}") == [("later",)]
            assert partitions.ensure_partitions(database, now=later, ahead=0, behind=0) == [
                partitions.partition_name(to_datetime(later).date())]
            name = partitions.partition_name(to_datetime(later).date())
            assert _rows(database, f"SELECT request_id FROM {name}") == [("later",)]
            assert _rows(database, f"SELECT COUNT(*) FROM {partitions.DEFAULT}") == [(0,)]
            assert repo.answered(["later"])["later"].prediction_id == record("later").prediction_id


def test_retention_drops_old_predictions_while_a_writer_keeps_storing(empty_db_url):
    postgres = not empty_db_url.startswith("sqlite")
    now = time.time()
    keep_days = 4
    boundary = retention.boundary_of(keep_days, now)
    old = [record(f"old-{d}-{i}", ("setosa", "virginica")[i % 2], at=now - d * DAY - i * 60)
           for d in range(1, 10) for i in range(12)]
    if postgres:
        old.append(record("ancient", at=datetime(2020, 1, 2, tzinfo=UTC).timestamp()))  # the DEFAULT partition
    gone = [r for r in old if to_datetime(r.created_at) < boundary]
    kept = [r for r in old if to_datetime(r.created_at) >= boundary]
    assert gone and kept
    today = int(datetime(*datetime.fromtimestamp(now, UTC).timetuple()[:3], tzinfo=UTC).timestamp())
    database = open_database(empty_db_url)
    try:
        migrate(database)
        with session():
            # the partitions a server running for the last ten days made ahead
            partitions.ensure_partitions(database, now=now - 10 * DAY, ahead=10)
            repo.insert_predictions(old)
            repo.upsert_feedback_many({r.prediction_id: "setosa" for r in old[::3]}, now)
            rollup = ("SELECT width, bucket_start, model, model_version, transport, n FROM stats_rollup "
                      f"WHERE bucket_start < {today} ORDER BY 1, 2, 3, 4, 5")
            confusion = (f"SELECT * FROM stats_feedback WHERE bucket_start < {today} ORDER BY 1, 2, 3, 4, 5, 6")
            aggregates_before = (_rows(database, rollup), _rows(database, confusion))
            stats_before = repo.stats(repo.PredictionFilter(start=now - 11 * DAY, end=today))
            assert stats_before.total == len(old) - postgres and stats_before.quality
            old_partitions = {name for name, (lo, hi) in partitions.partitions(database).items()
                              if hi is not None and hi <= boundary} if postgres else set()
            assert len(old_partitions) >= 4 if postgres else True

        with StoringWriter() as writer:
            writer.wait_for(100, seconds=20)
            job = subprocess.run([sys.executable, "-m", "cli", "retention"], capture_output=True, text=True,
                                 timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                             "PREDMESH_DATABASE_URL": empty_db_url,
                                                             "PREDMESH_RETENTION_DAYS": str(keep_days)})
            writer.wait_for(len(writer.written) + 100, seconds=40)  # and the writer keeps storing after it
        written = writer.written
        assert job.returncode == 0, job.stderr
        assert not writer.errors, writer.errors
        assert f"{len(gone)} rows" in job.stdout, job.stdout
        if postgres:
            assert all(name in job.stdout for name in old_partitions), job.stdout
            assert "dropped partition" in job.stderr  # logged, one line per partition

        with session():
            stored = {r[0] for r in _rows(database, "SELECT request_id FROM predictions")}
            assert stored == {r.request_id for r in kept} | set(written)  # nothing newer lost, nothing old left
            assert repo.count_predictions() == len(stored)  # each once
            with_feedback = {r[0] for r in _rows(database, "SELECT prediction_id FROM feedback")}
            assert with_feedback == {r.prediction_id for r in old[::3] if r in kept}
            assert (_rows(database, rollup), _rows(database, confusion)) == aggregates_before
            assert repo.stats(repo.PredictionFilter(start=now - 11 * DAY, end=today)) == stats_before
            assert not repo.answered([r.request_id for r in gone])
            assert set(repo.answered([r.request_id for r in kept])) == {r.request_id for r in kept}
            # feedback for a prediction retention removed is not stored (there is no foreign key to refuse it)
            repo.upsert_feedback(gone[0].prediction_id, "setosa", now)
            assert not _rows(database, "SELECT 1 FROM feedback WHERE prediction_id = %s" if postgres else
                             "SELECT 1 FROM feedback WHERE prediction_id = ?", (gone[0].prediction_id,))
            if postgres:
                left = partitions.partitions(database)
                assert not old_partitions & set(left)
                assert all(lo is None or lo >= boundary - timedelta(days=1) for lo, _ in left.values())
                assert _rows(database, "SELECT COUNT(*) FROM prediction_keys") == [(len(stored),)]
                assert to_epoch(min(lo for lo, _ in left.values() if lo is not None)) <= to_epoch(boundary)
    finally:
        database.close()


@pytest.mark.postgres
def test_the_server_runs_retention_by_itself(model_store, tmp_path):
    """A server with PREDMESH_RETENTION_DAYS drops the old partitions at start (then hourly), and logs them."""
    from tests.support.procs import ServerProc, wait_for

    now = time.time()
    old = [record(f"old-{d}", at=now - d * DAY) for d in range(1, 8)]
    boundary = retention.boundary_of(3, now)
    with schema_database() as (schema, database):
        migrate(database)
        with session():
            partitions.ensure_partitions(database, now=now - 8 * DAY, ahead=8)
            repo.insert_predictions(old)
        env = {"PREDMESH_DATABASE_URL": schema.url, "PREDMESH_RETENTION_DAYS": "3"}
        with ServerProc(model_store, tmp_path / "server.log", env=env) as proc:
            wait_for(lambda: "retention: predictions before" in proc.log_path.read_text(), 30,
                     what="the server's retention run")
            assert "dropped partition" in proc.log_path.read_text()
        with session():
            stored = {r[0] for r in _rows(database, "SELECT request_id FROM predictions")}
            assert stored == {r.request_id for r in old if to_datetime(r.created_at) >= boundary}
            assert all(hi is None or hi > boundary for _, hi in partitions.partitions(database).values())


@pytest.mark.postgres
def test_m0013_request_ids_stored_under_uuid5_ids_are_still_found_until_retention_drops_them():
    """Ordered ids (m0013) change the prediction_id of a request id ending in a number; rows the previous release
    stored keep their uuid5 ids. A retry of such a request after the upgrade must find its stored answer (else it
    is scored and stored again), ListPredictions by request_id must find the row, and once retention has dropped
    every row from before, lookups go back to one probe a key. A new database never probes twice."""
    now = time.time()
    legacy = [dataclasses.replace(record(f"order-{i}", at=now - (i % 3) * DAY - i), prediction_id=uuid5_id(
        f"order-{i}"), request_hash=f"{i:032x}") for i in range(12)]
    with schema_database() as (_schema, database):
        with session():  # the database as the previous release left it: uuid5 ids only
            migrate(database, stop_before="m0013")
            partitions.forget(database)
            repo.insert_predictions(legacy)
        assert migrate(database) == ["m0013_ordered_prediction_ids", "m0014_claims_by_writer"]
        with session():
            partitions.forget(database)
            until = partitions.legacy_until(database)
            assert until is not None and until > datetime.now(UTC).replace(tzinfo=None)
            asked = [r.request_id for r in legacy[:5]] + ["order-999"]
            found = repo.answered(asked)
            assert sorted(found) == asked[:5]  # the stored answers, not scored again
            assert {rid: a.prediction_id for rid, a in found.items()} == {
                r.request_id: r.prediction_id for r in legacy[:5]}
            assert found["order-2"].request_hash == legacy[2].request_hash
            # the server passes the keys' ordered ids along: the uuid5 ones are probed too
            assert sorted(repo.answered(asked, [prediction_id_of(r) for r in asked])) == asked[:5]
            rows, _ = repo.list_predictions(repo.PredictionFilter(request_id="order-7"), 10)
            assert [r.record.prediction_id for r in rows] == [uuid5_id("order-7")]
            assert repo.count_predictions(repo.PredictionFilter(request_id="order-7")) == 1
            # new rows get ordered ids and are found by them as well
            repo.insert_predictions([record("order-1000", at=now)])
            assert repo.answered(["order-1000"])["order-1000"].prediction_id == prediction_id_of("order-1000")
            assert uuid.UUID(prediction_id_of("order-1000")).version == 8

            # retention drops the days before the record's time: the record goes and one probe a key is back
            database.execute_sql(f"UPDATE {partitions.LEGACY} SET until = %s",
                                 (to_datetime(now - 0.5 * DAY),))
            partitions.forget(database)
            assert partitions.legacy_until(database) is not None  # rows from before are still stored
            retention.run(database, 1, now=now + DAY)  # keeps only the day of now
            partitions.forget(database)
            assert partitions.legacy_until(database) is None
            assert _rows(database, f"SELECT * FROM {partitions.LEGACY}") == []
            assert partitions.legacy_ids(database, ["order-1"]) == {}

    with schema_database() as (_schema, database):  # a new database: nothing recorded, never a second probe
        assert "m0013_ordered_prediction_ids" in migrate(database)
        with session():
            partitions.forget(database)
            assert partitions.legacy_until(database) is None
            assert _rows(database, f"SELECT * FROM {partitions.LEGACY}") == []
