"""batch_runs keeps every attempt of a run key: `attempt` (1, 2, ... per key; rows already stored become attempt
1) and `input` (what the attempt read, e.g. the scored file). The unique index moves from run_key to
(run_key, attempt), so a new attempt no longer replaces the last one."""
from __future__ import annotations

from peewee import IntegerField, TextField
from playhouse.migrate import SchemaMigrator, migrate


def apply(database) -> None:
    migrator = SchemaMigrator.from_database(database)
    table = "batch_runs"
    migrate(
        migrator.add_column(table, "attempt", IntegerField(default=1)),
        migrator.add_column(table, "input", TextField(default="")),
        migrator.drop_index(table, "batch_runs_run_key"),
        migrator.add_index(table, ("run_key", "attempt"), True),
    )
