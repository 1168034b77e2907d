"""PostgreSQL: less work per stored prediction (issues #25, #26), converted in place, in this migration's
transaction:

1. predictions.features and predictions.probabilities become `json` (the JSON text as written, checked for
   syntax) instead of `jsonb` (parsed into a binary document per row on every insert): no SQL reads into them
   (they are only read back whole), so the binary form bought nothing but its parsing, ~10% of the backend's CPU
   per stored row. ALTER TYPE rewrites every partition and rebuilds its indexes, holding the table's lock (the
   writers wait; answered records wait in their spool, nothing is lost; reads wait too). A string holding NUL
   (\\u0000) or a lone surrogate, which jsonb refused and json takes, is refused by the writer before its COPY
   (database/copy_text.storable), so such a row is still quarantined alone.
2. prediction_keys' btree index on created_at (m0008, used only by retention to find the keys of removed days) is
   replaced by a BRIN index: keys are appended in created_at order, so a BRIN range summary serves retention's
   delete, while an insert costs a look at the range map instead of a btree descent and its WAL.

Measured cost: see docs/persistence.md "Partitions and retention" (bench/partition_bench.py lighter prints it per
million rows). SQLite stores JSON as text already (nothing to do).
"""
from __future__ import annotations

import logging
import time

from database import partitions
from database.connect import is_postgres

log = logging.getLogger(__name__)

COLUMNS = ("features", "probabilities")
OLD_KEYS_INDEX = f"{partitions.KEYS}_created"  # m0008's btree
KEYS_INDEX = "prediction_keys_created_brin"  # partitions.KEYS_INDEX (a migration keeps its own names)


def apply(database) -> None:
    if not is_postgres(database):
        return
    began = time.perf_counter()
    sql = database.execute_sql
    sql("SET LOCAL statement_timeout = 0")  # millions of rows take minutes
    binary = [name for name, kind in sql(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        "AND attname = ANY(%s) AND NOT attisdropped", (partitions.TABLE, list(COLUMNS))).fetchall()
        if kind == "jsonb"]
    if binary:
        sql(f"ALTER TABLE {partitions.TABLE} " + ", ".join(
            f"ALTER COLUMN {name} TYPE json USING {name}::json" for name in binary))
    rewritten = time.perf_counter()
    if sql("SELECT to_regclass(%s)", (partitions.KEYS,)).fetchone()[0]:
        sql(f"DROP INDEX IF EXISTS {OLD_KEYS_INDEX}")
        sql(f"CREATE INDEX IF NOT EXISTS {KEYS_INDEX} ON {partitions.KEYS} USING brin (created_at)")
    done = time.perf_counter()
    log.info("m0010: %s as json in %.1f s, prediction_keys' created_at index as BRIN in %.1f s",
             ", ".join(binary) or "nothing", rewritten - began, done - rewritten)
