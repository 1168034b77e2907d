"""The migration runner: applies database/migrations/m*.py in name order, each in its own transaction (or, for a
migration with TRANSACTION = False, under a session-held lock), once."""
from __future__ import annotations

import importlib
import logging
import pkgutil
from datetime import UTC, datetime

from peewee import CharField, Database, DateTimeField, Model

import database.migrations as migrations_pkg
from database.connect import is_postgres

log = logging.getLogger(__name__)
LOCK_KEY = 0x7072_6564  # pg advisory lock id: two servers starting at once must not migrate twice


class SchemaNotCurrent(RuntimeError):
    """The database lacks migrations this code needs."""


class AppliedMigration(Model):
    name = CharField(max_length=128, primary_key=True)
    applied_at = DateTimeField()

    class Meta:
        table_name = "schema_migrations"


def available() -> list[str]:
    """Names of all migrations shipped with the code, in apply order."""
    return sorted(m.name for m in pkgutil.iter_modules(migrations_pkg.__path__) if m.name.startswith("m"))


def applied(database: Database) -> list[str]:
    with database.bind_ctx([AppliedMigration]):
        if not AppliedMigration.table_exists():
            return []
        return sorted(m.name for m in AppliedMigration.select(AppliedMigration.name))


def pending(database: Database) -> list[str]:
    done = set(applied(database))
    return [name for name in available() if name not in done]


def migrate(database: Database) -> list[str]:
    """Apply every pending migration; returns the names applied (empty when already current)."""
    done: list[str] = []
    with database.bind_ctx([AppliedMigration]):
        with database.atomic():
            if is_postgres(database):
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            AppliedMigration.create_table(safe=True)
        for name in available():
            module = importlib.import_module(f"{migrations_pkg.__name__}.{name}")
            if not getattr(module, "TRANSACTION", True):
                if _apply_outside_transaction(database, name, module):
                    done.append(name)
                continue
            with database.atomic():
                if is_postgres(database):
                    database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                if AppliedMigration.get_or_none(AppliedMigration.name == name):
                    continue
                log.info("applying migration %s", name)
                module.apply(database)
                AppliedMigration.create(name=name, applied_at=datetime.now(UTC).replace(tzinfo=None))
                done.append(name)
    return done


def _apply_outside_transaction(database: Database, name: str, module) -> bool:
    """A migration that cannot run in a transaction (CREATE INDEX CONCURRENTLY), under the advisory lock held
    for the session; it must be safe to run again after an interruption (it is recorded only once it ends)."""
    postgres = is_postgres(database)
    if postgres:
        database.execute_sql("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        if AppliedMigration.get_or_none(AppliedMigration.name == name):
            return False
        log.info("applying migration %s (outside a transaction)", name)
        module.apply(database)
        AppliedMigration.create(name=name, applied_at=datetime.now(UTC).replace(tzinfo=None))
        return True
    finally:
        if postgres:
            database.execute_sql("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def require_current(database: Database) -> None:
    """Raise SchemaNotCurrent naming the missing migrations and the command that applies them."""
    missing = pending(database)
    if missing:
        raise SchemaNotCurrent(f"the database is missing migrations {', '.join(missing)}; run `predmesh migrate`")
