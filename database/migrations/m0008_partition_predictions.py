"""PostgreSQL: predictions becomes range-partitioned by created_at, one partition per UTC day plus a DEFAULT one
(database/partitions.py), converted in place, in this migration's transaction:

1. feedback's foreign key to predictions is dropped (a key to a partitioned table would need the partition key,
   and would stop a partition from being dropped); the old table is renamed out of the way with its indexes;
2. the partitioned table is created with the same columns, a partition for each day that has rows and for the
   days around today, and the DEFAULT partition; every row is copied in (one INSERT ... SELECT, routed to its
   day), then the primary key (prediction_id, created_at) and the m0006 page indexes are built on the filled
   partitions (cheaper than maintaining them row by row);
3. prediction_keys (request_id PRIMARY KEY, prediction_id, created_at; an index on created_at for retention)
   is filled from the same rows and from then on by a statement-level trigger on predictions: request_id stays
   unique across partitions;
4. the old table is dropped and both tables analyzed (when rows were copied).

The table is locked for the whole migration (a server's writer waits; answered records wait in its spool, nothing
is lost). Measured cost: see docs/persistence.md "Partitions and retention" (bench/partition_bench.py prints it
per million rows). SQLite keeps its plain table (nothing to do).
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from database import partitions
from database.connect import is_postgres
from database.migrations.m0006_prediction_filter_indexes import INDEXES, PAGE

log = logging.getLogger(__name__)

OLD = "predictions_unpartitioned"
# the claim of m0008's layout: by request_id (m0012 keys prediction_keys by prediction_id and replaces the function)
KEYS_TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION prediction_keys_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- a key held already (by any prediction) raises unique_violation, as the old UNIQUE (request_id) did
    INSERT INTO prediction_keys (request_id, prediction_id, created_at)
        SELECT request_id, prediction_id, created_at FROM inserted;
    RETURN NULL;
END $$;
CREATE TRIGGER prediction_keys_claim AFTER INSERT ON predictions REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION prediction_keys_claim();
"""


def apply(database) -> None:
    if not is_postgres(database) or partitions.is_partitioned(database):
        return
    began = time.perf_counter()
    sql = database.execute_sql
    table, keys = partitions.TABLE, partitions.KEYS
    sql("SET LOCAL statement_timeout = 0")  # millions of rows take minutes
    sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    for referencing, name in sql("SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'f' "
                                 "AND confrelid = to_regclass(%s)", (table,)).fetchall():
        sql(f'ALTER TABLE {referencing} DROP CONSTRAINT "{name}"')
    sql(f"ALTER TABLE {table} RENAME TO {OLD}")
    indexes = sql("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = to_regclass(%s)",
                  (OLD,)).fetchall()
    for i, (index,) in enumerate(indexes):  # index names are per schema: the new table takes the same ones
        sql(f'ALTER INDEX "{index}" RENAME TO {OLD}_{i}')
    sql(f"CREATE TABLE {table} (LIKE {OLD} INCLUDING DEFAULTS) PARTITION BY RANGE (created_at)")
    sql(f"CREATE TABLE {partitions.DEFAULT} PARTITION OF {table} DEFAULT")
    days = {row[0] for row in sql(f"SELECT DISTINCT created_at::date FROM {OLD}").fetchall()}
    first = partitions.today()
    days |= {first + timedelta(days=d) for d in range(-partitions.DAYS_BEHIND, partitions.DAYS_AHEAD + 1)}
    for day in sorted(days):
        partitions.create_partition(database, day)
    rows = sql(f"INSERT INTO {table} SELECT * FROM {OLD}").rowcount
    copied = time.perf_counter()
    sql(f"ALTER TABLE {table} ADD PRIMARY KEY (prediction_id, created_at)")
    for name, prefix in INDEXES.items():
        sql(f"CREATE INDEX {name} ON {table} ({', '.join((*prefix, *PAGE))})")
    indexed = time.perf_counter()
    sql(f"CREATE TABLE {keys} (request_id TEXT NOT NULL, prediction_id VARCHAR(36) NOT NULL, "
        "created_at TIMESTAMP NOT NULL)")
    sql(f"INSERT INTO {keys} SELECT request_id, prediction_id, created_at FROM {OLD}")
    sql(f"ALTER TABLE {keys} ADD PRIMARY KEY (request_id)")
    sql(f"CREATE INDEX {keys}_created ON {keys} (created_at)")
    sql(KEYS_TRIGGER_SQL)
    sql(f"DROP TABLE {OLD}")
    if rows:  # the planner's statistics of what was copied (an empty table is left to the writer's, as before)
        sql(f"ANALYZE {table}")
        sql(f"ANALYZE {keys}")
    partitions.forget(database)
    done = time.perf_counter()
    log.info("m0008: %d rows into %d daily partitions in %.1f s (copy %.1f s, primary key and indexes %.1f s, "
             "keys %.1f s)", rows, len(days), done - began, copied - began, indexed - copied, done - indexed)
