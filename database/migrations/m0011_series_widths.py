"""Aggregate rows of 5 and 30 minutes (issue #26): a GetStats series in 5- or 30-minute buckets (the dashboard's
1 h and 6 h charts, a 24 h panel in 5-minute buckets) read the minute rows of stats_rollup, one per minute and key,
each with its latency histogram unnested (24 h in 5-minute buckets: 16,671 rows, p99 983 ms at 20 M rows). The
writers now keep widths 300 and 1800 too (database/aggregates.WIDTHS); this migration builds them from the minute
rows already stored, in SQL, on both tables: a bucket's n is the sum of its minutes', its labels summed per label,
its histogram summed element-wise (as the readers add them), so the rows are those the writers would have made.

Idempotent: the 300- and 1800-second rows are deleted and rebuilt in the migration's transaction (m0005 of this
code already made them on a database migrated from before it; this rebuilds the same rows). PostgreSQL: both
tables are locked against writes (SHARE) meanwhile, so a writer still running cannot add to a minute the rebuild
has read; it waits for the commit. Measured cost (docs/persistence.md "Aggregates"): ~104 s wall per million
minute rows on a busy 2-core machine (a month of 12 keys holds ~0.5 M minute rows).
"""
from __future__ import annotations

import logging
import time

from database.connect import is_postgres

log = logging.getLogger(__name__)

MINUTE = 60
NEW_WIDTHS = (300, 1800)  # a migration keeps its own constants (aggregates.WIDTHS may change again)
KEY = "model, model_version, transport"
FEEDBACK_KEY = "model, model_version, predicted, actual"
WIDTH_ROWS = " UNION ALL ".join(f"SELECT {w} AS width" for w in NEW_WIDTHS)
# the start of the bucket holding a minute, floored (before 1970 too), as aggregates._levels computes it
BUCKET = "r.bucket_start - ((r.bucket_start {mod} w.width) + w.width) {mod} w.width"
HEAD = f"width, bucket_start, {KEY}"


def _postgres_rollup() -> str:
    """Labels and histograms unnested once per minute row (the histogram's non-zero elements only), then added up
    per bucket of each width; the array is rebuilt with its zeros as m0005's backfill does."""
    return f"""
        WITH w AS ({WIDTH_ROWS}),
        k AS (SELECT w.width, {BUCKET} AS bucket_start, r.model, r.model_version, r.transport, SUM(r.n)::bigint AS n
              FROM stats_rollup r CROSS JOIN w WHERE r.width = {MINUTE} GROUP BY 1, 2, 3, 4, 5),
        le AS (SELECT r.bucket_start, {KEY}, e.key, e.value::bigint AS n
               FROM stats_rollup r, jsonb_each_text(r.labels) AS e(key, value) WHERE r.width = {MINUTE}),
        l AS (SELECT width, bucket_start, {KEY}, jsonb_object_agg(key, n) AS labels
              FROM (SELECT w.width, {BUCKET} AS bucket_start, r.model, r.model_version, r.transport, r.key,
                           SUM(r.n)::bigint AS n
                    FROM le r CROSS JOIN w GROUP BY 1, 2, 3, 4, 5, 6) AS s
              GROUP BY 1, 2, 3, 4, 5),
        he AS (SELECT r.bucket_start, {KEY}, e.i - 1 AS idx, e.value AS n
               FROM stats_rollup r, unnest(r.hist) WITH ORDINALITY AS e(value, i)
               WHERE r.width = {MINUTE} AND e.value <> 0),
        hs AS (SELECT w.width, {BUCKET} AS bucket_start, r.model, r.model_version, r.transport, r.idx,
                      SUM(r.n)::bigint AS n
               FROM he r CROSS JOIN w GROUP BY 1, 2, 3, 4, 5, 6),
        g AS (SELECT *, lag(idx, 1, -1::bigint) OVER (PARTITION BY {HEAD} ORDER BY idx) AS prev FROM hs),
        h AS (SELECT {HEAD}, ('{{' || string_agg(repeat('0,', (idx - prev - 1)::int) || n, ',' ORDER BY idx)
                               || '}}')::bigint[] AS hist
              FROM g GROUP BY 1, 2, 3, 4, 5)
        INSERT INTO stats_rollup ({HEAD}, n, labels, hist)
        SELECT k.width, k.bucket_start, k.model, k.model_version, k.transport, k.n, l.labels, h.hist
        FROM k JOIN l USING ({HEAD}) JOIN h USING ({HEAD})"""


