"""Listing every stored prediction page by page reads each row about once on PostgreSQL: a page after a token is an
index range scan that starts at the token, not a scan of every newer row filtered out again (which made listing N
rows cost O(N^2 / page) and `predmesh batch score --wait-stored` crawl at a million rows)."""
from __future__ import annotations

import json
import time

import pytest

from database import repo
from database.connect import open_database, session
from database.migrate import migrate
from tests.integration.postgres.test_database import record
from tests.support.pg import TempSchema, statements

pytestmark = pytest.mark.postgres
ROWS, PAGE = 4000, 100


def rows_read(plan: dict) -> int:
    """Rows the plan's scans of predictions produced or filtered out (EXPLAIN ANALYZE)."""
    own = 0
    if plan.get("Relation Name", "").startswith("predictions"):  # its partitions (m0008)
        own = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)
    return own + sum(rows_read(child) for child in plan.get("Plans", []))


def test_a_deep_page_reads_about_a_page_of_rows():
    with TempSchema() as schema:
        database = open_database(schema.url)
        migrate(database)
        try:
            with session():
                now = time.time()
                # batch rows share their timestamps in blocks, as a PredictBatch call's rows do
                for start in range(0, ROWS, 500):
                    repo.insert_predictions([record(f"batch-x-{i}", transport="batch", at=now - ROWS + i // 50)
                                             for i in range(start, start + 500)])
                database.execute_sql("ANALYZE predictions")
                flt = repo.PredictionFilter(model="iris", transport="batch", start=now - 2 * ROWS)
                token, seen, pages, middle = "", 0, 0, -1
                while True:
                    pages += 1
                    with statements(database) as sent:
                        rows, token_after = repo.list_predictions(flt, PAGE, token)
                    if pages == ROWS // PAGE // 2:  # the middle: half of the rows are newer than the token
                        middle = 0
                        for sql, params in sent:  # each statement the page ran (partitioned: one or more)
                            [(raw,)] = database.execute_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}",
                                                            params).fetchall()
                            middle += rows_read((raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"])
                    seen += len(rows)
                    token = token_after
                    if not token:
                        break
            assert seen == ROWS
            assert 0 < middle <= 3 * PAGE, f"a page in the middle read {middle} rows of predictions for {PAGE}"
        finally:
            database.close()
