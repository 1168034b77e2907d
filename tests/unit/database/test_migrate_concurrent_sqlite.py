"""Processes starting at once on a new SQLite file (PREDMESH_PROCESSES=2, `predmesh up`'s default, and an operator's
`predmesh migrate`) connect and migrate it in turns under database.migrate.migration_lock: none of them fails
with "database is locked" (the first PRAGMA journal_mode=wal) or "table ... already exists" (a migration applied
twice). Without the lock, each round of this test failed that way."""
from __future__ import annotations

import multiprocessing

import pytest

ROUNDS = 6


def _start(url: str, start, results, cli: bool) -> None:
    from database.connect import open_database, session
    from database.migrate import migrate, migration_lock
    database = open_database(url)
    start.wait(timeout=30)
    if cli:  # the command line's migrate, as an operator runs it while servers start
        from database.__main__ import main
        results.put("ok" if main(["migrate", "--url", url]) == 0 else "predmesh migrate failed")
        return
    try:
        with migration_lock(database), session():
            migrate(database)
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_processes_starting_together_migrate_a_new_sqlite_file_once(tmp_path, round_):
    context = multiprocessing.get_context("fork")
    url = f"sqlite:///{tmp_path / 'predmesh.db'}"
    start, results = context.Barrier(3), context.Queue()
    workers = [context.Process(target=_start, args=(url, start, results, i == 2)) for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [results.get(timeout=5) for _ in workers] == ["ok", "ok", "ok"]
    from database.connect import open_database, session
    from database.migrate import available, pending
    database = open_database(url)
    with session():
        assert pending(database) == [] and available()
