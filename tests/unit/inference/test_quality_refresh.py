"""The quality refresher (inference/process/persistence.py): every process sets its feedback gauges from the
counts the database keeps, whoever stored the feedback; an outage is logged once and the gauges keep their values."""
from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry

from database import repo
from database.connect import DatabaseUnavailable, open_database, session
from database.migrate import migrate
from database.records import PredictionRecord
from inference.process.persistence import PersistenceMetrics, QualityRefresher
from inference.rpc.analytics import AnalyticsServicer
from inference.rpc.auth import TokenAuth

CLASSES = ("setosa", "versicolor", "virginica")


def accuracy(registry: CollectorRegistry, version: str = "1") -> float | None:
    return registry.get_sample_value("predmesh_feedback_accuracy", {"model": "iris", "version": version})


def stored(n: int) -> list[PredictionRecord]:
    return [PredictionRecord(prediction_id=f"p{i}", request_id=f"r{i}", model="iris", model_version="1",
                             features={"x": 1.0}, label="setosa",
                             probabilities={c: (0.8 if c == "setosa" else 0.1) for c in CLASSES}, transport="grpc",
                             latency_ms=1.0, created_at=time.time()) for i in range(n)]


def test_a_refresh_exports_feedback_another_replica_stored(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'fleet.db'}")
    migrate(database)
    registry = CollectorRegistry()
    refresher = QualityRefresher(AnalyticsServicer(PersistenceMetrics(registry), TokenAuth(None, open_writes=True)),
                                 interval=60)
    with session():
        repo.insert_predictions(stored(4))
        # another replica stores feedback (its own process, its own gauges): this one has handled no call
        repo.upsert_feedback_many({"p0": "setosa", "p1": "setosa", "p2": "setosa", "p3": "virginica"}, time.time())
    assert accuracy(registry) is None
    refresher.refresh()
    assert accuracy(registry) == 0.75
    assert registry.get_sample_value("predmesh_feedback_predictions", {"model": "iris", "version": "1"}) == 4
    with session():
        repo.upsert_feedback_many({"p3": "setosa"}, time.time())  # an overwrite elsewhere
    refresher.refresh()
    assert accuracy(registry) == 1.0
    database.close()


class Failing:
    def __init__(self):
        self.fail = True

    def refresh_versions(self) -> int:
        if self.fail:
            raise RuntimeError("the database is down")
        return 1


def test_an_outage_is_logged_once_and_the_refresh_resumes(caplog):
    servicer = Failing()
    refresher = QualityRefresher(servicer, interval=60)
    with caplog.at_level(logging.INFO, logger="inference.process.persistence"):
        for _ in range(3):
            refresher.refresh()
        assert caplog.text.count("feedback quality gauges not refreshed (the database is down)") == 1
        servicer.fail = False
        refresher.refresh()
    assert "feedback quality gauges refreshed again" in caplog.text


def test_the_thread_refreshes_every_interval_until_stopped():
    calls: list[float] = []

    class Counting:
        def refresh_versions(self) -> int:
            calls.append(time.monotonic())
            return 0

    refresher = QualityRefresher(Counting(), interval=0.05)
    refresher.start()
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    refresher.stop()
    assert len(calls) >= 3
    settled = len(calls)
    time.sleep(0.2)
    assert len(calls) <= settled + 1  # at most one refresh already under way when stop() came


def test_batch_run_gauges_missed_at_start_are_loaded_by_the_refresher(tmp_path, monkeypatch):
    """A replica started while the database was down exported no predmesh_batch_run_last_timestamp_seconds, and the
    start-up load was never retried: on the private mesh, a replica restarted during an outage held none and the
    other an older success, so the fleet's "last successful nightly" stayed 25 minutes stale."""
    database = open_database(f"sqlite:///{tmp_path / 'fleet.db'}")
    migrate(database)
    with session():
        repo.record_batch_run(repo.PipelineRun(run_key="nightly/iris/2026-12-05", kind="nightly", model="iris",
                                               status="succeeded", started_at=1.7e9), now=1.7e9 + 60)
    registry = CollectorRegistry()
    servicer = AnalyticsServicer(PersistenceMetrics(registry), TokenAuth(None, open_writes=True))
    refresher = QualityRefresher(servicer, interval=60)
    real = repo.list_batch_runs

    def down(*args, **kwargs):
        raise DatabaseUnavailable("the database is down")

    monkeypatch.setattr(repo, "list_batch_runs", down)
    servicer.refresh_quality()  # at start, during the outage
    labels = {"kind": "nightly", "model": "iris", "status": "succeeded"}
    assert registry.get_sample_value("predmesh_batch_run_last_timestamp_seconds", labels) is None
    monkeypatch.setattr(repo, "list_batch_runs", real)  # the database is back
    refresher.refresh()
    assert registry.get_sample_value("predmesh_batch_run_last_timestamp_seconds", labels) == 1.7e9 + 60
    database.close()
