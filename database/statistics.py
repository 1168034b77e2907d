"""The planner's statistics of the predictions table kept fresh by predmesh itself, for databases where autovacuum
does not (it is off, or lags behind a bulk load): without them PostgreSQL plans a query over millions of rows as if
the table were empty (a sequential scan where an index answers in milliseconds)."""
from __future__ import annotations

import logging
import time

from database.connect import is_postgres
from database.models import Prediction, db

log = logging.getLogger(__name__)
MIN_CHANGED = 1000  # like autovacuum_analyze_threshold: a small table is not analyzed after every few rows
ANALYZE_TIMEOUT_MS = 300_000  # a statistics sample reads at most 30,000 rows' pages; this is a generous bound


def changed_since_analyze() -> tuple[int, float]:
    """(rows inserted, updated or deleted since the last ANALYZE, the table's rows as the planner knows them); a
    partitioned table (m0008) counts its partitions' (ANALYZE of the table analyzes each of them too)."""
    name = Prediction._meta.table_name
    row = db.execute_sql(
        "SELECT COALESCE(SUM(s.n_mod_since_analyze), 0), COALESCE(SUM(GREATEST(c.reltuples, 0)), 0) "
        "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid WHERE c.relkind <> 'p' AND (s.relid = "
        "to_regclass(%s) OR s.relid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass(%s)))",
        (name, name)).fetchone()
    return int(row[0]), float(row[1])


def analyze_if_due(share: float, minimum: int = MIN_CHANGED) -> bool:
    """PostgreSQL (inside connect.session()): ANALYZE predictions when the rows changed since its last analysis
    exceed minimum + share × its rows, autovacuum's own rule; True when it ran. SQLite: nothing (its planner does
    not depend on statistics for these queries)."""
    if not share or not is_postgres():
        return False
    changed, rows = changed_since_analyze()
    if changed <= minimum + share * rows:
        return False
    started = time.monotonic()
    with db.atomic():
        db.execute_sql(f"SET LOCAL statement_timeout = {ANALYZE_TIMEOUT_MS}")
        db.execute_sql(f"ANALYZE {Prediction._meta.table_name}")
    log.info("planner statistics of %s refreshed (%d rows changed of ~%.0f) in %.2f s", Prediction._meta.table_name,
             changed, rows, time.monotonic() - started)
    return True
