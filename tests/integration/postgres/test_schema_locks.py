"""PostgreSQL: migrations, partition maintenance and retention lock one schema, not the whole database. Two
installations in two schemas of one database (one per team, or the tests' schemas) never wait for each other;
two migrators of one schema still take turns."""
from __future__ import annotations

import threading
from typing import cast

import pytest
from playhouse.pool import PooledPostgresqlDatabase

from database import partitions, retention
from database.connect import advisory_lock, make_database
from database.migrate import LOCK_KEY, migrate
from tests.support.pg import TempSchema


def _start(target, *args) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(target(*args)), daemon=True)
    thread.start()
    return thread, out


@pytest.fixture
def two_schemas():
    with TempSchema() as one, TempSchema() as other:
        databases = [cast(PooledPostgresqlDatabase, make_database(s.url)) for s in (one, other, one)]
        try:
            yield databases  # schema one, schema other, schema one again (a second server of the first)
        finally:
            for database in databases:
                database.close_all()  # the threads' pooled connections too


def test_a_migration_in_one_schema_does_not_wait_for_another_schemas(two_schemas):
    one, other, one_again = two_schemas
    assert advisory_lock(one, "pg_try_advisory_lock", LOCK_KEY)  # one's migrator is busy (a long migration)
    try:
        elsewhere, done = _start(migrate, other)
        elsewhere.join(30)
        assert not elsewhere.is_alive() and done and done[0], "the other schema's migration waited for this one's lock"
        same, same_done = _start(migrate, one_again)
        same.join(1.5)
        assert same.is_alive() and not same_done, "a second migrator of the same schema did not wait for the first"
    finally:
        advisory_lock(one, "pg_advisory_unlock", LOCK_KEY)
    same.join(30)
    assert not same.is_alive() and same_done and same_done[0]  # it migrated once the lock was free


def test_maintenance_and_retention_lock_their_own_schema(two_schemas):
    one, other, one_again = two_schemas
    migrate(one)
    migrate(other)
    assert advisory_lock(one, "pg_try_advisory_lock", retention.RUN_LOCK)  # one's retention run is busy
    try:
        with one.atomic():  # and one's partition maintainer holds its transaction lock
            advisory_lock(one, "pg_advisory_xact_lock", partitions.MAINTENANCE_LOCK)
            report = retention.run(other, days=0)  # with a database-wide lock: busy, or lock_timeout after 10 s
            assert not report.busy
            assert partitions.ensure_partitions(other, ahead=partitions.DAYS_AHEAD + 3)  # made under its own lock
            assert retention.run(one_again, days=0).busy  # the same schema's second run is still refused
    finally:
        advisory_lock(one, "pg_advisory_unlock", retention.RUN_LOCK)
    assert not retention.run(one_again, days=0).busy
