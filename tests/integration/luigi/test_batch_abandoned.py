"""A `predmesh batch score` killed with -9 mid-run leaves its attempt RUNNING; once its heartbeat has been silent
for the server's PREDMESH_BATCH_RUN_STALE_S, `predmesh batch runs` shows it ABANDONED (and the next attempt of the
same file starts beside it), while a live run that keeps beating stays RUNNING past that time (real server,
PostgreSQL, a real SIGKILL)."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psycopg2
import pytest

from predmesh import Client
from tests.integration.luigi.test_batch_attempts import write_rows
from tests.support.batch import batch_env, run_batch, start_batch
from tests.support.pg import TempSchema
from tests.support.procs import ServerProc, wait_for

pytestmark = pytest.mark.postgres
STALE_S = 3.0


@pytest.fixture
def stale_server(model_store: Path, tmp_path: Path, pg: TempSchema):
    with ServerProc(model_store, tmp_path / "server.log",
                    env={"PREDMESH_DATABASE_URL": pg.url, "PREDMESH_BATCH_RUN_STALE_S": str(STALE_S)}) as proc:
        yield proc


def test_a_killed_score_run_is_shown_abandoned_and_the_next_attempt_starts_beside_it(stale_server, pg, tmp_path):
    source = tmp_path / "rows.csv"
    write_rows(source, 3000)
    slow = batch_env(stale_server.target, tmp_path / "batch", PREDMESH_BATCH_CHUNK_ROWS="100",
                     PREDMESH_BATCH_INFLIGHT="1", PREDMESH_FAULTS="batch.chunk_delay_ms:300",
                     PREDMESH_BATCH_HEARTBEAT_S="0.5")
    log = tmp_path / "score.log"
    proc = start_batch(["score", "--model", "iris", "--input", str(source)], slow, log)
    try:
        with Client(stale_server.target) as client:
            def runs():
                return client.list_batch_runs(kind="score").items
            wait_for(lambda: runs() or proc.poll() is not None, 60, interval=0.1, what="a RUNNING attempt")
            [first] = runs()
            # alive and beating: still RUNNING well past the stale time (every listing looks for stale attempts)
            time.sleep(STALE_S * 2)
            assert proc.poll() is None, log.read_text()
            [alive] = runs()
            assert (alive.attempt, alive.status) == (1, "running"), alive
            assert alive.updated_at > first.updated_at
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            killed_at = time.time()
            wait_for(lambda: time.time() - killed_at > STALE_S + 1, 10, interval=0.2, what="the stale time")
            listed = run_batch(["runs", "--key", first.run_key], slow)
            assert listed.returncode == 0, listed.stderr
            [line] = listed.stdout.splitlines()
            assert f"{first.run_key}#1" in line and "abandoned" in line, line
            [gone] = client.list_batch_runs(run_key=first.run_key).items
            assert gone.status == "abandoned" and gone.finished_at is not None
            assert gone.message.startswith("abandoned: no record from its process")

        again = run_batch(["score", "--model", "iris", "--input", str(source)],
                          batch_env(stale_server.target, tmp_path / "batch"))
        assert again.returncode == 0, again.stderr
        as_json = json.loads(run_batch(["runs", "--json", "--key", first.run_key], slow).stdout)
        assert [(r["attempt"], r["status"]) for r in as_json] == [(2, "succeeded"), (1, "abandoned")]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_new_attempt_marks_an_earlier_silent_one_abandoned(stale_server, pg, tmp_path):
    """The start of a later attempt is enough (no listing needed): an attempt recorded RUNNING by a process that
    then went silent is ABANDONED by the time the next one starts; a record from its own process still finishes
    it (it was not gone after all)."""
    env = batch_env(stale_server.target, tmp_path / "batch")
    token = Path(env["PREDMESH_WRITER_TOKEN_FILE"]).read_text().strip()
    with Client(stale_server.target, writer_token=token) as client:
        silent = client.record_batch_run("score/iris/silent", kind="score", model="iris", status="running").run
        time.sleep(STALE_S + 1)
        other = client.record_batch_run("score/iris/other", kind="score", model="iris", status="running").run
        assert stored_statuses(pg) == {"score/iris/silent": "abandoned", "score/iris/other": "running"}
        back = client.record_batch_run("score/iris/silent", kind="score", model="iris", status="succeeded",
                                       attempt=silent.attempt, rows=5).run
        assert (back.status, back.rows) == ("succeeded", 5)
        assert other.attempt == 1


def stored_statuses(pg: TempSchema) -> dict[str, str]:
    """run_key -> status straight from the table, not through ListBatchRuns (which marks stale attempts itself)."""
    with psycopg2.connect(pg.url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_key, status FROM batch_runs")
        return dict(cur.fetchall())
