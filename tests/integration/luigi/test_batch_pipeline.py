"""The Luigi batch pipeline end to end: `python -m batch` processes against a real server storing in PostgreSQL,
with the local scheduler and with a real luigid. A day end to end and its no-op rerun, T18 (kill -9 during
scoring), a CSV with bad rows, the server stopped mid-run, and a backfill of exactly the missing days."""
from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import psycopg2
import pytest

from predmesh import Client
from tests.support.batch import LuigidProc, batch_env, http_get, run_batch, start_batch
from tests.support.pg import TempSchema
from tests.support.procs import wait_for

pytestmark = pytest.mark.postgres
DAY = "2026-11-20"


def stored(pg: TempSchema) -> tuple[int, int, int]:
    """(batch rows, distinct request ids among them, feedback rows) in the test's schema."""
    with psycopg2.connect(pg.url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT request_id) FROM predictions WHERE transport = 'batch'")
        counted = cur.fetchone()
        assert counted is not None  # count(*) answers one row
        rows, distinct = counted
        cur.execute("SELECT count(*) FROM feedback")
        feedback = cur.fetchone()
        assert feedback is not None
        return rows, distinct, feedback[0]


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def day_dir(batch_dir: Path, day: str = DAY) -> Path:
    return batch_dir / "nightly" / "iris" / day


def outputs(d: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(d.iterdir())} if d.is_dir() else {}


