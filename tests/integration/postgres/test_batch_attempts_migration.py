"""m0003_batch_run_attempts on a database written by the previous schema (PostgreSQL and SQLite): the runs
already stored become attempt 1 of their key, and the next attempt of such a key is numbered 2, not refused by the
old unique index on run_key."""
from __future__ import annotations

import importlib
from datetime import UTC, datetime

from database import repo
from database.connect import open_database, session
from database.migrate import AppliedMigration, applied, migrate

BEFORE = ("m0001_initial", "m0002_batch_run_details")


def test_old_runs_become_attempt_1_and_the_next_attempt_is_2(empty_db_url):
    database = open_database(empty_db_url)
    try:
        with database.bind_ctx([AppliedMigration]):  # the database as the previous release left it
            AppliedMigration.create_table()
            for name in BEFORE:
                with database.atomic():
                    importlib.import_module(f"database.migrations.{name}").apply(database)
                    AppliedMigration.create(name=name, applied_at=datetime.now(UTC).replace(tzinfo=None))
        with database.atomic():
            for key, status in (("nightly/iris/2026-11-01", "failed"), ("score/iris/abc", "succeeded")):
                database.execute_sql(
                    "INSERT INTO batch_runs (name, params, status, rows, started_at, run_key, run_date, model, "
                    "model_version, rejected, duration_s, message, updated_at, finished_at) VALUES "
                    "(%s, %s, %s, 5, %s, %s, '', 'iris', '1', 0, 1.0, %s, %s, %s)"
                    .replace("%s", "?" if empty_db_url.startswith("sqlite") else "%s"),
                    (key.split("/")[0], "{}", status, "2026-11-01 01:00:00", key, f"old {status}",
                     "2026-11-01 02:00:00", "2026-11-01 02:00:00"))
        assert migrate(database)[0] == "m0003_batch_run_attempts"
        assert "m0003_batch_run_attempts" in applied(database)
        with session():
            runs, _ = repo.list_batch_runs()
            assert sorted((r.run_key, r.attempt, r.status, r.rows, r.input, r.message) for r in runs) == [
                ("nightly/iris/2026-11-01", 1, "failed", 5, "", "old failed"),
                ("score/iris/abc", 1, "succeeded", 5, "", "old succeeded")]
            assert all(r.finished_at for r in runs)
            started, created = repo.record_batch_run(repo.PipelineRun(
                "nightly/iris/2026-11-01", "nightly", model="iris", status="running", input="day.csv"), 1.8e9)
            assert created and started.attempt == 2 and started.input == "day.csv"
            runs, _ = repo.list_batch_runs(run_key="nightly/iris/2026-11-01")
            assert [(r.attempt, r.status) for r in runs] == [(2, "running"), (1, "failed")]
    finally:
        database.close()
