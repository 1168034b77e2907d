"""PostgreSQL (partitioned layout, m0008): the writer claims the ids it stores in prediction_keys itself, in the
transaction that stores their rows, and the statement trigger that claimed them (prediction_keys_claim AFTER INSERT
ON predictions, with a transition table) is dropped with its function (issues #25, #26).

Why: PostgreSQL's COPY into a partitioned table inserts row by row, each with a WAL record of its own, while the
table has a statement trigger with a transition table (copyfrom.c: CIM_SINGLE); without one, it inserts a page of
rows at a time. The claims themselves were an INSERT ... SELECT from the transition table (row by row as well).
Now the writer COPYs the claims (prediction_id, created_at) into prediction_keys first and then the rows (a bulk
batch's in id order); a held id still raises unique_violation before any row is written, and the writer's staging
path claims with INSERT ... ON CONFLICT DO NOTHING and stores only the rows it claimed
(database.partitions.claim_and_insert), so an id is stored once as before. Measured: see docs/persistence.md
"Partitions and retention".

Dropping a trigger takes predictions' lock for a moment (a catalog change): taken with a 2-second lock timeout and
tried again (partitions.with_lock_timeout), so it never queues the writers for long. Safe to run again.

Servers of the previous release store through COPY without claiming after this: upgrade the servers with the
migration (docs/persistence.md). SQLite keeps its plain table (nothing to do).
"""
from __future__ import annotations

import logging

from database import partitions
from database.connect import is_postgres

log = logging.getLogger(__name__)

TRANSACTION = False  # each attempt at the lock is a transaction of its own (partitions.with_lock_timeout)
TABLE, TRIGGER = "predictions", "prediction_keys_claim"  # a migration keeps its own names
ATTEMPTS = 30  # of 2 s each (partitions.LOCK_TIMEOUT_MS): a minute of busy tables, then the migration fails


def apply(database) -> None:
    if not is_postgres(database) or not partitions.is_partitioned(database):
        return

    def drop() -> None:
        database.execute_sql(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {TABLE}")
        database.execute_sql(f"DROP FUNCTION IF EXISTS {TRIGGER}()")

    partitions.with_lock_timeout(database, "m0014: dropping the claim trigger", drop, attempts=ATTEMPTS)
    partitions.forget(database)
    log.info("m0014: the writer claims prediction ids in prediction_keys (trigger %s dropped)", TRIGGER)
