"""The database layer against real PostgreSQL (a unique schema per test) and SQLite: the same tests on both."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from database import repo
from database.connect import open_database, session
from database.migrate import applied, available, migrate, pending
from database.records import PredictionBatch, PredictionRecord, prediction_id_of

ROOT = Path(__file__).resolve().parents[3]
CLASSES = ("setosa", "versicolor", "virginica")


def stored_prediction(prediction_id: str) -> PredictionRecord:
    stored = repo.get_prediction(prediction_id)
    assert stored is not None, prediction_id
    return stored


@pytest.fixture
def database(empty_db_url):
    database = open_database(empty_db_url)
    migrate(database)
    with session():
        yield database
    database.close()


def record(request_id: str, label: str = "setosa", *, model: str = "iris", version: str = "1",
           transport: str = "grpc", latency_ms: float = 1.0, at: float | None = None) -> PredictionRecord:
    probabilities = {c: (0.9 if c == label else 0.05) for c in CLASSES}
    return PredictionRecord(
        prediction_id=prediction_id_of(request_id), request_id=request_id, model=model,
        model_version=version, features={"petal_width": 0.2, "sepal_length": 5.1}, label=label,
        probabilities=probabilities, transport=transport, latency_ms=latency_ms,
        created_at=time.time() if at is None else at)


def test_migrations_from_empty_create_everything_once(empty_db_url):
    database = open_database(empty_db_url)
    assert pending(database) == available() and available()
    assert migrate(database) == available()
    assert set(database.get_tables()) >= {"predictions", "feedback", "model_versions", "batch_runs"}
    assert migrate(database) == [] and pending(database) == []
    database.close()


def test_predmesh_migrate_command(empty_db_url):
    env = {"PREDMESH_DATABASE_URL": empty_db_url, "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "cli", "migrate"]
    first = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "applied m0001_initial" in first.stdout
    again = subprocess.run(run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "up to date" in again.stdout
    status = subprocess.run([*run, "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert "applied  m0001_initial" in status.stdout
    database = open_database(empty_db_url)
    assert applied(database) == available()
    database.close()


def test_migrate_status_exits_1_while_migrations_are_pending(empty_db_url):
    """`predmesh migrate status` exited 0 with every migration pending: 1 while any is (gateable in a deploy),
    0 once up to date."""
    env = {"PREDMESH_DATABASE_URL": empty_db_url, "PATH": "/usr/bin:/bin"}
    status = [sys.executable, "-m", "cli", "migrate", "status"]
    before = subprocess.run(status, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert before.returncode == 1, (before.stdout, before.stderr)
    assert "pending  m0001_initial" in before.stdout and "run `predmesh migrate`" in before.stderr
    migrated = subprocess.run(status[:-1], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    after = subprocess.run(status, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert after.returncode == 0 and "pending" not in after.stdout and "applied  m0001_initial" in after.stdout


def test_insert_is_idempotent_on_request_id(database, monkeypatch):
    from database.connect import is_postgres
    if is_postgres():  # rows offered again go through the staging table, not the row-by-row INSERT
        import psycopg2.extras
        monkeypatch.setattr(psycopg2.extras, "execute_values", lambda *a, **k: pytest.fail("COPY fell back"))
    first = record("order-1")
    repo.insert_predictions([first, record("order-2")])
    # a retried request (same request_id) and a replayed spool batch (same rows again) add nothing
    repo.insert_predictions([record("order-1", "virginica"), first, record("order-3")])
    assert repo.count_predictions() == 3
    # again on the same connection (its staging table exists and was emptied at commit), a row twice in one batch
    repo.insert_predictions([record("order-4"), record("order-2"), record("order-4")])
    assert repo.count_predictions() == 4
    assert stored_prediction(first.prediction_id).label == "setosa"
    stored = stored_prediction(first.prediction_id)
    assert stored.features == first.features and stored.probabilities == first.probabilities
    assert stored.created_at == pytest.approx(first.created_at, abs=1e-5)


def test_awkward_text_round_trips_exactly(database, monkeypatch):
    """The PostgreSQL bulk path (COPY text format) escapes what it must: tabs, newlines, backslashes (and its
    row templates survive % in keys)."""
    from database.connect import is_postgres
    if is_postgres():  # COPY must take these rows itself, not fall back to the row-by-row INSERT
        import psycopg2.extras
        monkeypatch.setattr(psycopg2.extras, "execute_values", lambda *a, **k: pytest.fail("COPY fell back"))
    awkward = record("a\tb\nc\\d\re \"q\" 'é' \\N", label="set\\osa\t")
    awkward = dataclasses.replace(awkward, features={"päd\t\"x\"\\": 1e-05, "n\nl": -2.5, "100%s %r": 3,
                                                        "tiny": 1.5e-300},
                                  probabilities={"set\\osa\t": 0.25, "b": 0.75}, latency_ms=1.25e-07)
    plain = record("plain")
    repo.insert_predictions([awkward, plain])
    stored = stored_prediction(awkward.prediction_id)
    assert (stored.request_id, stored.label) == (awkward.request_id, awkward.label)
    assert stored.features == awkward.features and stored.probabilities == awkward.probabilities
    assert stored.latency_ms == awkward.latency_ms
    assert stored_prediction(plain.prediction_id).request_id == "plain"


def bulk(prefix: str, n: int, classes=CLASSES, names=("sepal_length", "petal_width")) -> PredictionBatch:
    import numpy as np
    rng = np.random.default_rng(3)
    probabilities = rng.dirichlet(np.ones(len(classes)), n)
    probabilities[0] = [1e-300] + [(1 - 1e-300) / (len(classes) - 1)] * (len(classes) - 1)  # awkward floats too
    rids = [f"{prefix}{i}" for i in range(n)]
    return PredictionBatch(
        prediction_ids=[record(r).prediction_id for r in rids], request_ids=rids, model="iris",
        model_version="1", feature_names=tuple(names), features=rng.normal(size=(n, len(names))) * 1e3,
        classes=tuple(classes), labels=probabilities.argmax(axis=1), probabilities=probabilities,
        transport="batch", latency_ms=2.5, created_at=time.time())


def test_bulk_batches_are_copied_in_columns_and_stored_row_for_row(database, monkeypatch):
    from database.connect import is_postgres
    if is_postgres():  # COPY must take them, not the row-by-row INSERT
        import psycopg2.extras
        monkeypatch.setattr(psycopg2.extras, "execute_values", lambda *a, **k: pytest.fail("COPY fell back"))
    batch = bulk("bulk-", 300)
    odd = bulk("odd-", 3, classes=("100%s", "tab\t", "q\"u"), names=("päd\t\"x\"\\", "%r"))
    single = record("single")
    assert repo.insert_predictions([batch, single, odd]) == 304
    assert repo.count_predictions() == 304
    for expected in (batch.rows()[0], batch.rows()[-1], *odd.rows(), single):
        stored = stored_prediction(expected.prediction_id)
        assert dataclasses.replace(stored, created_at=expected.created_at) == expected
        assert stored.created_at == pytest.approx(expected.created_at, abs=1e-5)
    repo.insert_predictions([batch, bulk("bulk-", 310)])  # a rerun, and 10 more rows: only those are new
    assert repo.count_predictions() == 314


def test_list_pages_newest_first_with_filters(database):
    now = time.time()
    repo.insert_predictions([record(f"r{i}", CLASSES[i % 3], transport=("grpc", "rest")[i % 2],
                                    version=str(1 + i // 10), at=now - 100 + i) for i in range(20)])
    flt = repo.PredictionFilter()
    seen, token = [], ""
    while True:
        page, token = repo.list_predictions(flt, 7, token)
        seen += [p.record.request_id for p in page]
        if not token:
            break
    assert seen == [f"r{i}" for i in reversed(range(20))]
    rest_v2, _ = repo.list_predictions(repo.PredictionFilter(transport="rest", model_version="2"), 100)
    assert [p.record.request_id for p in rest_v2] == ["r19", "r17", "r15", "r13", "r11"]
    window, _ = repo.list_predictions(repo.PredictionFilter(label="versicolor", start=now - 95, end=now - 85), 100)
    assert [p.record.request_id for p in window] == ["r13", "r10", "r7"]
    by_id, _ = repo.list_predictions(repo.PredictionFilter(request_id="r1"), 100)
    assert [p.record.request_id for p in by_id] == ["r1"]  # exact: not r10..r19
    with pytest.raises(repo.InvalidPageToken):
        repo.list_predictions(flt, 5, "garbage")


def test_stats_counts_and_latency_percentiles(database):
    base = time.time() // 60 * 60 - 3600  # a whole minute: the aggregates count per minute
    repo.insert_predictions([record(f"r{i}", CLASSES[i % 3], transport=("grpc", "rest", "queue")[i % 3],
                                    version=str(1 + i % 2), latency_ms=float(i + 1), at=base + 20 * i)
                             for i in range(30)])
    stats = repo.stats(repo.PredictionFilter())
    assert stats.total == 30
    assert stats.by_label == {"setosa": 10, "versicolor": 10, "virginica": 10}
    assert stats.by_version == {"iris@1": 15, "iris@2": 15}
    assert stats.by_transport == {"grpc": 10, "rest": 10, "queue": 10}
    # latencies 1..30 ms: the linear-interpolation percentiles within the histogram's 5% (same on both databases)
    assert stats.latency_ms == pytest.approx((15.5, 28.55, 29.71), rel=0.05)
    windowed = repo.stats(repo.PredictionFilter(start=base, end=base + 180))  # rows 0..8: 3 whole minutes
    assert windowed.total == 9 and windowed.latency_ms[0] == pytest.approx(5.0, rel=0.05)
    # edges inside a minute are rounded out to the whole minutes, and the answer says so
    rounded = repo.stats(repo.PredictionFilter(start=base + 10, end=base + 170))
    assert (rounded.total, rounded.window_start, rounded.window_end) == (9, base, base + 180)
    assert repo.stats(repo.PredictionFilter(model="other")).total == 0


def test_feedback_changes_accuracy_as_expected(database):
    preds = [record(f"r{i}", label) for i, label in enumerate(["setosa", "setosa", "versicolor", "virginica"])]
    repo.insert_predictions(preds)
    assert repo.version_quality() == []
    for p in preds:
        repo.upsert_feedback(p.prediction_id, p.label, time.time())
    [q] = repo.version_quality()
    assert (q.feedback_count, q.accuracy, q.macro_precision, q.macro_recall) == (4, 1.0, 1.0, 1.0)
    # the second "setosa" prediction was really versicolor; the feedback overwrites, it does not add a row
    repo.upsert_feedback(preds[1].prediction_id, "versicolor", time.time())
    [q] = repo.version_quality()
    assert q.feedback_count == 4 and q.accuracy == 0.75
    # precision: setosa 1/2, versicolor 1/1, virginica 1/1; recall: setosa 1/1, versicolor 1/2, virginica 1/1
    assert q.macro_precision == pytest.approx((0.5 + 1 + 1) / 3)
    assert q.macro_recall == pytest.approx((1 + 0.5 + 1) / 3)
    [row] = [p for p in repo.list_predictions(repo.PredictionFilter(), 10)[0]
             if p.record.prediction_id == preds[1].prediction_id]
    assert row.feedback_label == "versicolor"


def test_model_activations(database):
    repo.record_activation("iris", "1", "ab" * 32, {"holdout_accuracy": 0.97}, time.time() - 60, time.time() - 30)
    repo.record_activation("iris", "2", "cd" * 32, {"holdout_accuracy": 0.98}, time.time() - 20, time.time() - 10)
    repo.record_activation("iris", "1", "ab" * 32, {"holdout_accuracy": 0.97}, time.time() - 60, time.time())
    versions = repo.model_versions("iris")
    assert [v.version for v in versions] == ["1", "2"]  # 1 activated again most recently
    assert versions[0].metrics == {"holdout_accuracy": 0.97}
