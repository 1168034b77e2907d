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
