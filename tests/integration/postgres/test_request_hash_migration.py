"""m0004_request_hash on a database written by the previous schema (PostgreSQL and SQLite): rows stored before it
hold no fingerprint, and the lookup of idempotency keys recomputes theirs from the stored features, so a retry of
a request answered before the upgrade is told from a different request under the same key."""
from __future__ import annotations

import importlib
from datetime import UTC, datetime

from database import repo
from database.connect import open_database, session
from database.fingerprint import row_hash
from database.migrate import AppliedMigration, migrate
from database.records import PredictionRecord, prediction_id_of

BEFORE = ("m0001_initial", "m0002_batch_run_details", "m0003_batch_run_attempts")
NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")  # schema order


def test_rows_stored_before_the_fingerprint_are_compared_by_their_features(empty_db_url):
    database = open_database(empty_db_url)
    try:
        with database.bind_ctx([AppliedMigration]):  # the database as the previous release left it
            AppliedMigration.create_table()
            for name in BEFORE:
                with database.atomic():
                    importlib.import_module(f"database.migrations.{name}").apply(database)
                    AppliedMigration.create(name=name, applied_at=datetime.now(UTC).replace(tzinfo=None))
        mark = "?" if empty_db_url.startswith("sqlite") else "%s"
        with database.atomic():
            database.execute_sql(
                "INSERT INTO predictions (prediction_id, request_id, model, model_version, features, label, "
                f"probabilities, transport, latency_ms, created_at) VALUES ({', '.join([mark] * 10)})",
                (prediction_id_of("old-key"), "old-key", "iris", "1",
                 '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}', "setosa",
                 '{"setosa": 0.9, "versicolor": 0.1, "virginica": 0.0}', "grpc", 1.5, "2026-11-01 01:00:00"))
        assert migrate(database)[0] == "m0004_request_hash"  # and any later ones
        with session():
            [old] = repo.answered(["old-key", "never-used"]).values()
            assert (old.prediction_id, old.model_version, old.label, old.probabilities) == (
                prediction_id_of("old-key"), "1", "setosa", {"setosa": 0.9, "versicolor": 0.1, "virginica": 0.0})
            assert old.request_hash == row_hash("iris", NAMES, [5.1, 3.5, 1.4, 0.2])  # as the server computes it
            assert old.request_hash != row_hash("iris", NAMES, [5.1, 3.5, 1.4, 0.3])
            new = PredictionRecord(
                prediction_id=prediction_id_of("new-key"), request_id="new-key", model="iris", model_version="2",
                features=dict(zip(NAMES, [6.0, 2.7, 4.2, 1.3])), label="versicolor",
                probabilities={"setosa": 0.0, "versicolor": 1.0, "virginica": 0.0}, transport="rest",
                latency_ms=2.0, created_at=1.8e9, request_hash="ab" * 16)
            repo.insert_predictions([new])
            assert repo.answered(["new-key"])["new-key"].request_hash == "ab" * 16
            conflicts: list[str] = []  # the key offered again with another fingerprint: counted, first row kept
            repo.insert_predictions([PredictionRecord(**{**{f: getattr(new, f) for f in new.__slots__},
                                                         "request_hash": "cd" * 16})], conflicts)
            assert conflicts == ["new-key"] and repo.answered(["new-key"])["new-key"].request_hash == "ab" * 16
    finally:
        database.close()
