"""predictions gets an index for no filter, for a model and for a model version, each followed by (created_at,
prediction_id), the order and the key of its keyset paging, so a page at any depth of those filters (the
dashboard's and the SDK's usual ones), with or without a time window, is one index seek; request_id keeps an index
of its own. The two indexes they supersede (created_at; model, model_version, created_at) are dropped, so the
storing path maintains one index more than before, not four: a label or transport filter (or a version without a
model) pages along the unfiltered index, one seek plus the rows it skips (cheap for common values, a scan for a
rare one; an index each cost about 125 bytes a row and up to a third of the insert rate, measured).

PostgreSQL: on a table with rows every index is built with CREATE INDEX CONCURRENTLY (predictions keep being
stored and read meanwhile), so this migration runs outside a transaction (TRANSACTION = False; the runner holds
its advisory lock for the session, and other migrators wait for it without holding a snapshot). An index a failed
concurrent build left INVALID is dropped and built again; a build that deadlocks with an older transaction is
tried again. An empty table (a new database) takes plain CREATE INDEX in one transaction. Measured cost: see
bench/README.md (analytics_bench.py prints it per million rows).
"""
from __future__ import annotations

import logging
import time

import peewee

from database.connect import is_postgres

log = logging.getLogger(__name__)

TRANSACTION = False  # database.migrate runs apply() outside a transaction and records it after
TABLE = "predictions"
PAGE = ("created_at", "prediction_id")  # the keyset of ListPredictions, newest first
INDEXES = {
    "predictions_page": (),
    "predictions_model_page": ("model",),
    "predictions_model_version_page": ("model", "model_version"),
}
REQUEST_ID_INDEX = "predictions_request_id_lookup"  # only made when no index starts with request_id
DEADLOCK, ATTEMPTS = "40P01", 3
SUPERSEDED = ("prediction_created_at", "prediction_model_model_version_created_at")  # names m0001 gave them


def statements(concurrently: bool, request_id_indexed: bool) -> list[str]:
    """The DDL, in order: new indexes first (reads keep an index throughout), then the superseded ones dropped."""
    how = "CONCURRENTLY " if concurrently else ""
    out = [f"CREATE INDEX {how}IF NOT EXISTS {name} ON {TABLE} ({', '.join((*prefix, *PAGE))})"
           for name, prefix in INDEXES.items()]
    if not request_id_indexed:
        out.append(f"CREATE INDEX {how}IF NOT EXISTS {REQUEST_ID_INDEX} ON {TABLE} (request_id)")
    out += [f"DROP INDEX {how}IF EXISTS {name}" for name in SUPERSEDED]
    return out


def apply(database) -> None:
    if not is_postgres(database):
        indexed = any(_first_column_sqlite(database, row[1]) == "request_id"
                      for row in database.execute_sql(f"PRAGMA index_list({TABLE})").fetchall())
        with database.atomic():
            for sql in statements(False, indexed):
                database.execute_sql(sql)
        return
    indexed = bool(database.execute_sql(
        "SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        "WHERE i.indrelid = to_regclass(%s) AND a.attname = 'request_id' AND i.indisvalid",
        (TABLE,)).fetchone())
    has_rows = bool(database.execute_sql(f"SELECT EXISTS (SELECT 1 FROM {TABLE})").fetchone()[0])
    if not has_rows:
        with database.atomic():
            for sql in statements(False, indexed):
                database.execute_sql(sql)
        return
    database.execute_sql("SET statement_timeout = 0")  # an index over millions of rows takes minutes
    try:
        _drop_invalid(database)  # a concurrent build that failed before left its index INVALID
        for sql in statements(True, indexed):
            started = time.monotonic()
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    database.execute_sql(sql)
                    break
                except peewee.OperationalError as exc:
                    # a concurrent build waits for every older transaction: one that waits for this migrator
                    # (a server of the previous release taking the migration lock in a transaction) deadlocks it
                    if getattr(getattr(exc, "orig", None), "pgcode", None) != DEADLOCK or attempt == ATTEMPTS:
                        raise
                    log.warning("%s: deadlock with another transaction (attempt %d of %d); building it again",
                                sql, attempt, ATTEMPTS)
                    _drop_invalid(database)
            log.info("%s: %.1f s", sql, time.monotonic() - started)
    finally:
        database.execute_sql("RESET statement_timeout")


def _drop_invalid(database) -> None:
    for name in (*INDEXES, REQUEST_ID_INDEX):
        invalid = database.execute_sql(
            "SELECT 1 FROM pg_index WHERE indexrelid = to_regclass(%s) AND NOT indisvalid", (name,)).fetchone()
        if invalid:
            log.warning("index %s is invalid (an interrupted build): dropping it to build it again", name)
            database.execute_sql(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def _first_column_sqlite(database, index: str) -> str:
    columns = database.execute_sql(f"PRAGMA index_info('{index}')").fetchall()  # (seqno, cid, name) in key order
    return columns[0][2] if columns else ""
