"""Persistence of one server process: the prediction log, analytics, activation records (PersistenceSettings)."""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from database import partitions, repo, retention
from database.connect import (
    DatabaseUnavailable,
    database_identity,
    describe_identity,
    open_database,
    redact,
    session,
)
from database.migrate import SchemaNotCurrent, migrate, migration_lock, require_current
from inference.models.manifest import Manifest
from inference.recording.prediction_log import PredictionLog
from inference.recording.recorder import NullRecorder, Recorder
from inference.recording.spool import Spool, SpoolBoundElsewhere, bind
from inference.recording.statistics import PlannerStatistics
from inference.settings import PersistenceSettings

log = logging.getLogger(__name__)


class PersistenceMetrics:
    """Spool, database-writer and feedback-quality metrics; labels are bounded (model, version)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        self.spool_bytes = Gauge("predmesh_spool_bytes", "Prediction records in the spool not yet in the database, "
                                 "in bytes", registry=registry, multiprocess_mode="livesum")
        self.spool_age = Gauge("predmesh_spool_oldest_seconds", "How long the spool has held records not yet in "
                               "the database (0: caught up)", registry=registry, multiprocess_mode="livemax")
        self.queue_depth = Gauge("predmesh_prediction_queue", "Prediction records held in memory for the "
                                 "database writer (async: queued; durable: in the spool and not yet inserted)",
                                 registry=registry, multiprocess_mode="livesum")
        self.db_write_failures = Counter("predmesh_db_write_failures_total", "Prediction batches the database "
                                         "did not take (they were spooled)", registry=registry)
        self.rows_written = Counter("predmesh_prediction_rows_written_total", "Prediction rows written to the "
                                    "database (a replayed duplicate counts, the database ignores it)",
                                    registry=registry)
        self.database_up = Gauge("predmesh_database_up", "1 while the database takes records; 0 while it cannot "
                                 "be reached (answered records wait in the spool and are stored once it returns)",
                                 registry=registry, multiprocess_mode="livemin")
        self.rows_quarantined = Counter("predmesh_db_rows_quarantined_total", "Prediction rows the database "
                                        "refused (kept in the spool's quarantine directory, not stored)",
                                        registry=registry)
        labels = ["model", "version"]
        self.accuracy = Gauge("predmesh_feedback_accuracy", "Accuracy from feedback", labels, registry=registry,
                              multiprocess_mode="mostrecent")
        self.macro_precision = Gauge("predmesh_feedback_macro_precision", "Macro precision from feedback", labels,
                                     registry=registry, multiprocess_mode="mostrecent")
        self.macro_recall = Gauge("predmesh_feedback_macro_recall", "Macro recall from feedback", labels,
                                  registry=registry, multiprocess_mode="mostrecent")
        # Not *_count: that suffix belongs to histograms and summaries (promtool check metrics refuses it).
        self.feedback_count = Gauge("predmesh_feedback_predictions", "Predictions with feedback", labels,
                                    registry=registry, multiprocess_mode="mostrecent")

        self.idempotency_conflicts = Counter(
            "predmesh_idempotency_conflicts_total", "Answered rows not stored because their request_id was stored "
            "already for a different request (answered while the database could not be asked, or vouched new)",
            registry=registry)
        self.batch_run = Gauge("predmesh_batch_run_last_timestamp_seconds", "When a batch run (RecordBatchRun) of "
                               "this kind and model last ended in this status (running: last update), Unix time",
                               ["kind", "model", "status"], registry=registry, multiprocess_mode="max")
        self._batch_seen: dict[tuple[str, str, str], float] = {}

    def batch_run_seen(self, run) -> None:
        """A recorded batch run: the newest time per (kind, model, status) is what the nightly alerts read."""
        key, stamp = (run.kind, run.model, run.status), run.updated_at or time.time()
        if stamp > self._batch_seen.get(key, 0.0):
            self._batch_seen[key] = stamp
            self.batch_run.labels(*key).set(stamp)

    def quality(self, q) -> None:
        self.accuracy.labels(q.model, q.model_version).set(q.accuracy)
        self.macro_precision.labels(q.model, q.model_version).set(q.macro_precision)
        self.macro_recall.labels(q.model, q.model_version).set(q.macro_recall)
        self.feedback_count.labels(q.model, q.model_version).set(q.feedback_count)


class QualityRefresher:
    """A daemon thread that sets this process's quality gauges from the database every interval seconds, so every
    replica (and every process of one) exports the fleet's accuracy, whichever replica stored the feedback: the
    counts are kept by the writers of feedback (database.aggregates.record_feedback), a refresh reads a few rows
    per model version. An outage is logged once and skipped (the gauges keep their last value)."""

    def __init__(self, servicer, interval: float):
        self.servicer = servicer
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="quality-refresh", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()

    def refresh(self) -> None:
        try:
            self.servicer.refresh_versions()
            if not getattr(self.servicer, "batch_runs_loaded", True):  # the start-up load missed (database down)
                self.servicer.refresh_batch_runs()
        except Exception as exc:  # never let the thread die: the next refresh may succeed
            if not self._failing:
                log.warning("feedback quality gauges not refreshed (%s): keeping the last values until the "
                            "database answers", exc)
            self._failing = True
            return
        if self._failing:
            log.info("feedback quality gauges refreshed again")
        self._failing = False


def insert_records(records, conflicts: list[str] | None = None) -> None:
    with session():
        repo.insert_predictions(records, conflicts)


def stored_answers(request_ids: list[str], prediction_ids: Sequence[str] | None = None) -> dict:
    """The stored answers of idempotency keys (raises DatabaseUnavailable when the database cannot say)."""
    with session():
        return repo.answered(request_ids, prediction_ids)


class Persistence:
    """The database, the recorder and the analytics servicer of one server process."""

    def __init__(self, settings: PersistenceSettings, registry: CollectorRegistry = REGISTRY):
        self.settings = settings
        self.metrics = PersistenceMetrics(registry)
        self.quality: QualityRefresher | None = None
        self.forget: Callable[[list[str]], None] | None = None  # the keys' cache (attach): drops unstored answers
        self.database = open_database(settings.database_url)
        self.schema_ready = self._prepare_schema(at_start=True)
        self.metrics.database_up.set(1 if self.schema_ready else 0)
        if settings.mode != "off" and self.schema_ready:
            self._bind_spool()  # SpoolBoundElsewhere: refuse to start rather than replay into another database
        if settings.mode == "off":
            self.recorder: Recorder = NullRecorder()
        else:
            spool = Spool.claim(settings.spool_dir, settings.spool_max_bytes)
            self.recorder = PredictionLog(
                spool, self.insert_records, durable=settings.mode == "durable", metrics=self.metrics,
                batch_size=settings.write_batch, flush_interval_s=settings.flush_ms / 1000,
                writers=settings.db_writers, stop_drain_s=settings.spool_drain_seconds,
                prepare=None if self.schema_ready else self._prepare_later,
                statistics=PlannerStatistics(settings.analyze_share))
        log.info("persistence: %s to %s (spool %s, limit %d MB)", settings.mode, redact(settings.database_url),
                 settings.spool_dir, settings.spool_max_bytes // (1024 * 1024))
        self._stopping = threading.Event()
        self._maintenance = threading.Thread(target=self._maintain, name="db-maintenance", daemon=True)
        self._maintenance.start()

    def _maintain(self) -> None:
        """Every maintenance interval: create the prediction partitions ahead and, with
        PREDMESH_RETENTION_DAYS, remove older predictions (database.retention; one process at a time). A failure
        costs a warning: the DEFAULT partition takes rows meanwhile, the next run tries again. The first run is
        right away only with retention on: the partitions ahead were made by _prepare_schema already."""
        delay = 0.0 if self.settings.retention_days > 0 else self.settings.maintenance_interval_s
        while not self._stopping.wait(delay):
            delay = self.settings.maintenance_interval_s
            try:
                with session():
                    log.info("%s", retention.run(self.database, self.settings.retention_days).summary())
            except Exception as exc:
                log.warning("database maintenance (partitions ahead, retention) failed: %s; next try in %.0f s",
                            exc, self.settings.maintenance_interval_s)

    def insert_records(self, records) -> None:
        """The writer's insert; a key found stored for another request (answered while the database could not be
        asked, see inference/scoring/idempotency.py) is counted and logged: the first answer stays the stored one."""
        conflicts: list[str] = []
        insert_records(records, conflicts)
        if conflicts:
            self.metrics.idempotency_conflicts.inc(len(conflicts))
            if self.forget is not None:
                self.forget(conflicts)  # their cached answers are not the stored ones
            log.warning("%d answered rows not stored: their request_id was stored already for a different request "
                        "(answered while the database could not be asked, or vouched new); first keys: %s",
                        len(conflicts), ", ".join(repr(k) for k in conflicts[:10]))

    def _prepare_schema(self, at_start: bool) -> bool:
        """Migrate (or check) the schema; False when the database is unreachable now (the writer retries)."""
        try:
            with migration_lock(self.database), session():
                if self.settings.auto_migrate:
                    applied = migrate(self.database)
                    if applied:
                        log.info("applied migrations %s", ", ".join(applied))
                else:
                    require_current(self.database)
                try:  # partitions for today and the days ahead, before the first insert (PostgreSQL)
                    partitions.ensure_partitions(self.database)
                except DatabaseUnavailable:
                    raise
                except Exception as exc:  # e.g. a lock not had in time: the DEFAULT partition takes rows meanwhile
                    log.warning("prediction partitions not created at start (%s); the maintenance tries again", exc)
            return True
        except DatabaseUnavailable as exc:
            if not at_start:
                raise
            # Serving (health SERVING) is right: an answer is only given once its record is in the spool (durable:
            # on disk), so nothing answered is lost; the spool's limit still refuses answers it cannot hold.
            if self.settings.mode == "off":
                log.warning("database %s unreachable at start (%s): serving; analytics answer UNAVAILABLE until "
                            "it returns (predmesh_database_up 0)", redact(self.settings.database_url), exc)
            else:
                log.warning("database %s unreachable at start (%s): serving; every answered prediction is kept in "
                            "the spool %s (up to %d MB) until the database returns, then stored in order "
                            "(predmesh_database_up 0 until then)", redact(self.settings.database_url), exc,
                            self.settings.spool_dir, self.settings.spool_max_bytes // (1024 * 1024))
            return False

    def _prepare_later(self) -> None:
        """Before the first write when the database was unreachable at start: schema, then the spool's binding (a
        spool bound to another database is never replayed: the writer keeps failing, with the reason, instead)."""
        try:
            self._prepare_schema(at_start=False)
            self._bind_spool()
        except (SchemaNotCurrent, SpoolBoundElsewhere) as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    def _bind_spool(self) -> None:
        with session():
            identity = database_identity(self.database)
        bind(self.settings.spool_dir, identity, describe_identity)

    def attach(self, server) -> None:
        """Register AnalyticsService and the model-activation hook on an InferenceServer (before start)."""
        from inference.rpc.analytics import ANALYTICS_SERVICE, AnalyticsServicer
        from predmesh.v1 import analytics_pb2_grpc

        servicer = AnalyticsServicer(self.metrics, server.auth, self.settings.batch_run_stale_s,
                                     self.settings.analytics_max_s)
        server.add_service(lambda s: analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(servicer, s),
                           ANALYTICS_SERVICE)
        server.registry.on_activate = self.record_activation
        if self.settings.mode != "off":  # answers are stored: a key's stored answer is looked up there
            server.keys.lookup = stored_answers
            self.forget = server.keys.forget
        from inference.process.fleet import FleetState
        server.registry.fleet = FleetState(server.registry, self.settings.desired_state_poll_seconds,
                                           f"{socket.gethostname()}/{server.settings.grpc_addr}")
        servicer.refresh_quality()
        self.quality = QualityRefresher(servicer, self.settings.quality_refresh_seconds)
        self.quality.start()

    def record_activation(self, manifest: Manifest) -> None:
        """Store that a version started serving; a database outage only costs a warning."""
        try:
            with session():
                repo.record_activation(manifest.name, manifest.version, manifest.sha256, dict(manifest.metrics),
                                       manifest.created_at.timestamp(), time.time())
        except Exception as exc:
            log.warning("model %s: activation of version %s not recorded: %s", manifest.name, manifest.version,
                        exc)

    def close(self) -> None:
        if self.quality is not None:
            self.quality.stop()
        self._stopping.set()
        self.recorder.close()
