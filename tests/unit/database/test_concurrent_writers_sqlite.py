"""Two server processes storing into one SQLite file (PREDMESH_PROCESSES=2 is `predmesh up`'s default): each
batch's transaction looks for conflicting keys before it inserts. Begun deferred, that read pinned a snapshot, and
when the other process committed first the insert failed at once with "database is locked" (SQLite cannot wait for
a snapshot that is already stale): after a 20,000-row batch run, the two writers failed every few hundred
milliseconds and 18,000 rows were still in the spools when the mesh was stopped. Begun IMMEDIATE, a writer waits
for the other (busy timeout) instead."""
from __future__ import annotations

import multiprocessing

BATCHES = 40
ROWS = 200


def _store(url: str, tag: str, start, results) -> None:
    import dataclasses

    from database import repo
    from database.connect import open_database, session
    from tests.integration.postgres.test_database import record

    open_database(url)
    start.wait(timeout=30)
    failures, last = 0, ""
    for b in range(BATCHES):
        # keyed rows (a request_hash each), as a client's request_ids make them: their keys are looked up first
        batch = [dataclasses.replace(record(f"{tag}-{b}-{i}"), request_hash=f"{i:032x}") for i in range(ROWS)]
        try:
            with session():
                repo.insert_predictions(batch, [])  # [] : the writer asks for conflicting keys, as the server does
        except Exception as exc:  # counted: the test names how many failed and why
            failures += 1
            last = f"{type(exc).__name__}: {exc}"
    results.put((failures, last))


def test_two_processes_store_into_one_sqlite_file_without_locking_each_other_out(tmp_path):
    from database.connect import open_database, session
    from database.migrate import migrate

    url = f"sqlite:///{tmp_path / 'predmesh.db'}"
    database = open_database(url)
    with session():
        migrate(database)
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_store, args=(url, tag, start, results)) for tag in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    outcomes = [results.get(timeout=5) for _ in workers]
    assert outcomes == [(0, ""), (0, "")], outcomes
    from database import repo
    with session():
        assert repo.count_predictions() == 2 * BATCHES * ROWS
