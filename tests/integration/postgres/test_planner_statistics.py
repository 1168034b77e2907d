"""The planner's statistics of predictions do not depend on someone running ANALYZE (this machine's PostgreSQL
runs with autovacuum off): the server's writer analyzes the table once enough rows changed, and the rule is
autovacuum's (1,000 rows + a share of the table)."""
from __future__ import annotations

import psycopg2
import pytest

from database import repo
from database.connect import open_database, session
from database.migrate import migrate
from database.statistics import analyze_if_due
from predmesh import Client
from tests.conftest import IRIS_ROW
from tests.integration.postgres.test_database import bulk
from tests.support.pg import TempSchema
from tests.support.procs import ServerProc, wait_for


def analyzed(schema: TempSchema) -> tuple[object, object, float]:
    """(last_analyze, last_autoanalyze, reltuples) of the schema's predictions table."""
    with psycopg2.connect(schema.base_url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT s.last_analyze, s.last_autoanalyze, c.reltuples FROM pg_stat_user_tables s "
                    "JOIN pg_class c ON c.oid = s.relid WHERE s.schemaname = %s AND s.relname = 'predictions'",
                    (schema.name,))
        row = cur.fetchone()
        assert row is not None  # the table exists once the server has migrated
        return row[0], row[1], row[2]


@pytest.fixture
def schema():
    with TempSchema() as s:
        yield s


def test_the_server_analyzes_predictions_after_a_bulk_load(model_store, tmp_path, schema):
    env = {"PREDMESH_DATABASE_URL": schema.url, "PREDMESH_PERSISTENCE": "async"}
    with ServerProc(model_store, tmp_path / "server.log", env=env) as proc, Client(proc.target) as client:
        for start in range(0, 3000, 1000):
            client.predict_batch("iris", [(IRIS_ROW, f"r{start + i}") for i in range(1000)])
        wait_for(lambda: analyzed(schema)[0] is not None, 20, what="ANALYZE predictions by the server")
        _, auto, rows = analyzed(schema)
        assert auto is None  # not autovacuum's doing
        assert rows >= 1000  # the planner now knows the table is not empty
        # the writer logs after its ANALYZE commits, so the log line may trail the statistics view a little
        wait_for(lambda: "planner statistics of predictions refreshed" in proc.log_path.read_text(), 10,
                 what="the server's log of its ANALYZE")


def test_analyze_runs_when_changes_exceed_the_share(schema):
    database = open_database(schema.url)
    try:
        with session():
            migrate(database)
            repo.insert_predictions([bulk("a", 3000)])
        with session():  # the counts reach the statistics views within a second or so of the commit
            wait_for(lambda: analyze_if_due(0.1), 5, what="3,000 new rows analyzed")
            assert not analyze_if_due(0.1)  # nothing changed since
        with session():
            repo.insert_predictions([bulk("b", 1200)])  # 1,200 <= 1,000 + 10% of 3,000: not yet
        with session():
            wait_for(lambda: analyzed(schema)[2] == 3000, 1, what="reltuples")
            assert not analyze_if_due(0.1)
            repo.insert_predictions([bulk("c", 200)])  # 1,400 > 1,300
        with session():
            wait_for(lambda: analyze_if_due(0.1), 5, what="1,400 changed rows analyzed")
        assert analyzed(schema)[2] == 4400
        with session():
            assert not analyze_if_due(0.0)  # 0: off
    finally:
        database.close()