def _sqlite_rollup() -> str:
    """The histogram summed index by index over every element (zeros included, so the array stays dense) and
    rebuilt by a window aggregate, whose ORDER BY fixes the elements' order (SQLite 3.40 has no ORDER BY inside
    an aggregate call)."""
    return f"""
        WITH w AS ({WIDTH_ROWS}),
        m AS (SELECT w.width, {BUCKET} AS bucket_start, r.model, r.model_version, r.transport, r.n, r.labels,
                     r.hist
              FROM stats_rollup r CROSS JOIN w WHERE r.width = {MINUTE}),
        k AS (SELECT {HEAD}, SUM(n) AS n FROM m GROUP BY {HEAD}),
        l AS (SELECT {HEAD}, json_group_object(key, n) AS labels
              FROM (SELECT m.width, m.bucket_start, m.model, m.model_version, m.transport, e.key AS key,
                           SUM(e.value) AS n
                    FROM m, json_each(m.labels) AS e GROUP BY 1, 2, 3, 4, 5, 6)
              GROUP BY {HEAD}),
        hs AS (SELECT m.width, m.bucket_start, m.model, m.model_version, m.transport, e.key AS idx,
                      SUM(e.value) AS n
               FROM m, json_each(m.hist) AS e GROUP BY 1, 2, 3, 4, 5, 6),
        h AS (SELECT DISTINCT {HEAD}, json_group_array(n) OVER (
                  PARTITION BY {HEAD} ORDER BY idx ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS hist
              FROM hs)
        INSERT INTO stats_rollup ({HEAD}, n, labels, hist)
        SELECT k.width, k.bucket_start, k.model, k.model_version, k.transport, k.n, l.labels, h.hist
        FROM k JOIN l USING ({HEAD}) JOIN h USING ({HEAD})"""


FEEDBACK = f"""
    WITH w AS ({WIDTH_ROWS})
    INSERT INTO stats_feedback (width, bucket_start, {FEEDBACK_KEY}, n)
    SELECT w.width, {BUCKET}, r.model, r.model_version, r.predicted, r.actual, SUM(r.n)
    FROM stats_feedback r CROSS JOIN w WHERE r.width = {MINUTE} GROUP BY 1, 2, 3, 4, 5, 6"""


def apply(database) -> None:
    postgres = is_postgres(database)
    sql = database.execute_sql
    began = time.perf_counter()
    if postgres:
        sql("SET LOCAL statement_timeout = 0")  # a month of 12 keys: ~0.5 M minute rows
        sql("LOCK TABLE stats_rollup, stats_feedback IN SHARE MODE")  # writers wait for the commit
        # the join of the three grouped parts is estimated at a row or so (grouped estimates multiply down) and was
        # planned as a nested loop over the aggregates (cancelled after 13 min on 1 M rows' 316,598 minute rows);
        # without nested loops it is merge joins: 33 s
        sql("SET LOCAL enable_nestloop = off")
        sql("SET LOCAL jit = off")
    [(minutes,)] = sql(f"SELECT COUNT(*) FROM stats_rollup WHERE width = {MINUTE}").fetchall()
    widths = ", ".join(map(str, NEW_WIDTHS))
    for table in ("stats_rollup", "stats_feedback"):
        sql(f"DELETE FROM {table} WHERE width IN ({widths})")
    mod = "%%" if postgres else "%"  # psycopg2 takes a bare % for a parameter
    for statement in (_postgres_rollup() if postgres else _sqlite_rollup(), FEEDBACK):
        sql(statement.replace("{mod}", mod))
    log.info("m0011: 5- and 30-minute aggregates from %d minute rows in %.1f s", minutes,
             time.perf_counter() - began)
