"""Retention of the raw prediction rows (PREDMESH_RETENTION_DAYS; 0 keeps everything): `predmesh retention` and
the server's periodic maintenance run it. The aggregates (database/aggregates.py) are never touched: GetStats
answers the same for a window whose raw rows are gone.

The boundary is the UTC midnight `days` days before now: every prediction created before it goes, nothing
created at or after it is touched.
- PostgreSQL (partitioned, m0008): each daily partition wholly before the boundary is DROPPED (not deleted row by
  row): first its feedback is deleted (no lock beyond the rows'), then, in a short transaction that takes the
  parent's lock with a lock timeout (tried again when it expires, so it never queues inserts for long), the
  feedback recorded meanwhile is deleted and the partition dropped. Rows of the DEFAULT partition before the
  boundary (a replay of old records, a clock far off) are deleted with their feedback. Then prediction_keys
  loses the keys before the boundary (in chunks, found by its BRIN index on created_at), so a key's row and its
  claim go together.
- SQLite (and an unpartitioned PostgreSQL table): rows before the boundary are DELETEd in chunks, their feedback
  with them (ON DELETE CASCADE).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from peewee import Database

from database import partitions
from database.connect import advisory_lock, is_postgres

log = logging.getLogger(__name__)

CHUNK = 20_000  # rows (or keys) deleted per statement, so no transaction of the job grows large
RUN_LOCK = partitions.MAINTENANCE_LOCK + 1  # pg advisory lock (session): one retention run per schema at a time


@dataclass
class RetentionReport:
    """What one run removed (boundary: the UTC midnight before which predictions were removed; None: kept all)."""

    boundary: datetime | None = None
    dropped: list[str] = field(default_factory=list)  # partitions dropped
    rows: int = 0  # prediction rows removed (dropped partitions' and deleted ones)
    feedback: int = 0
    keys: int = 0
    created: list[str] = field(default_factory=list)  # partitions created ahead
    skipped: list[str] = field(default_factory=list)  # partitions left for the next run (their lock not had)
    busy: bool = False  # another retention run held the lock: this one did nothing

    def summary(self) -> str:
        if self.busy:
            return "retention: another run is in progress; nothing done"
        if self.boundary is None:
            return "retention: off (PREDMESH_RETENTION_DAYS=0 keeps every prediction)" + (
                f"; created partitions {', '.join(self.created)}" if self.created else "")
        before = self.boundary.isoformat(" ", "minutes")  # year 1 as 0001 (strftime's %Y gives "1")
        parts = [f"retention: predictions before {before} UTC removed: {self.rows} rows"]
        if self.dropped:
            parts.append(f"dropped partitions {', '.join(self.dropped)}")
        parts.append(f"{self.feedback} feedback rows, {self.keys} idempotency keys")
        if self.created:
            parts.append(f"created partitions {', '.join(self.created)}")
        if self.skipped:
            parts.append(f"left for the next run (lock not available): {', '.join(self.skipped)}")
        return "; ".join(parts)


EARLIEST = datetime(1, 1, 1, tzinfo=UTC).replace(tzinfo=None)  # the boundary of a retention longer than the calendar


def boundary_of(days: int, now: float | None = None) -> datetime:
    """The UTC midnight `days` days before now (naive UTC, as the columns hold it); EARLIEST (nothing is older)
    when that is before year 1: PREDMESH_RETENTION_DAYS=99999999 means "keep everything stored", not a traceback."""
    try:
        moment = datetime.fromtimestamp(time.time() if now is None else now, UTC) - timedelta(days=days)
    except OverflowError:
        return EARLIEST
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC).replace(tzinfo=None)


def run(database: Database, days: int, now: float | None = None) -> RetentionReport:
    """Create the partitions ahead (PostgreSQL) and, when days > 0, remove predictions created before
    boundary_of(days, now). Safe while predictions are stored; one run at a time (PostgreSQL)."""
    report = RetentionReport()
    postgres = is_postgres(database)
    if postgres and not advisory_lock(database, "pg_try_advisory_lock", RUN_LOCK):
        report.busy = True
        return report
    try:
        if postgres:  # a day's feedback or keys may take longer than the connection's statement timeout
            database.execute_sql("SET statement_timeout = 0")
        report.created = partitions.ensure_partitions(database, now)
        if days > 0:
            report.boundary = boundary_of(days, now)
            if partitions.is_partitioned(database):
                _drop_partitions(database, report)
            else:
                _delete_rows(database, report, postgres)
    finally:
        if postgres:
            database.execute_sql("RESET statement_timeout")
            advisory_lock(database, "pg_advisory_unlock", RUN_LOCK)
    return report  # its summary is the caller's to tell: `predmesh retention` prints it, the server logs it


def _drop_partitions(database: Database, report: RetentionReport) -> None:
    sql = database.execute_sql
    boundary = report.boundary
    assert boundary is not None
    keys_before = boundary
    for name, (lower, upper) in sorted(partitions.partitions(database).items()):
        if upper is None or lower is None or upper > boundary:
            continue
        if not _drop_partition(database, name, lower, upper, report):
            report.skipped.append(name)
            keys_before = min(keys_before, lower)  # its rows stay: so do their keys
    with database.atomic():  # the DEFAULT partition's rows before the boundary (and their feedback)
        report.feedback += sql(f"DELETE FROM feedback WHERE prediction_id IN (SELECT prediction_id FROM "
                               f"{partitions.DEFAULT} WHERE created_at < %s)", (boundary,)).rowcount
        report.rows += sql(f"DELETE FROM {partitions.DEFAULT} WHERE created_at < %s", (boundary,)).rowcount
    # the keys of what was removed, found by the BRIN index on created_at (m0010): its ranges filled since the
    # last run are summarized first (autovacuum would, where it runs), so the deletes below skip the newer ranges
    if sql("SELECT to_regclass(%s)", (partitions.KEYS_INDEX,)).fetchone()[0]:
        sql("SELECT brin_summarize_new_values(%s::regclass)", (partitions.KEYS_INDEX,))
    while True:
        with database.atomic():
            gone = sql(f"DELETE FROM {partitions.KEYS} WHERE prediction_id IN (SELECT prediction_id FROM "
                       f"{partitions.KEYS} WHERE created_at < %s LIMIT {CHUNK})", (keys_before,)).rowcount
        report.keys += gone
        if gone < CHUNK:
            break


def _drop_partition(database: Database, name: str, lower: datetime, upper: datetime,
                    report: RetentionReport) -> bool:
    """Drop one partition (of [lower, upper)) and the feedback of its predictions; False when its lock was not
    had in time."""
    sql = database.execute_sql
    with database.atomic():  # the bulk of its feedback, without any table lock
        mark = sql("SELECT COALESCE(MAX(id), 0) FROM feedback").fetchone()[0]
        total = sql(f"SELECT COUNT(*) FROM {name}").fetchone()[0]  # counted outside the lock (for the log)
        feedback = sql(f"DELETE FROM feedback WHERE prediction_id IN (SELECT prediction_id FROM {name})").rowcount

    def drop() -> int:
        # the parent first (every query takes it before its partitions: no deadlock), then the feedback recorded
        # since the bulk delete
        sql(f"LOCK TABLE ONLY {partitions.TABLE} IN ACCESS EXCLUSIVE MODE")
        # (found through prediction_keys' primary key: predictions has none since m0012)
        late = sql(f"DELETE FROM feedback f WHERE f.id > %s AND EXISTS (SELECT 1 FROM {partitions.KEYS} k "
                   "WHERE k.prediction_id = f.prediction_id AND k.created_at >= %s AND k.created_at < %s)",
                   (mark, lower, upper)).rowcount
        sql(f"DROP TABLE {name}")
        return late

    try:
        late = partitions.with_lock_timeout(database, f"dropping {name}", drop)
    except Exception as exc:
        if getattr(getattr(exc, "orig", None), "pgcode", None) in ("55P03", "40P01"):
            log.warning("retention: %s not dropped (its lock was not available in time); the next run drops it",
                        name)
            report.feedback += feedback
            return False
        raise
    report.feedback += feedback + late
    report.rows += total
    report.dropped.append(name)
    log.info("retention: dropped partition %s (%d rows, %d feedback)", name, total, feedback + late)
    return True


def _delete_rows(database: Database, report: RetentionReport, postgres: bool) -> None:
    """SQLite (or PostgreSQL before m0008): delete rows before the boundary in chunks; feedback cascades (SQLite:
    foreign_keys is on; PostgreSQL: ON DELETE CASCADE)."""
    boundary = report.boundary
    assert boundary is not None
    mark = "%s" if postgres else "?"
    value = boundary if postgres else str(boundary)
    while True:
        with database.atomic():
            report.feedback += database.execute_sql(
                f"DELETE FROM feedback WHERE prediction_id IN (SELECT prediction_id FROM predictions "
                f"WHERE created_at < {mark} ORDER BY created_at LIMIT {CHUNK})", (value,)).rowcount
            gone = database.execute_sql(
                f"DELETE FROM predictions WHERE prediction_id IN (SELECT prediction_id FROM predictions "
                f"WHERE created_at < {mark} ORDER BY created_at LIMIT {CHUNK})", (value,)).rowcount
        report.rows += gone
        if gone < CHUNK:
            break