@pytest.mark.parametrize("scheduler", ["local", "luigid"])
def test_a_day_end_to_end_then_a_rerun_does_no_work(server, pg, tmp_path, scheduler):
    batch_dir = tmp_path / "batch"
    args = ["nightly", "--date", DAY, "--rows", "300"]
    luigid = None
    if scheduler == "luigid":
        luigid = LuigidProc(tmp_path / "luigid").__enter__()
        env = batch_env(server.target, batch_dir, PREDMESH_LUIGID_ADDR=luigid.addr)
    else:
        env = batch_env(server.target, batch_dir)
        args.append("--local-scheduler")
    try:
        first = run_batch(args, env)
        assert first.returncode == 0, first.stderr
        d = day_dir(batch_dir)
        assert set(outputs(d)) == {"input.csv", "scored.csv", "rejects.csv", "score.json", "report.json",
                                   "report.png"}
        scored = csv_rows(d / "scored.csv")
        assert len(scored) == 300 and len({r["prediction_id"] for r in scored}) == 300
        assert {"label", "prob_setosa", "prob_versicolor", "prob_virginica", "true_label"} <= set(scored[0])
        report = json.loads((d / "report.json").read_text())
        assert report["rows"] == 300 and report["accuracy"] > 0.8 and report["feedback"]["recorded"] == 300
        assert sum(map(sum, report["confusion_matrix"])) == 300
        assert (d / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        wait_for(lambda: stored(pg) == (300, 300, 300), 20, what="300 rows and their feedback stored")
        with Client(server.target) as client:
            [run] = client.list_batch_runs(kind="nightly").items
            [quality] = [q for q in client.get_stats(model="iris").quality if q.feedback_count]
        assert (run.run_key, run.status, run.rows, run.rejected) == (f"nightly/iris/{DAY}", "succeeded", 300, 0)
        assert run.accuracy == pytest.approx(report["accuracy"]) and run.duration_seconds > 0
        assert quality.feedback_count == 300 and quality.accuracy == pytest.approx(report["accuracy"])
        listed = run_batch(["runs", "--json"], env)
        assert listed.returncode == 0 and json.loads(listed.stdout)[0]["run_date"] == DAY
        if luigid:
            done = {t["name"]: t for t in luigid.tasks("DONE").values()}
            assert {"GenerateData", "Score", "Report"} <= set(done)
            # the visualiser shows Score's progress as it went (its last report: every row)
            assert done["Score"]["progress_percentage"] == 100
            assert "300 of 300 rows" in done["Score"]["status_message"]
            code, metrics = http_get(luigid.url + "/metrics")
            assert code == 200 and "luigi_task_done_total" in metrics

        before = outputs(d)
        again = run_batch(args, env)
        assert again.returncode == 0, again.stderr
        assert "Did not run any tasks" in again.stderr
        assert outputs(d) == before  # nothing rewritten
        time.sleep(0.5)  # a stray write would have reached the database by now
        assert stored(pg) == (300, 300, 300)
    finally:
        if luigid:
            luigid.__exit__(None, None, None)


def test_kill_9_during_scoring_leaves_no_partial_output_and_the_rerun_completes(server, pg, tmp_path):
    """T18: the killed run leaves no output target; the rerun stores exactly the input rows, no duplicates."""
    batch_dir = tmp_path / "batch"
    slow = batch_env(server.target, batch_dir, PREDMESH_BATCH_CHUNK_ROWS="100", PREDMESH_BATCH_INFLIGHT="1",
                     PREDMESH_FAULTS="batch.chunk_delay_ms:250")
    args = ["nightly", "--date", DAY, "--rows", "2000", "--local-scheduler"]
    proc = start_batch(args, slow, tmp_path / "killed.log")
    try:
        wait_for(lambda: stored(pg)[0] >= 300 or proc.poll() is not None, 60, interval=0.1,
                 what="scoring under way")
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    d = day_dir(batch_dir)
    assert (d / "input.csv").exists()  # GenerateData had completed
    partial = stored(pg)[0]
    assert 0 < partial < 2000
    assert not {"scored.csv", "rejects.csv", "score.json", "report.json", "report.png"} & set(outputs(d))
    assert not [p for p in d.iterdir() if "-luigi-tmp-" in p.name]

    rerun = run_batch(args, batch_env(server.target, batch_dir))
    assert rerun.returncode == 0, rerun.stderr
    assert len(csv_rows(d / "scored.csv")) == 2000
    wait_for(lambda: stored(pg)[:2] == (2000, 2000), 20, what="2000 rows stored")
    time.sleep(0.5)
    assert stored(pg)[:2] == (2000, 2000)


def vouched(server) -> float:
    """The server's predmesh_idempotency_vouched_total: keyed rows sent as new keys (FeatureMatrix.new_keys)."""
    return server.metric("predmesh_idempotency_vouched_total") or 0.0


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_scoring_a_csv_with_bad_rows(server, pg, tmp_path):
    header = ["id", "sepal_length", "sepal_width", "petal_length", "petal_width"]
    good = [["g1", 5.1, 3.5, 1.4, 0.2], ["g2", 6.0, 2.7, 4.2, 1.3], ["g3", 6.3, 3.3, 6.0, 2.5],
            ["g4", 4.9, 3.0, 1.4, 0.2], ["g5", 5.8, 2.7, 5.1, 1.9], ["g6", 5.5, 2.4, 3.8, 1.1]]
    bad = [["b1", "", 3.0, 1.0, 0.1], ["b2", "abc", 3.0, 1.0, 0.1], ["b3", 5.0, "NaN", 1.0, 0.1],
           ["b4", 1e9, 3.0, 1.0, 0.1]]
    rows = [good[0], bad[0], good[1], good[2], bad[1], good[3], bad[2], good[4], bad[3], good[5]]
    source = tmp_path / "customers.csv"
    write_csv(source, header, rows)
    env = batch_env(server.target, tmp_path / "batch")
    out = tmp_path / "scored.csv"
    result = run_batch(["score", "--model", "iris", "--input", str(source), "--output", str(out)], env)
    assert result.returncode == 3, result.stdout + result.stderr  # documented: scored, with rejects
    assert "6 of 10 rows scored" in result.stdout and "4 rejected" in result.stdout
    assert "Traceback" not in result.stderr
    scored = csv_rows(out)
    assert [r["id"] for r in scored] == ["g1", "g2", "g3", "g4", "g5", "g6"]
    assert [r["label"] for r in scored[:3]] == ["setosa", "versicolor", "virginica"]
    assert all(abs(sum(float(r[f"prob_{c}"]) for c in ("setosa", "versicolor", "virginica")) - 1) < 1e-6
               for r in scored)
    rejects = csv_rows(tmp_path / "scored.rejects.csv")
    assert [(r["row"], r["id"]) for r in rejects] == [("2", "b1"), ("5", "b2"), ("7", "b3"), ("9", "b4")]
    reasons = [r["reason"] for r in rejects]
    assert reasons[:3] == ["sepal_length: missing value", "sepal_length: 'abc' is not a number", "sepal_width: NaN"]
    assert reasons[3].startswith("refused by the server:") and "sepal_length" in reasons[3]
    wait_for(lambda: stored(pg)[0] == 6, 20, what="6 rows stored")
    assert vouched(server) == 6  # the file's first run: its keys were said new, not looked up one by one

    again = run_batch(["score", "--model", "iris", "--input", str(source), "--output", str(out)], env)
    assert again.returncode == 3
    assert [r["prediction_id"] for r in csv_rows(out)] == [r["prediction_id"] for r in scored]
    time.sleep(0.5)
    assert stored(pg)[:2] == (6, 6)  # the rerun stored nothing twice
    assert vouched(server) == 6  # the rerun's keys were looked up

    clean = tmp_path / "clean.csv"
    write_csv(clean, header, good)
    ok = run_batch(["score", "--model", "iris", "--input", str(clean)], env)
    assert ok.returncode == 0 and "6 of 6 rows scored" in ok.stdout and "no rejects" in ok.stdout
    assert (tmp_path / "clean.scored.csv").exists()

    write_csv(tmp_path / "nocol.csv", header[:-1], [g[:-1] for g in good])
    unusable = run_batch(["score", "--model", "iris", "--input", str(tmp_path / "nocol.csv")], env)
    assert unusable.returncode == 2 and "petal_width" in unusable.stderr and "Traceback" not in unusable.stderr
    missing = run_batch(["score", "--model", "iris", "--input", str(tmp_path / "nope.csv")], env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    unknown = run_batch(["score", "--model", "no-such-model", "--input", str(clean)], env)
    assert unknown.returncode == 1 and "NotFound" in unknown.stderr

    with Client(server.target) as client:
        runs = {r.run_key: r for r in client.list_batch_runs(kind="score")}
    assert any(r.status == "succeeded" and (r.rows, r.rejected) == (6, 4) for r in runs.values())


def test_parquet_in_and_out(server, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    source = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"sepal_length": [5.1, None, 6.3], "sepal_width": [3.5, 3.0, 3.3],
                             "petal_length": [1.4, 1.0, 6.0], "petal_width": [0.2, 0.1, 2.5]}), source)
    env = batch_env(server.target, tmp_path / "batch")
    result = run_batch(["score", "--model", "iris", "--input", str(source)], env)
    assert result.returncode == 3, result.stderr
    table = pq.read_table(tmp_path / "rows.scored.parquet").to_pydict()
    assert table["label"] == ["setosa", "virginica"] and len(set(table["prediction_id"])) == 2
    assert table["sepal_length"] == [5.1, 6.3]
    assert "sepal_length: missing value" in (tmp_path / "rows.scored.rejects.csv").read_text()


