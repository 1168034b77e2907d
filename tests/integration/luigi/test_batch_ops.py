"""Running the batch unattended, against a real server storing in PostgreSQL (and a real luigid): the user's own
column names (--map, --map-file), retries of a server that goes away for a few seconds, a Report whose feedback
calls fail without losing the day's scored output, --wait-stored, and Luigi's details (stale temporaries, the
exit-10 hint, luigid's persistent state and task history)."""
from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.luigi.test_batch_pipeline import DAY, csv_rows, day_dir, stored, write_csv
from tests.support.batch import LuigidProc, batch_env, http_get, run_batch, start_batch
from tests.support.procs import ServerProc, free_port, wait_for

pytestmark = pytest.mark.postgres
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [["g1", 5.1, 3.5, 1.4, 0.2], ["g2", 6.0, 2.7, 4.2, 1.3], ["g3", 6.3, 3.3, 6.0, 2.5]]
THEIRS = ["id", "Sepal Length (cm)", "SEPAL_WIDTH", "x_petal_length", "petal width, cm"]


@pytest.fixture
def env(server, tmp_path):
    return batch_env(server.target, tmp_path / "batch")


def score(env, source: Path, *options) -> subprocess.CompletedProcess:
    return run_batch(["score", "--model", "iris", "--input", str(source), *map(str, options)], env)


def their_file(tmp_path: Path) -> Path:
    source = tmp_path / "theirs.csv"
    write_csv(source, THEIRS, ROWS)
    return source


def test_their_own_column_names_with_map_options_and_a_map_file(env, pg, tmp_path):
    source = their_file(tmp_path)
    refused = score(env, source)
    assert refused.returncode == 2 and "lacks the feature column(s)" in refused.stderr

    mapfile = tmp_path / "map.csv"
    mapfile.write_text('feature,column\nsepal_length,Sepal Length (cm)\npetal_width,"petal width, cm"\n')
    result = score(env, source, "--map-file", mapfile, "--map", "sepal_width=SEPAL_WIDTH",
                   "--map", "petal_length=x_petal_length", "--output", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    out = csv_rows(tmp_path / "out.csv")
    assert list(out[0])[:5] == THEIRS  # the user's header is kept as it was
    assert [r["label"] for r in out] == ["setosa", "versicolor", "virginica"]
    wait_for(lambda: stored(pg)[0] == 3, 20, what="3 rows stored")

    bad = tmp_path / "bad.csv"  # a reject of a mapped feature names the feature and the user's column
    write_csv(bad, THEIRS, [*ROWS, ["g4", "5_1", 3.0, 1.0, 0.2]])
    result = score(env, bad, "--map-file", mapfile, "--map", "sepal_width=SEPAL_WIDTH",
                   "--map", "petal_length=x_petal_length")
    assert result.returncode == 3, result.stderr
    [reject] = csv_rows(tmp_path / "bad.scored.rejects.csv")
    assert reject["reason"].startswith("sepal_length (column 'Sepal Length (cm)'): '5_1' is not a number")

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    parquet = tmp_path / "theirs.parquet"
    pq.write_table(pa.table({name: [r[i] for r in ROWS] for i, name in enumerate(THEIRS)}), parquet)
    result = score(env, parquet, "--map-file", mapfile, "--map", "sepal_width=SEPAL_WIDTH",
                   "--map", "petal_length=x_petal_length")
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "theirs.scored.parquet").to_pydict()["label"] == [
        "setosa", "versicolor", "virginica"]


@pytest.mark.parametrize(("options", "message"), [
    (["--map", "sepal_length=Sepal Length"], "the input has no column 'Sepal Length' (for 'sepal_length')"),
    (["--map", "sepal_length=Sepal Length (cm)", "--map", "sepal_length=SEPAL_WIDTH"],
     "the feature 'sepal_length' is mapped twice"),
    (["--map", "sepal_lenght=Sepal Length (cm)"], "'sepal_lenght' is not a feature of model iris"),
    (["--map", "sepal_length"], "write feature=column"),
])
def test_a_mapping_that_cannot_be_used_is_refused_before_any_row(env, pg, tmp_path, options, message):
    result = score(env, their_file(tmp_path), *options)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "theirs.scored.csv").exists()
    time.sleep(0.3)
    assert stored(pg)[0] == 0


