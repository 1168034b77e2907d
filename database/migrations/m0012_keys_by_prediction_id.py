"""PostgreSQL (partitioned layout, m0008): one random btree less per stored row (issues #25, #26). prediction_id is
uuid5(PREDICTION_NAMESPACE, request_id) (database.records.prediction_id_of), so the two are one to one and a single
unique index can hold both: prediction_keys is keyed by prediction_id instead of request_id, and predictions' own
primary key (prediction_id, created_at), whose random keys cost a btree descent per row, is dropped.

- prediction_keys (prediction_id PRIMARY KEY, created_at; the BRIN on created_at of m0010 stays): its request_id
  column goes (nothing reads it any more: a request_id is looked up as its prediction_id, computed in Python); the
  trigger's function claims (prediction_id, created_at), and a held id raises unique_violation as before;
- predictions has no primary key: prediction_id stays unique through its claim, request_id with it; a lookup by id
  reads the claim first, whose created_at prunes the probe of predictions to one partition and its
  predictions_page (created_at, prediction_id) index (database/partitions.by_id).

Converted in place. On a filled table the new unique index on prediction_keys (prediction_id) is built with CREATE
INDEX CONCURRENTLY (rows keep being stored and read meanwhile), so this migration runs outside a transaction
(TRANSACTION = False, as m0006); an index a failed build left INVALID is dropped and built again, a build that
deadlocks with an older transaction is tried again. Then one short transaction, taking predictions' and
prediction_keys' locks with a lock timeout (tried again: it never queues the writers for long), makes that index
the primary key, drops the old one, the request_id column and predictions' primary key (catalog changes and file
unlinks), and replaces the trigger's function. An empty table (a new database) takes it all in that transaction.
Safe to run again after an interruption. A prediction_id held twice (a row stored with an id that is not its
request_id's uuid5: never written by predmesh) fails the build with unique_violation, naming the id.

Measured cost: see docs/persistence.md "Partitions and retention" (bench/partition_bench.py keys prints it per
million rows). SQLite keeps its plain table (nothing to do).
"""
from __future__ import annotations

import logging
import time

import peewee

from database import partitions
from database.connect import is_postgres

log = logging.getLogger(__name__)

TRANSACTION = False  # database.migrate runs apply() outside a transaction and records it after
TABLE, KEYS = "predictions", "prediction_keys"  # a migration keeps its own names
NEW_INDEX = "prediction_keys_prediction_id"  # built concurrently, then made the primary key (renamed to KEYS_PKEY)
KEYS_PKEY = "prediction_keys_pkey"
DEADLOCK, ATTEMPTS = "40P01", 3
SWAP_ATTEMPTS = 30  # of 2 s each (partitions.LOCK_TIMEOUT_MS): a minute of busy tables, then the migration fails
CLAIM_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION prediction_keys_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- an id held already (by any partition's row) raises unique_violation, as the old UNIQUE (request_id) did
    INSERT INTO prediction_keys (prediction_id, created_at) SELECT prediction_id, created_at FROM inserted;
    RETURN NULL;
END $$;
"""


def apply(database) -> None:
    if not is_postgres(database) or not partitions.is_partitioned(database) or _converted(database):
        return
    sql = database.execute_sql
    began = time.perf_counter()
    filled = bool(sql(f"SELECT EXISTS (SELECT 1 FROM {KEYS})").fetchone()[0])
    if filled:
        sql("SET statement_timeout = 0")  # an index over millions of keys takes a while
        try:
            _build_concurrently(database)
        finally:
            sql("RESET statement_timeout")
    built = time.perf_counter()

    def swap() -> None:
        # predictions first, as an insert takes them (its trigger then writes prediction_keys): no deadlock
        sql(f"LOCK TABLE {TABLE}, {KEYS} IN ACCESS EXCLUSIVE MODE")
        sql(f"CREATE UNIQUE INDEX IF NOT EXISTS {NEW_INDEX} ON {KEYS} (prediction_id)")  # empty: built here
        for table in (TABLE, KEYS):
            for (name,) in sql("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'",
                               (table,)).fetchall():
                sql(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        sql(f"ALTER TABLE {KEYS} ADD CONSTRAINT {KEYS_PKEY} PRIMARY KEY USING INDEX {NEW_INDEX}")
        sql(f"ALTER TABLE {KEYS} DROP COLUMN IF EXISTS request_id")
        sql(CLAIM_FUNCTION_SQL)

    partitions.with_lock_timeout(database, "m0012: keying prediction_keys by prediction_id", swap,
                                 attempts=SWAP_ATTEMPTS)
    partitions.forget(database)
    log.info("m0012: prediction_keys keyed by prediction_id (index %.1f s), predictions' primary key dropped "
             "(%.1f s)", built - began, time.perf_counter() - built)


def _converted(database) -> bool:
    """True when prediction_keys has no request_id column any more (the swap ran: it is one transaction)."""
    return not database.execute_sql(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'request_id' AND NOT attisdropped",
        (KEYS,)).fetchone()


def _build_concurrently(database) -> None:
    sql = database.execute_sql
    for attempt in range(1, ATTEMPTS + 1):
        _drop_invalid(database)  # a concurrent build that failed before left its index INVALID
        try:
            sql(f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {NEW_INDEX} ON {KEYS} (prediction_id)")
            return
        except peewee.OperationalError as exc:
            # a concurrent build waits for every older transaction: one that waits for this migrator (a server of
            # the previous release taking the migration lock in a transaction) deadlocks it
            if getattr(getattr(exc, "orig", None), "pgcode", None) != DEADLOCK or attempt == ATTEMPTS:
                raise
            log.warning("m0012: the index build deadlocked with another transaction (attempt %d of %d); building "
                        "it again", attempt, ATTEMPTS)


def _drop_invalid(database) -> None:
    if database.execute_sql("SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(%s) AND NOT indisvalid",
                            (NEW_INDEX,)).fetchone():
        log.warning("index %s is invalid (an interrupted build): dropping it to build it again", NEW_INDEX)
        database.execute_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {NEW_INDEX}")
