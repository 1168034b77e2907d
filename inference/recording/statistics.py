"""The writer's part in the planner's statistics: after enough stored rows, a background check (and, when due, an
ANALYZE: database.statistics) that never holds up a store."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from database.connect import DatabaseUnavailable, RejectedData, session
from database.statistics import analyze_if_due

log = logging.getLogger(__name__)


# ANALYZE takes at most this share of the time: after one that took d seconds, the next look waits (1/share - 1)·d.
# A bulk load keeps the table due (1,000 + 10% of it changes within a second or two): without this, one ANALYZE
# (~0.5 s at a million rows) followed another, ~40% of the database's CPU for the load (measured, a 200,000-row
# batch file); with it a table of a million rows is analyzed every ~25 s while the load lasts (autovacuum looks
# once a minute), and a small table's ANALYZE takes milliseconds, so it is not held back.
TIME_SHARE = 0.02


class PlannerStatistics:
    """stored(n) after each stored batch; once check_rows rows and check_interval_s have passed since the last
    look, one thread asks the database whether the rows changed since its last ANALYZE exceed `share` of the table
    and runs it when they do (asking once more settle_s later when not). At most one look at a time, and ANALYZE
    within time_share of the time (a look due sooner waits in its thread: the rows stored meanwhile are counted by
    the database, so the last rows of a load are analyzed too); a failure costs a log line and is retried later."""

    def __init__(self, share: float, *, check_rows: int = 1000, check_interval_s: float = 1.0,
                 analyze: Callable[[float], bool] | None = None, time_share: float = TIME_SHARE):
        self.share = share
        self._check_rows = check_rows
        self._check_interval = check_interval_s
        self.settle_s = 2.0
        self._analyze = analyze or self._analyze_in_session
        self._lock = threading.Lock()
        self._rows = 0
        self._last_check = 0.0
        self._running: threading.Thread | None = None
        self._time_share = time_share
        self.not_before = 0.0  # time.monotonic() before which no look starts (the time share)
        self.analyzed = 0  # how many ANALYZE ran (tests, logs)

    def stored(self, rows: int) -> None:
        if not self.share:
            return
        now = time.monotonic()
        with self._lock:
            self._rows += rows
            if (self._rows < self._check_rows or now - self._last_check < self._check_interval
                    or self._running is not None):
                return
            self._rows, self._last_check = 0, now
            self._running = thread = threading.Thread(target=self._check, name="planner-statistics", daemon=True)
        thread.start()

    def _check(self) -> None:
        try:
            wait = self.not_before - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            # the database counts a commit's rows a moment after it (PostgreSQL flushes a connection's counts at
            # most once a second): not due now may be due once the last batch of a bulk load is counted
            for attempt in range(2):
                started = time.monotonic()
                if self._analyze(self.share):
                    self.analyzed += 1
                    took = time.monotonic() - started
                    self.not_before = time.monotonic() + took * (1 / self._time_share - 1)
                    break
                if attempt == 0:
                    time.sleep(self.settle_s)
        except (DatabaseUnavailable, RejectedData) as exc:
            log.warning("planner statistics not refreshed: %s", exc)
        finally:
            with self._lock:
                self._running = None

    @staticmethod
    def _analyze_in_session(share: float) -> bool:
        with session():
            return analyze_if_due(share)

    def join(self, timeout: float = 10.0) -> None:
        """Wait for a look in progress (tests, shutdown)."""
        thread = self._running
        if thread is not None:
            thread.join(timeout)
