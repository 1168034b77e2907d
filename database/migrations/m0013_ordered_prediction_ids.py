"""Ordered prediction ids (database.records.prediction_id_of): a request id ending in a number (a batch row's
<prefix><row>) gets a version-8 id whose last hex digits are that number, so a batch's keys land side by side in
prediction_keys' primary key instead of at a random place each. Rows stored before keep their ids (an id is the
caller's handle: feedback and GetPrediction name it), so such a request id may be held under its uuid5 id.

PostgreSQL: when the database holds predictions already, this records until when uuid5 ids of such request ids can
have been stored, in prediction_id_legacy: now + 1 day (servers of the previous release still running through a
rolling upgrade keep writing them). While prediction_keys holds a row created before then, a lookup by request id
(partitions.stored_by_key, ListPredictions' request_id filter) probes a key's uuid5 id too, in the same query;
once retention has dropped those rows, partitions.legacy_until deletes the record and the second probe stops. A new
database records nothing: no second probe ever. SQLite finds request ids by its request_id column: nothing to do.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from database.connect import is_postgres

TABLE = "prediction_id_legacy"  # partitions.LEGACY (a migration keeps its own names)
MARGIN = timedelta(days=1)


def apply(database) -> None:
    if not is_postgres(database):
        return
    sql = database.execute_sql
    sql(f"CREATE TABLE IF NOT EXISTS {TABLE} (until TIMESTAMP NOT NULL)")
    if sql("SELECT 1 FROM predictions LIMIT 1").fetchone() and not sql(f"SELECT 1 FROM {TABLE}").fetchone():
        sql(f"INSERT INTO {TABLE} (until) VALUES (%s)", ((datetime.now(UTC) + MARGIN).replace(tzinfo=None),))
