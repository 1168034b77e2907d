"""SQL bounded in time: the statements of one block may take limit_s at most, and another thread may cancel them.

PostgreSQL: the block is one transaction with `SET LOCAL statement_timeout` (the server itself ends a statement
that runs past the limit, even if this process is gone), and cancel() sends the connection's cancel request (the
statement in flight ends at once). SQLite: a progress handler ends a statement once the limit has passed or
cancel() was called. Either way a statement started after the limit (or a cancel) is refused before it is sent,
and the block raises QueryTimeout, never a database outage.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from database.models import db

QUERY_CANCELED = "57014"  # SQLSTATE of a statement ended by statement_timeout or a cancel request
REFRESH_SLACK_S = 0.05  # refresh() sets the statement timeout again once a statement could overrun by more
SQLITE_PROGRESS_STEPS = 10_000  # SQLite VM instructions between two looks at the clock (a few hundred µs)
_local = threading.local()


class QueryTimeout(RuntimeError):
    """A bounded block's SQL ran out of time (its limit passed, or it was cancelled)."""

    def __init__(self, bound: QueryBound):
        self.bound = bound
        self.elapsed_s = time.monotonic() - bound.started
        why = "cancelled" if bound.cancelled else f"over its limit of {bound.limit_s * 1000:.0f} ms"
        super().__init__(f"query {why} after {self.elapsed_s * 1000:.0f} ms")


class QueryBound:
    """The time the SQL of one block may take, from open(); cancel() may come from any thread at any time."""

    def __init__(self, limit_s: float):
        self.limit_s = max(0.001, limit_s)
        self.started = time.monotonic()
        self.deadline = self.started + self.limit_s
        self.cancelled = False
        self._lock = threading.Lock()
        self._conn = None  # the driver connection while the block runs (PostgreSQL: the one cancel() stops)
        self._postgres = False
        self.timeout_set = self.started  # when set_timeout last ran

    @property
    def timeout_ms(self) -> int:
        """The statement timeout to set now: the time left, at least 1 ms (0 would mean none)."""
        return max(1, int((self.deadline - time.monotonic()) * 1000))

    def set_timeout(self) -> None:
        """PostgreSQL, in the block's transaction: the statements from now on may take the time left."""
        self.timeout_set = time.monotonic()
        db.execute_sql(f"SET LOCAL statement_timeout = {self.timeout_ms}")

    def expired(self) -> bool:
        return self.cancelled or time.monotonic() >= self.deadline

    def cancel(self) -> None:
        """End the statement in flight and refuse the next (a no-op once the block has ended)."""
        with self._lock:
            self.cancelled = True
            if self._conn is not None and self._postgres:
                try:
                    self._conn.cancel()
                except Exception:  # the connection is gone: nothing is running on it
                    pass

    def before_statement(self) -> None:
        if self.expired():
            raise QueryTimeout(self)

    def _open(self, postgres: bool) -> None:
        conn = db.connection()
        with self._lock:
            self._conn, self._postgres = conn, postgres
        if not postgres:
            conn.set_progress_handler(lambda: 1 if self.expired() else 0, SQLITE_PROGRESS_STEPS)

    def _close(self) -> None:
        with self._lock:  # after this, cancel() cannot reach the connection (it goes back to the pool)
            conn, self._conn = self._conn, None
        if conn is not None and not self._postgres:
            conn.set_progress_handler(None, 0)


def current() -> QueryBound | None:
    """The bound of this thread's open block, if any."""
    return getattr(_local, "bound", None)


class GuardedStatements:
    """Mixed into the Database classes: a statement of a bounded block whose time is up is not sent."""

    def execute_sql(self, sql, *args, **kwargs):
        bound = getattr(_local, "bound", None)
        if bound is not None:
            bound.before_statement()
        return super().execute_sql(sql, *args, **kwargs)  # type: ignore[misc]


def timed_out(exc: BaseException, bound: QueryBound) -> bool:
    """Whether exc is the end of a statement this bound stopped (or any statement after its time)."""
    if isinstance(exc, QueryTimeout) or bound.expired():
        return True
    return any(getattr(e, "pgcode", None) == QUERY_CANCELED for e in (exc, getattr(exc, "orig", None)))


@contextmanager
def bounded(limit_s: float, bound: QueryBound | None = None) -> Iterator[QueryBound]:
    """Run the block's SQL within limit_s (inside connect.session(), on its connection); QueryTimeout when it
    does not finish in time or is cancelled. PostgreSQL: the block is one transaction."""
    from database.connect import is_postgres
    bound = bound or QueryBound(limit_s)
    postgres = is_postgres()
    bound._open(postgres)
    _local.bound = bound
    try:
        with db.atomic() if postgres else nullcontext():
            if postgres:
                bound.set_timeout()
            yield bound
    except Exception as exc:
        if timed_out(exc, bound):
            raise QueryTimeout(bound) from exc
        raise
    finally:
        _local.bound = None
        bound._close()


def sleep(seconds: float) -> bool:
    """Make the database itself slow for `seconds` inside the open bounded block (the fault point
    analytics.query_delay_ms): PostgreSQL pg_sleep, SQLite a counting query. Returns False (a cut-short wait raises
    QueryTimeout from the block instead)."""
    from database.connect import is_postgres
    if is_postgres():
        db.execute_sql("SELECT pg_sleep(%s) /* predmesh fault analytics.query_delay_ms */", (seconds,))
    else:
        db.execute_sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                       "SELECT count(*) FROM n", (int(seconds * 5_000_000),))
    return False


def refresh() -> None:
    """Give the next statements of this thread's open block the time it has left (PostgreSQL: SET LOCAL
    statement_timeout again, once more than REFRESH_SLACK_S has passed since it was set: a statement started now
    could otherwise run that much past the block's deadline). For a block of several statements; a no-op outside
    a bounded block and on SQLite (its progress handler looks at the deadline itself)."""
    bound = current()
    if bound is not None and bound._postgres and time.monotonic() - bound.timeout_set > REFRESH_SLACK_S:
        bound.set_timeout()
