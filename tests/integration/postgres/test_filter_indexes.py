"""m0006_prediction_filter_indexes on a database that already holds predictions (PostgreSQL: built CONCURRENTLY,
outside a transaction; SQLite: in one), and keyset paging through each filter over those indexes."""
from __future__ import annotations

import time

import pytest

from database import repo
from database.connect import RejectedData, open_database, session
from database.migrate import applied, migrate
from database.migrations.m0006_prediction_filter_indexes import INDEXES, SUPERSEDED
from tests.integration.postgres.test_database import record


def index_names(database, url: str) -> set[str]:
    if url.startswith("sqlite"):
        return {row[1] for row in database.execute_sql("PRAGMA index_list(predictions)").fetchall()}
    return {row[0] for row in database.execute_sql(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass('predictions') AND i.indisvalid").fetchall()}


def test_indexes_built_on_a_filled_table_and_every_filter_pages_in_order(empty_db_url):
    database = open_database(empty_db_url)
    now = time.time()
    rows = [record(f"r{i}", ("setosa", "versicolor", "virginica")[i % 3], model=("iris", "wine")[i % 2],
                   version=str(1 + i % 4), transport=("grpc", "rest", "queue", "batch")[i % 4],
                   at=now - i // 3)  # three rows per second: ties on created_at, ordered by prediction_id
            for i in range(300)]
    try:
        migrate(database, stop_before="m0006")  # the database as the previous release left it, with rows
        with session():
            repo.insert_predictions(rows)
        assert "m0006_prediction_filter_indexes" in migrate(database)
        assert "m0006_prediction_filter_indexes" in applied(database)
        with session():
            names = index_names(database, empty_db_url)
            assert set(INDEXES) <= names and not set(SUPERSEDED) & names
            newest_first = sorted(rows, key=lambda r: (r.created_at, r.prediction_id), reverse=True)
            for flt in (repo.PredictionFilter(), repo.PredictionFilter(model="wine"),
                        repo.PredictionFilter(model="iris", model_version="3"),
                        repo.PredictionFilter(model_version="2"),
                        repo.PredictionFilter(label="virginica"), repo.PredictionFilter(transport="queue"),
                        repo.PredictionFilter(transport="rest", start=now - 60, end=now - 10)):
                seen, token = [], ""
                while True:
                    page, token = repo.list_predictions(flt, 7, token)
                    seen += [p.record.request_id for p in page]
                    if not token:
                        break
                expected = [r.request_id for r in newest_first
                            if flt.model in ("", r.model) and flt.model_version in ("", r.model_version)
                            and flt.label in ("", r.label) and flt.transport in ("", r.transport)
                            and (flt.start is None or r.created_at >= flt.start)
                            and (flt.end is None or r.created_at < flt.end)]
                assert seen == expected, flt
    finally:
        database.close()


def test_a_concurrent_build_left_invalid_is_built_again(empty_db_url):
    if empty_db_url.startswith("sqlite"):
        return  # SQLite builds in a transaction: nothing is left half made
    database = open_database(empty_db_url)
    try:
        with session():  # the unpartitioned layout m0006 builds on
            migrate(database, stop_before="m0008")
            repo.insert_predictions([record(f"r{i}") for i in range(10)])
            database.execute_sql("DELETE FROM schema_migrations WHERE name = 'm0006_prediction_filter_indexes'")
            database.execute_sql("DROP INDEX predictions_model_page")
        # a concurrent build that fails (here: a unique index over duplicate model names) leaves the index INVALID
        with pytest.raises(RejectedData, match="could not create unique index"), session():
            database.execute_sql("CREATE UNIQUE INDEX CONCURRENTLY predictions_model_page ON predictions (model)")
        with session():
            assert "predictions_model_page" not in index_names(database, empty_db_url)
        assert migrate(database)[0] == "m0006_prediction_filter_indexes"  # then m0008 and later
        with session():
            assert "predictions_model_page" in index_names(database, empty_db_url)
    finally:
        database.close()