def test_parquet_output_keeps_the_input_columns_types_and_pandas_dtypes(server, tmp_path):
    """Carried columns come back with their Parquet types, not types inferred again from Python values (int8 →
    int64, float32 → double, dictionary → string, timestamp[ns] → [us], decimal(12, 4) → (5, 4)), and pandas reads
    them back with its own dtypes (a nullable Int64 stayed Int64, not float64)."""
    import decimal

    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    source = tmp_path / "typed.parquet"
    frame = pd.DataFrame({
        "sepal_length": [5.1, 6.3, 5.8], "sepal_width": [3.5, 3.3, 2.7],
        "petal_length": [1.4, 6.0, 5.1], "petal_width": [0.2, 2.5, 1.9],
        "customer": pd.array([7, None, 9], dtype="Int64"),
        "segment": pd.Categorical(["a", "b", "a"]),
        "small": pd.array([1, 2, 3], dtype="int8"),
        "ratio": pd.array([0.5, 0.25, 1.5], dtype="float32"),
        "seen": pd.to_datetime(["2026-01-02 03:04:05.000000001"] * 3).tz_localize("Europe/Paris"),
    })
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.append_column("amount", pa.array([decimal.Decimal("12.3400")] * 3, pa.decimal128(12, 4)))
    table = table.append_column("note", pa.array(["x", "y", "z"], pa.large_string()))
    pq.write_table(table, source)
    result = run_batch(["score", "--model", "iris", "--input", str(source)],
                       batch_env(server.target, tmp_path / "batch"))
    assert result.returncode == 0, result.stderr
    written, out = pq.read_table(source), pq.read_table(tmp_path / "typed.scored.parquet")
    for name in written.column_names:
        assert out.schema.field(name).type == written.schema.field(name).type, name
    assert out.select(written.column_names).equals(written)
    back = pd.read_parquet(tmp_path / "typed.scored.parquet")
    assert str(back["customer"].dtype) == "Int64" and back["customer"].isna().tolist() == [False, True, False]
    assert str(back["segment"].dtype) == "category" and str(back["seen"].dtype) == "datetime64[ns, Europe/Paris]"
    assert back["label"].notna().all() and back["prediction_id"].nunique() == 3


