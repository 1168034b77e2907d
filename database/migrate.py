"""The migration runner: applies database/migrations/m*.py in name order, each once, in its own transaction (a
migration with TRANSACTION = False outside one), one migrator at a time (advisory locks, see migrate)."""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import logging
import os
import pkgutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from peewee import CharField, Database, DateTimeField, Model

import database.migrations as migrations_pkg
from database.connect import advisory_lock, is_postgres

log = logging.getLogger(__name__)
LOCK_KEY = 0x7072_6564  # pg advisory lock id (with the schema's hash): two servers must not migrate one schema at once
BUILD_LOCK_KEY = LOCK_KEY + 1  # held while a migration outside a transaction runs (an index built concurrently)


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


def migrate(database: Database, stop_before: str | None = None) -> list[str]:
    """Apply every pending migration (with stop_before, e.g. "m0008", only those named before it: the database as
    an earlier release left it); returns the names applied (empty when already current).

    PostgreSQL: one migrator at a time per schema, under an advisory lock held for the session (LOCK_KEY and the
    schema, connect.advisory_lock: installations in other schemas of the database do not wait). A migration that
    cannot run in a transaction (TRANSACTION = False: CREATE INDEX CONCURRENTLY) runs under a lock of its own
    (BUILD_LOCK_KEY) with LOCK_KEY released: a concurrent build waits for every transaction with an older snapshot,
    and a migrator waiting for LOCK_KEY inside its transaction (a server of the previous release) would be one,
    waiting for the builder (a deadlock). Locks are waited for by polling, outside any transaction."""
    done: list[str] = []
    with database.bind_ctx([AppliedMigration]):
        _lock(database, LOCK_KEY)
        try:
            with database.atomic():
                AppliedMigration.create_table(safe=True)
            for name in available():
                if stop_before is not None and name >= stop_before:
                    break
                if AppliedMigration.get_or_none(AppliedMigration.name == name):
                    continue
                module = importlib.import_module(f"{migrations_pkg.__name__}.{name}")
                if getattr(module, "TRANSACTION", True):
                    with database.atomic():
                        log.info("applying migration %s", name)
                        module.apply(database)
                        AppliedMigration.create(name=name, applied_at=datetime.now(UTC).replace(tzinfo=None))
                    done.append(name)
                    continue
                _unlock(database, LOCK_KEY)
                try:
                    _lock(database, BUILD_LOCK_KEY)
                    try:
                        if not AppliedMigration.get_or_none(AppliedMigration.name == name):
                            log.info("applying migration %s (outside a transaction)", name)
                            module.apply(database)  # safe to run again after an interruption
                            AppliedMigration.create(name=name, applied_at=datetime.now(UTC).replace(tzinfo=None))
                            done.append(name)
                    finally:
                        _unlock(database, BUILD_LOCK_KEY)
                finally:
                    _lock(database, LOCK_KEY)
        finally:
            _unlock(database, LOCK_KEY)
    return done


@contextlib.contextmanager
def migration_lock(database: Database) -> Iterator[None]:
    """SQLite: an exclusive flock on <file>.migrate.lock, held around connecting and migrating, so processes that
    start together on a new file (PREDMESH_PROCESSES) take turns: a connection's first PRAGMA journal_mode=wal, or a
    migration, while another process migrates fails at once ("database is locked", "table ... already exists").
    The others wait, then find every migration applied. PostgreSQL (advisory locks in migrate) and in-memory SQLite:
    nothing to do. Not re-entrant: take it once per process."""
    path = "" if is_postgres(database) else str(getattr(database, "database", "") or "")
    fd = None
    if path and path != ":memory:" and not path.startswith("file:"):
        try:
            fd = os.open(f"{path}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # no such directory, read-only: connecting fails or only reads, and says so itself
            fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the lock


def _lock(database: Database, key: int, poll_s: float = 0.1) -> None:
    """PostgreSQL: take a session advisory lock, polling pg_try_advisory_lock (a waiter holds no snapshot)."""
    if is_postgres(database):
        while not advisory_lock(database, "pg_try_advisory_lock", key):
            time.sleep(poll_s)


def _unlock(database: Database, key: int) -> None:
    if not is_postgres(database):
        return
    try:
        advisory_lock(database, "pg_advisory_unlock", key)
    except Exception as exc:  # the connection is broken: the server has released the lock with it
        log.warning("migration lock not released (%s); it goes with the connection", exc)


def require_current(database: Database) -> None:
    """Raise SchemaNotCurrent naming the missing migrations and the command that applies them."""
    missing = pending(database)
    if missing:
        raise SchemaNotCurrent(f"the database is missing migrations {', '.join(missing)}; run `predmesh migrate`")