def test_a_parquet_column_named_twice_is_refused_like_a_csv_one(env, pg, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    source = tmp_path / "twice.parquet"
    columns = [pa.array([r[i] for r in ROWS]) for i in range(1, 5)]
    pq.write_table(pa.Table.from_arrays([*columns, columns[0]], names=[*FEATURES, "sepal_length"]), source)
    result = score(env, source)
    assert result.returncode == 2, result.stderr
    assert "the column 'sepal_length' appears twice in the header (columns 1 and 5)" in result.stderr
    assert not (tmp_path / "twice.scored.parquet").exists()


def test_a_server_away_for_seconds_is_retried_and_the_run_completes(model_store, pg, tmp_path):
    """The server stops mid-run and comes back a few seconds later on the same port: the calls in between are
    retried with backoff, and the run completes with every row stored once."""
    with ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DATABASE_URL": pg.url},
                    grpc_port=free_port()) as server:
        batch_dir = tmp_path / "batch"
        slow = batch_env(server.target, batch_dir, PREDMESH_BATCH_CHUNK_ROWS="100", PREDMESH_BATCH_INFLIGHT="1",
                         PREDMESH_FAULTS="batch.chunk_delay_ms:100", PREDMESH_BATCH_RETRIES="12",
                         PREDMESH_BATCH_RETRY_BACKOFF_S="0.5", PREDMESH_BATCH_RETRY_MAX_S="4")
        args = ["nightly", "--date", DAY, "--rows", "2000", "--local-scheduler"]
        log = tmp_path / "retried.log"
        proc = start_batch(args, slow, log)
        try:
            wait_for(lambda: stored(pg)[0] >= 200 or proc.poll() is not None, 60, interval=0.1,
                     what="scoring under way")
            server.terminate()
            time.sleep(2)
            server.start()  # the same port, database and spool
            code = proc.wait(180)
        finally:
            if proc.poll() is None:
                proc.kill()
        text = log.read_text()
        assert code == 0, text
        assert "UNAVAILABLE" in text and "retry 1 of 12" in text, text  # the retries were said, with their cause
        wait_for(lambda: stored(pg)[:2] == (2000, 2000), 30, what="2000 rows stored once")


def test_luigi_runs_a_failed_task_again_when_task_retries_are_set(model_store, pg, tmp_path):
    """No call retries, Luigi task retries 3 s apart: the server is down when GenerateData first runs and up
    when Luigi runs it again, and the day completes (exit 0)."""
    server = ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DATABASE_URL": pg.url},
                        grpc_port=free_port())
    env = batch_env(server.target, tmp_path / "batch", PREDMESH_BATCH_RETRIES="0", PREDMESH_BATCH_TASK_RETRIES="8",
                    PREDMESH_BATCH_TASK_RETRY_DELAY_S="3")
    log = tmp_path / "day.log"
    proc = start_batch(["nightly", "--date", DAY, "--rows", "100", "--local-scheduler"], env, log)
    try:
        wait_for(lambda: "failed    GenerateData" in log.read_text() or proc.poll() is not None, 60,
                 what="the first attempt failed")
        with server:
            code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 0, text
    assert (day_dir(tmp_path / "batch") / "report.json").exists()
    assert "failed    GenerateData" in text and "predmesh batch: FAILED" not in text  # recovered: not said failed


def test_after_the_last_retry_the_failure_names_the_status_and_message(server, pg, tmp_path):
    """The server is gone for good: after the bounded retries the run fails with the gRPC status and the message
    (no traceback), for score (exit 1) and for the nightly (exit 30)."""
    source = their_file(tmp_path)
    env = batch_env(server.target, tmp_path / "batch", PREDMESH_BATCH_RETRIES="2", PREDMESH_BATCH_RETRY_BACKOFF_S="0.2")
    server.terminate()
    started = time.monotonic()
    result = score(env, source, "--map", "sepal_length=Sepal Length (cm)", "--map", "sepal_width=SEPAL_WIDTH",
                   "--map", "petal_length=x_petal_length", "--map", "petal_width=petal width, cm")
    assert result.returncode == 1, result.stderr
    assert f"FAILED: Unavailable from the server at {server.target}: UNAVAILABLE: " in result.stderr
    assert "(after 3 attempts)" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30
    nightly = run_batch(["nightly", "--date", DAY, "--rows", "50", "--local-scheduler"], env)
    assert nightly.returncode == 30, nightly.stderr
    assert "FAILED GenerateData(date=2026-11-20, model=iris): Unavailable from the server at" in nightly.stderr
    assert "UNAVAILABLE" in nightly.stderr and "(after 3 attempts)" in nightly.stderr
    assert "Traceback" not in nightly.stderr


