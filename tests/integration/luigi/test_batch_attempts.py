"""`predmesh batch score` records its attempt: RUNNING from the start, naming the file it scores, then finished
with its rows; a second run of the same file is attempt 2, and `predmesh batch runs` lists both (real server,
PostgreSQL)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from predmesh import Client
from tests.support.batch import batch_env, run_batch, start_batch
from tests.support.procs import wait_for

pytestmark = pytest.mark.postgres
IRIS = [5.1, 3.5, 1.4, 0.2]


def write_rows(path: Path, n: int) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "sepal_length", "sepal_width", "petal_length", "petal_width"])
        w.writerows([f"r{i}", *IRIS] for i in range(n))


def test_a_score_run_is_recorded_running_with_its_file_then_finished(server, pg, tmp_path):
    source = tmp_path / "customers 2026.csv"
    write_rows(source, 1500)
    slow = batch_env(server.target, tmp_path / "batch", PREDMESH_BATCH_CHUNK_ROWS="100", PREDMESH_BATCH_INFLIGHT="1",
                     PREDMESH_FAULTS="batch.chunk_delay_ms:200")
    log = tmp_path / "score.log"
    proc = start_batch(["score", "--model", "iris", "--input", str(source)], slow, log)
    try:
        with Client(server.target) as client:
            def running():
                return [r for r in client.list_batch_runs(kind="score").items if r.status == "running"]
            wait_for(lambda: running() or proc.poll() is not None, 60, interval=0.1, what="a RUNNING attempt")
            assert proc.poll() is None, log.read_text()
            [run] = running()
            assert run.attempt == 1 and run.input == str(source) and run.finished_at is None
            assert run.run_key.startswith("score/iris/") and run.started_at is not None
            assert proc.wait(120) == 0, log.read_text()
            [done] = client.list_batch_runs(run_key=run.run_key).items
        assert (done.attempt, done.status, done.rows, done.rejected) == (1, "succeeded", 1500, 0)
        assert done.input == str(source) and done.finished_at is not None and done.started_at == run.started_at
    finally:
        if proc.poll() is None:
            proc.kill()

    again = run_batch(["score", "--model", "iris", "--input", str(source)], batch_env(server.target,
                                                                                       tmp_path / "batch"))
    assert again.returncode == 0, again.stderr
    listed = run_batch(["runs", "--key", run.run_key], slow)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [f"{run.run_key}#2" in lines[0], f"{run.run_key}#1" in lines[1]] == [True, True], lines
    assert all(str(source) in line and "succeeded" in line and "rows 1500" in line for line in lines)
    as_json = json.loads(run_batch(["runs", "--json", "--key", run.run_key], slow).stdout)
    assert [(r["attempt"], r["input"]) for r in as_json] == [(2, str(source)), (1, str(source))]
    assert all(r["finished_at"] for r in as_json)


def test_a_failed_score_attempt_keeps_its_error_beside_the_next(server, pg, tmp_path):
    source = tmp_path / "rows.csv"
    write_rows(source, 20)
    env = batch_env(server.target, tmp_path / "batch")
    failed = run_batch(["score", "--model", "no-such-model", "--input", str(source)], env)
    assert failed.returncode == 1, failed.stderr
    failed_again = run_batch(["score", "--model", "no-such-model", "--input", str(source)], env)
    assert failed_again.returncode == 1
    with Client(server.target) as client:
        runs = client.list_batch_runs(model="no-such-model").items
    assert [(r.attempt, r.status) for r in runs] == [(2, "failed"), (1, "failed")]
    assert all("NotFound" in r.message and r.input == str(source) and r.finished_at for r in runs)


def test_a_rerun_of_the_same_file_after_a_reload_gets_the_stored_answers(server, pg, tmp_path):
    """Issue #23 in the batch pipeline: a file's rows are sent under request ids made from the file's hash and row
    numbers, so a rerun of the same file is a retry: it gets the answers stored by the first run (same prediction
    ids, version, probabilities), even after a reload, and stores nothing twice. Before, the rerun's output held
    the new version's answers while the database kept the first run's."""
    from database.connect import open_database, session
    from database.repo import count_predictions
    from predmesh.v1 import admin_pb2, admin_pb2_grpc
    from tests.support.procs import ADMIN_TOKEN

    source = tmp_path / "rows.csv"
    with open(source, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "sepal_length", "sepal_width", "petal_length", "petal_width"])
        w.writerows([f"r{i}", 5.0 + (i % 30) / 10, 2.7, 4.2 + (i % 7) / 10, 1.3] for i in range(300))
    import grpc

    def reload(version: str) -> None:
        with grpc.insecure_channel(server.target) as channel:
            admin_pb2_grpc.ModelAdminServiceStub(channel).ReloadModel(
                admin_pb2.ReloadModelRequest(model="iris", version=version), timeout=30,
                metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")])

    def score(output: Path) -> list[dict[str, str]]:
        done = run_batch(["score", "--model", "iris", "--input", str(source), "--output", str(output),
                          "--wait-stored"], batch_env(server.target, tmp_path / "batch"))
        assert done.returncode == 0, done.stderr
        with open(output, newline="") as f:
            return list(csv.DictReader(f))

    reload("1")
    first = score(tmp_path / "first.csv")
    reload("2")
    again = score(tmp_path / "again.csv")
    assert len(first) == 300 and again == first  # prediction ids, labels and v1's probabilities
    with Client(server.target) as client:
        fresh = client.predict("iris", {"sepal_length": 5.0, "sepal_width": 2.7, "petal_length": 4.2,
                                        "petal_width": 1.3})
        assert fresh.model_version == "2" and f"{fresh.probabilities['versicolor']!r}" != first[0]["prob_versicolor"]
        runs = client.list_batch_runs(kind="score").items
    assert [r.model_version for r in runs] == ["1", "1"]
    open_database(pg.url)

    def stored() -> int:
        with session():
            return count_predictions()
    wait_for(lambda: stored() == 301, 10, what="the first run's 300 rows and the fresh one stored")