def test_server_stopped_mid_run_fails_clearly_and_the_rerun_completes(server, pg, tmp_path):
    batch_dir = tmp_path / "batch"
    slow = batch_env(server.target, batch_dir, PREDMESH_BATCH_CHUNK_ROWS="100", PREDMESH_BATCH_INFLIGHT="1",
                     PREDMESH_FAULTS="batch.chunk_delay_ms:250")
    args = ["nightly", "--date", DAY, "--rows", "2000", "--local-scheduler"]
    log = tmp_path / "stopped.log"
    proc = start_batch(args, slow, log)
    try:
        wait_for(lambda: stored(pg)[0] >= 200 or proc.poll() is not None, 60, interval=0.1,
                 what="scoring under way")
        server.terminate()
        code = proc.wait(90)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code == 30, text  # Luigi's task_failed retcode (batch/luigi.cfg)
    assert "FAILED Score(date=2026-11-20, model=iris)" in text and "Unavailable" in text, text
    assert "Traceback" not in text
    assert not (day_dir(batch_dir) / "scored.csv").exists()

    server.start()  # the same port, database and spool
    rerun = run_batch(args, batch_env(server.target, batch_dir))
    assert rerun.returncode == 0, rerun.stderr
    wait_for(lambda: stored(pg)[:2] == (2000, 2000), 30, what="2000 rows stored")
    with Client(server.target) as client:
        run, first = client.list_batch_runs(kind="nightly").items
    assert run.status == "succeeded" and run.rows == 2000 and run.attempt == 2
    # the stopped server could not hear the first attempt fail: it stays as it was last recorded, kept
    assert (first.attempt, first.status, first.run_key) == (1, "running", run.run_key)


def test_backfill_runs_only_the_missing_days(server, pg, tmp_path):
    batch_dir = tmp_path / "batch"
    with LuigidProc(tmp_path / "luigid") as luigid:
        env = batch_env(server.target, batch_dir, PREDMESH_LUIGID_ADDR=luigid.addr, PREDMESH_BATCH_ROWS="50")
        first = run_batch(["backfill", "--start", "2026-11-01", "--stop", "2026-11-03"], env)
        assert first.returncode == 0, first.stderr
        done_before = {day: outputs(day_dir(batch_dir, day)) for day in ("2026-11-01", "2026-11-02")}
        assert all(len(v) == 6 for v in done_before.values())
        second = run_batch(["backfill", "--start", "2026-11-01", "--stop", "2026-11-06"], env)
        assert second.returncode == 0, second.stderr
        assert "- 3 Report(date=2026-11-03...2026-11-05" in second.stderr, second.stderr
        assert "- 3 Score(date=2026-11-03...2026-11-05" in second.stderr, second.stderr
        ran = [line for line in second.stderr.splitlines() if " done " in line and "Report(" in line]
        assert sorted(line.split("Report(date=")[1][:10] for line in ran) == ["2026-11-03", "2026-11-04",
                                                                               "2026-11-05"]
        for day, files in done_before.items():
            assert outputs(day_dir(batch_dir, day)) == files  # the done days were not touched
    with Client(server.target) as client:
        runs = client.list_batch_runs(kind="nightly", page_size=10).items
    assert sorted(r.run_date for r in runs) == [f"2026-11-0{i}" for i in range(1, 6)]
    wait_for(lambda: stored(pg)[:2] == (250, 250), 20, what="5 days x 50 rows stored")


def test_without_the_writer_token_the_nightly_records_nothing_and_says_why(server, pg, tmp_path):
    """The server refuses anonymous writes: the day's Report fails naming the missing token, no feedback is
    stored, and the run is not recorded (a run anyone could record could also be overwritten by anyone)."""
    batch_dir = tmp_path / "batch"
    env = batch_env(server.target, batch_dir, PREDMESH_BATCH_ROWS="50")
    del env["PREDMESH_WRITER_TOKEN_FILE"]
    result = run_batch(["nightly", "--date", DAY, "--local-scheduler"], env)
    assert result.returncode == 30, result.stderr[-3000:]
    assert "Unauthenticated" in result.stderr and "Bearer" in result.stderr, result.stderr[-3000:]
    time.sleep(0.5)
    assert stored(pg)[2] == 0
    with Client(server.target) as client:
        assert client.list_batch_runs().items == ()