def test_report_feedback_failing_its_deadline_keeps_the_scored_day_and_a_rerun_finishes_it(server, pg, tmp_path):
    """Every feedback call misses its (tiny) deadline: Report fails after its retries naming DEADLINE_EXCEEDED,
    the day's scored output stays, and a rerun with a sane deadline sends only the feedback (no rescoring)."""
    batch_dir = tmp_path / "batch"
    args = ["nightly", "--date", DAY, "--rows", "300", "--local-scheduler"]
    tight = batch_env(server.target, batch_dir, PREDMESH_BATCH_FEEDBACK_TIMEOUT_S="0.000001",
                      PREDMESH_BATCH_RETRIES="2", PREDMESH_BATCH_RETRY_BACKOFF_S="0.1",
                      PREDMESH_BATCH_FEEDBACK_PAGE="100")
    failed = run_batch(args, tight)
    assert failed.returncode == 30, failed.stderr
    assert "FAILED Report(date=2026-11-20, model=iris)" in failed.stderr
    assert "DEADLINE_EXCEEDED" in failed.stderr and "(after 3 attempts)" in failed.stderr
    assert "Traceback" not in failed.stderr
    d = day_dir(batch_dir)
    scored = d / "scored.csv"
    assert scored.exists() and (d / "score.json").exists() and not (d / "report.json").exists()
    mtime = scored.stat().st_mtime_ns

    rerun = run_batch(args, batch_env(server.target, batch_dir, PREDMESH_BATCH_FEEDBACK_PAGE="100"))
    assert rerun.returncode == 0, rerun.stderr
    assert scored.stat().st_mtime_ns == mtime  # not scored again
    wait_for(lambda: stored(pg) == (300, 300, 300), 30, what="300 rows and their feedback")


def test_wait_stored_returns_once_every_row_is_queryable(env, pg, tmp_path):
    rows = [[f"r{i}", 5.0 + (i % 30) / 10, 3.0, 1.5 + (i % 50) / 10, 0.2 + (i % 20) / 10] for i in range(2500)]
    source = tmp_path / "many.csv"
    write_csv(source, ["id", *FEATURES], rows)
    plain = score(env, source)
    assert plain.returncode == 0, plain.stderr
    assert "durable" in plain.stdout.splitlines()[-1]  # the last line says what is known of the rows' storage

    source2 = tmp_path / "many2.csv"
    write_csv(source2, ["id", *FEATURES], [[f"s{i}", *r[1:]] for i, r in enumerate(rows)])
    before = stored(pg)[0]
    result = score(env, source2, "--wait-stored")
    assert result.returncode == 0, result.stderr
    assert stored(pg)[0] - before == 2500  # at the exit, not later: the command waited for them
    assert "2500 rows stored in the database" in result.stdout.splitlines()[-1]


def test_stale_temporaries_of_killed_runs_are_cleaned_by_a_rerun_and_a_live_one_is_kept(server, pg, tmp_path):
    """A completed day's directory with temporaries a killed concurrent run left: the rerun (a no-op for the
    day) removes the old ones of our outputs, and leaves a fresh one (a run writing now) and the user's files."""
    batch_dir = tmp_path / "batch"
    env = batch_env(server.target, batch_dir)
    args = ["nightly", "--date", DAY, "--rows", "50", "--local-scheduler"]
    assert run_batch(args, env).returncode == 0
    d = day_dir(batch_dir)
    aged = time.time() - 7200
    old = [d / "scored.csv-luigi-tmp-1234567890", d / "report.json-luigi-tmp-000000042"]
    for p in old:
        p.write_text("left by a killed run")
        os.utime(p, (aged, aged))
    fresh = d / "scored.csv-luigi-tmp-0987654321"  # a concurrent run's, being written right now
    fresh.write_text("being written")
    theirs = [d / "notes.txt-luigi-tmp-1234567890", d / "scored.csv-luigi-tmp-backup"]  # not our outputs' names
    for p in theirs:
        p.write_text("the user's")
        os.utime(p, (aged, aged))
    result = run_batch(args, env)
    assert result.returncode == 0, result.stderr
    assert not any(p.exists() for p in old)
    assert fresh.exists() and all(p.exists() for p in theirs)


def test_exit_10_names_the_run_that_holds_the_lock(server, pg, tmp_path):
    batch_dir = tmp_path / "batch"
    slow = batch_env(server.target, batch_dir, PREDMESH_BATCH_CHUNK_ROWS="50", PREDMESH_BATCH_INFLIGHT="1",
                     PREDMESH_FAULTS="batch.chunk_delay_ms:200")
    args = ["nightly", "--date", DAY, "--rows", "1000", "--local-scheduler"]
    proc = start_batch(args, slow, tmp_path / "first.log")
    try:
        wait_for(lambda: stored(pg)[0] >= 50 or proc.poll() is not None, 60, interval=0.1, what="first run going")
        second = run_batch(args, batch_env(server.target, batch_dir))
    finally:
        proc.kill()
        proc.wait()
    assert second.returncode == 10, second.stderr
    assert f"another run of the same command holds its lock (pid {proc.pid};" in second.stderr, second.stderr
    assert "is the central scheduler running" not in second.stderr


def luigid_with(work_dir: Path, history: str) -> LuigidProc:
    proc = LuigidProc(work_dir)
    if history:
        proc.env["PREDMESH_LUIGID_HISTORY_DB"] = history
    return proc


