"""The migration runner: applies database/migrations/m*.py in name order, each once, in its own transaction (a
migration with TRANSACTION = False outside one), all under one advisory lock held for the session."""
from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
    with database.bind_ctx([AppliedMigration]), _migration_lock(database):
        with database.atomic():
            AppliedMigration.create_table(safe=True)
        for name in available():
            if AppliedMigration.get_or_none(AppliedMigration.name == name):
                continue
            module = importlib.import_module(f"{migrations_pkg.__name__}.{name}")
            if getattr(module, "TRANSACTION", True):
                with database.atomic():
                    log.info("applying migration %s", name)
                    module.apply(database)
                    AppliedMigration.create(name=name, applied_at=datetime.now(UTC).replace(tzinfo=None))
            else:  # e.g. CREATE INDEX CONCURRENTLY: it must be safe to run again after an interruption
                log.info("applying migration %s (outside a transaction)", name)
                module.apply(database)
                AppliedMigration.create(name=name, applied_at=datetime.now(UTC).replace(tzinfo=None))
            done.append(name)
    return done


@contextmanager
def _migration_lock(database: Database, poll_s: float = 0.1) -> Iterator[None]:
    """PostgreSQL: the advisory lock that makes one migrator at a time, held for the session. It is waited for by
    polling pg_try_advisory_lock outside any transaction, never in a blocking wait: a CREATE INDEX CONCURRENTLY
    of the holder waits for every transaction with an older snapshot, which a blocked waiter would be (a deadlock).
    Every migration, and the check of what is applied, runs under it."""
    if not is_postgres(database):
        yield
        return
    while not database.execute_sql("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
        time.sleep(poll_s)
    try:
        yield
    finally:
        try:
            database.execute_sql("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        except Exception as exc:  # the connection is broken: the server has released the lock with it
            log.warning("migration lock not released (%s); it goes with the connection", exc)


def require_current(database: Database) -> None:
    """Raise SchemaNotCurrent naming the missing migrations and the command that applies them."""
    missing = pending(database)
    if missing:
        raise SchemaNotCurrent(f"the database is missing migrations {', '.join(missing)}; run `predmesh migrate`")
