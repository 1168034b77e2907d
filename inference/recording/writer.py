"""Storing batches of prediction records in the database: the insert, the bisection that sends each row the
database refuses to the spool's quarantine, the database's health (whether and when to try again), and the
planner's statistics (statistics.py: ANALYZE when enough rows changed, in the background)."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from database.connect import DatabaseUnavailable, RejectedData
from database.records import Stored, as_rows, row_count
from inference.recording.documents import to_doc
from inference.recording.spool import Spool
from inference.recording.statistics import PlannerStatistics

log = logging.getLogger(__name__)


class DatabaseWriter:
    """Stores batches through `insert` (prepare, when given, runs once before the first insert). Its health, ok
    and the time of the next try after a failure, is updated by whichever writer thread stores."""

    def __init__(self, spool: Spool, insert: Callable[[Sequence[Stored]], object], *, metrics=None,
                 retry_interval_s: float = 1.0, prepare: Callable[[], None] | None = None,
                 statistics: PlannerStatistics | None = None):
        self._spool = spool
        self._insert = insert
        self._metrics = metrics
        self._retry_interval = retry_interval_s
        self._prepare = prepare
        self._statistics = statistics  # told of every stored batch: refreshes the planner's statistics when due
        self.ok = True  # the last store reached the database
        self._next_try = 0.0

    @property
    def preparing(self) -> bool:
        """Whether prepare has still to run: until then, one store at a time."""
        return self._prepare is not None

    def may_try(self) -> bool:
        """Whether to offer the database a batch now: it is up, or the retry interval after a failure has passed."""
        return self.ok or time.monotonic() >= self._next_try

    def probe_due(self) -> bool:
        """Whether prepare is still pending and its retry time has come (the writer probes while idle)."""
        return self._prepare is not None and time.monotonic() >= self._next_try

    def probe(self) -> None:
        """The database was unreachable at start and nothing waits to be written: prepare it now (schema, spool
        binding), so its state shows (predmesh_database_up) and it is ready before the first record, not at it."""
        assert self._prepare is not None
        try:
            self._prepare()
        except DatabaseUnavailable:
            self._next_try = time.monotonic() + self._retry_interval
            if self._metrics:
                self._metrics.database_up.set(0)
            return
        self._prepare = None
        log.info("database reachable: spooled records are stored from now on")
        if self._metrics:
            self._metrics.database_up.set(1)

    def store(self, batch: list[Stored]) -> bool:
        """Insert a batch; False when the database is unavailable (the caller keeps the records)."""
        try:
            if self._prepare is not None:
                self._prepare()
                self._prepare = None
            self._insert(batch)
        except DatabaseUnavailable as exc:
            self._failed(exc)
            return False
        except RejectedData as exc:
            try:
                quarantined = self._isolate(batch, exc)
            except DatabaseUnavailable as exc2:  # the stored parts are stored; the batch is retried (idempotent)
                self._failed(exc2)
                return False
            self._recovered(row_count(batch) - quarantined)
            return True
        self._recovered(row_count(batch))
        return True

    def _isolate(self, batch: Sequence[Stored], exc: Exception) -> int:
        """Some row is refused by the database itself: bisect the batch (its bulk batches split into rows) so every
        other row is stored and each refused row goes to the spool's quarantine alone (counted); returns how many
        were quarantined."""
        rows = as_rows(batch)
        if len(rows) == 1:
            log.error("prediction %s (request %.64s) refused by the database (%s): quarantined",
                      rows[0].prediction_id, rows[0].request_id, exc)
            self._spool.quarantine_record(to_doc(rows[0]), str(exc))
            if self._metrics:
                self._metrics.rows_quarantined.inc()
            return 1
        half = len(rows) // 2
        quarantined = 0
        for part in (rows[:half], rows[half:]):
            try:
                self._insert(part)
            except RejectedData as inner:
                quarantined += self._isolate(part, inner)
        return quarantined

    def _failed(self, exc: Exception) -> None:
        if self.ok:
            log.warning("database write failed (%s): spooling predictions, retrying every %.1f s", exc,
                        self._retry_interval)
        self.ok = False
        self._next_try = time.monotonic() + self._retry_interval
        if self._metrics:
            self._metrics.db_write_failures.inc()
            self._metrics.database_up.set(0)

    def _recovered(self, n: int) -> None:
        if not self.ok:
            log.info("database writes succeed again: replaying the spool")
        self.ok = True
        if self._metrics:
            self._metrics.rows_written.inc(n)
            self._metrics.database_up.set(1)
        if self._statistics is not None:
            self._statistics.stored(n)