@pytest.mark.parametrize("history", ["sqlite", "postgres"])
def test_luigid_keeps_its_state_through_kill_9_and_answers_its_history(server, pg, tmp_path, history):
    batch_dir = tmp_path / "batch"
    url = pg.url if history == "postgres" else ""
    with luigid_with(tmp_path / "luigid", url) as luigid:
        env = batch_env(server.target, batch_dir, PREDMESH_LUIGID_ADDR=luigid.addr)
        result = run_batch(["nightly", "--date", DAY, "--rows", "50"], env)
        assert result.returncode == 0, result.stderr
        done = set(luigid.tasks("DONE"))
        assert len(done) == 3, done
        code, body = http_get(luigid.url + "/history")
        assert code == 200 and "Report" in body, (code, body[:500])
        assert luigid.proc is not None
        luigid.proc.kill()  # kill -9: no chance to save anything
        luigid.proc.wait()
    if not url:
        assert (tmp_path / "luigid" / "history.sqlite").is_file()
    with luigid_with(tmp_path / "luigid", url) as again:
        assert set(again.tasks("DONE")) == done  # the state survived
        code, body = http_get(again.url + "/history")
        assert code == 200 and "Report" in body  # and so did the history


def test_a_rerun_after_a_failed_day_runs_on_luigid(server, pg, tmp_path):
    """A nightly that failed on luigid (its server unreachable, no retries) left the failed task disabled there for
    Luigi's disable_persist (a day): the rerun once the server answered again was "not granted run permission"
    (exit 25, the hint asking whether luigid runs), as was every rerun after a killed worker. A new run now tries
    the task again and the day completes, as with --local-scheduler."""
    batch_dir = tmp_path / "batch"
    with LuigidProc(tmp_path / "luigid") as luigid:
        away = batch_env(f"127.0.0.1:{free_port()}", batch_dir, PREDMESH_LUIGID_ADDR=luigid.addr,
                         PREDMESH_BATCH_RETRIES="0")
        failed = run_batch(["nightly", "--date", DAY, "--rows", "50"], away)
        assert failed.returncode == 30, failed.stderr
        assert luigid.tasks("DISABLED"), "luigid disables the failed task (its retries are spent)"
        rerun = run_batch(["nightly", "--date", DAY, "--rows", "50"],
                          batch_env(server.target, batch_dir, PREDMESH_LUIGID_ADDR=luigid.addr))
        assert rerun.returncode == 0, rerun.stderr
        assert (day_dir(batch_dir) / "report.json").exists()
        assert len(luigid.tasks("DONE")) == 3 and not luigid.tasks("DISABLED")


def test_a_day_that_completes_while_luigid_is_killed_exits_0(server, pg, tmp_path):
    batch_dir = tmp_path / "batch"
    with LuigidProc(tmp_path / "luigid") as luigid:
        slow = batch_env(server.target, batch_dir, PREDMESH_LUIGID_ADDR=luigid.addr, PREDMESH_BATCH_CHUNK_ROWS="100",
                         PREDMESH_BATCH_INFLIGHT="1", PREDMESH_FAULTS="batch.chunk_delay_ms:100")
        log = tmp_path / "day.log"
        proc = start_batch(["nightly", "--date", DAY, "--rows", "1500"], slow, log)
        try:
            wait_for(lambda: stored(pg)[0] >= 200 or proc.poll() is not None, 60, interval=0.1,
                     what="scoring under way")
            assert luigid.proc is not None
            luigid.proc.kill()
            code = proc.wait(180)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    d = day_dir(batch_dir)
    assert (d / "report.json").exists(), text
    assert code == 0, text
    assert "stopped answering during the run; finishing the run with the local scheduler" in text
    assert "Traceback" not in text
    wait_for(lambda: stored(pg)[:2] == (1500, 1500), 30, what="1500 rows stored once")


def test_luigid_logs_the_requests_it_fails_not_every_scrape(tmp_path):
    """Under `predmesh up`, Prometheus scrapes luigid's /metrics every 5 s: each scrape was a `tornado.access: 200
    GET /metrics` line on the operator's terminal, for ever. Answered requests are quiet below DEBUG; a failed one
    is still logged."""
    with LuigidProc(tmp_path / "luigid") as luigid:
        for path in ("/metrics", "/api/task_list", "/metrics"):
            assert http_get(luigid.url + path)[0] == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(luigid.url + "/no-such-page", timeout=5)
        assert missing.value.code == 404
        log = tmp_path / "luigid" / "luigid.log"
        wait_for(lambda: "/no-such-page" in log.read_text(), 10, what="the failed request in luigid's log")
    text = log.read_text()
    assert "Scheduler starting up" in text  # luigid's own INFO lines stay
    assert "GET /metrics" not in text and "GET /api/task_list" not in text, text
    assert "WARNING tornado.access: 404 GET /no-such-page" in text, text
