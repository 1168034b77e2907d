"""Aggregate tables for GetStats, its series and the quality gauges (database/aggregates.py): counts per label
with a latency histogram, and feedback confusion counts, per minute, hour and day bucket, backfilled from the rows
already stored (PostgreSQL: in SQL, two INSERT ... SELECT; SQLite: one pass in Python, a day of rows at a time)."""
from __future__ import annotations

import logging
import time

from database import aggregates
from database.connect import is_postgres
from database.models import db

log = logging.getLogger(__name__)

_COLUMNS = {  # PostgreSQL, SQLite
    "stats_rollup": ("model TEXT NOT NULL, model_version TEXT NOT NULL, transport TEXT NOT NULL, n BIGINT NOT NULL, "
                     "labels {json} NOT NULL, hist {array} NOT NULL"),
    "stats_feedback": ("model TEXT NOT NULL, model_version TEXT NOT NULL, predicted TEXT NOT NULL, "
                       "actual TEXT NOT NULL, n BIGINT NOT NULL"),
}
_KEYS = {
    "stats_rollup": "model, model_version, transport",
    "stats_feedback": "model, model_version, predicted, actual",
}


def apply(database) -> None:
    postgres = is_postgres(database)
    suffix = "" if postgres else " WITHOUT ROWID"
    for table, columns in _COLUMNS.items():
        columns = columns.format(json="JSONB" if postgres else "TEXT", array="BIGINT[]" if postgres else "TEXT")
        database.execute_sql(
            f"CREATE TABLE {table} (width INTEGER NOT NULL, bucket_start BIGINT NOT NULL, {columns}, "
            f"PRIMARY KEY (width, bucket_start, {_KEYS[table]})){suffix}")
    bound = db.obj
    db.initialize(database)  # the aggregates module writes through the models' proxy
    try:
        began = time.perf_counter()
        rows = aggregates.backfill()
        log.info("m0005: aggregated %d stored predictions in %.1f s", rows, time.perf_counter() - began)
    finally:
        db.initialize(bound)
