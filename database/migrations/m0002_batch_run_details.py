"""batch_runs gains what a pipeline run reports: a run key (upsert), day, model and version, rejected rows,
accuracy, duration, a message and when it was last recorded. `name` stays the kind of run ("nightly", "score")."""
from __future__ import annotations

from peewee import DateTimeField, DoubleField, IntegerField, TextField
from playhouse.migrate import SchemaMigrator, migrate


def apply(database) -> None:
    migrator = SchemaMigrator.from_database(database)
    table = "batch_runs"
    migrate(
        migrator.add_column(table, "run_key", TextField(null=True)),
        migrator.add_column(table, "run_date", TextField(default="")),
        migrator.add_column(table, "model", TextField(default="")),
        migrator.add_column(table, "model_version", TextField(default="")),
        migrator.add_column(table, "rejected", IntegerField(default=0)),
        migrator.add_column(table, "accuracy", DoubleField(null=True)),
        migrator.add_column(table, "duration_s", DoubleField(default=0.0)),
        migrator.add_column(table, "message", TextField(default="")),
        migrator.add_column(table, "updated_at", DateTimeField(null=True)),
        migrator.add_index(table, ("run_key",), True),
        migrator.add_index(table, ("model", "started_at"), False),
    )
