"""A database as an earlier release left it, for tests of the migrations that convert one in place."""
from __future__ import annotations

import importlib
from datetime import UTC, datetime

from database.migrate import AppliedMigration, available


def migrated_before(database, first: str) -> None:
    """Apply and record every migration named before `first` (e.g. "m0008"), each in its own transaction, as
    `predmesh migrate` of that release did. Call inside database.connect.session()."""
    with database.bind_ctx([AppliedMigration]):
        AppliedMigration.create_table()
        for name in (n for n in available() if n < first):
            with database.atomic():
                importlib.import_module(f"database.migrations.{name}").apply(database)
                AppliedMigration.create(name=name, applied_at=datetime.now(UTC).replace(tzinfo=None))
