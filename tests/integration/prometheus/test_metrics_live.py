"""T24 on a live server: the scrape after traffic, feedback and a reload passes `promtool check metrics`, stays
under the series budget, and reads right (latency buckets below 1 ms, predictions per class, one model_info
series, reloads counted only after start); with several processes too (process_* for the group)."""
from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from predmesh import Client
from tests.conftest import IRIS_ROW
from tests.support.procs import ADMIN_TOKEN, WRITER_TOKEN, ServerProc, wait_for

VERSICOLOR = {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 4.2, "petal_width": 1.3}
VIRGINICA = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
SERIES_BUDGET = 500


def scrape(proc: ServerProc) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"/metrics answered {exc.code}: {exc.read()[-3000:]!r}\n{proc.log()[-5000:]}") from None


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels) -> float:
    return sum(s.value for s in samples(text)
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus"
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def assert_event_counters_at_zero(text: str) -> None:
    """The counters alerts take `increase()` of exist at 0 before their first event (a series appearing at 1
    is no increase to Prometheus: the first refused reload or canary rollback would never alert)."""
    present = {(s.name, tuple(sorted(s.labels.items()))) for s in samples(text)}
    for name, labels in (("predmesh_reload_total", {"result": "failure"}),
                         ("predmesh_canary_decisions_total", {"decision": "rollback"}),
                         ("predmesh_desired_state_failures_total", {})):
        key = (name, tuple(sorted({"model": "iris", **labels}.items())))
        assert key in present, f"{name}{labels} not exported before its first event"


def drive(proc: ServerProc) -> None:
    """Traffic over two transports and three classes, feedback on some of it, one admin reload, more traffic."""
    with Client(proc.target, timeout=10, writer_token=WRITER_TOKEN) as client, \
            Client(proc.target, timeout=10, transport="rest") as rest, \
            Client(proc.target, timeout=10, admin_token=ADMIN_TOKEN) as admin:
        preds = [client.predict("iris", row) for row in (IRIS_ROW, VERSICOLOR, VIRGINICA) * 5]
        rest.predict_batch("iris", [(IRIS_ROW, ""), (VIRGINICA, "")])
        wait_for(lambda: client.get_stats().total >= len(preds), 15, interval=0.2, what="predictions stored")
        for p in preds[:6]:
            client.submit_feedback(p.prediction_id, p.label)
        client.submit_feedback(preds[6].prediction_id, "versicolor")  # one wrong answer
        client.record_batch_run("nightly/iris/2026-11-27", kind="nightly", model="iris", status="succeeded", rows=3)
        admin.reload_model("iris", "1")
        for row in (IRIS_ROW, VERSICOLOR, VIRGINICA):
            client.predict("iris", row)


def test_live_scrape_after_traffic_feedback_and_reload_passes_promtool_and_reads_right(model_store, tmp_path):
    with ServerProc(model_store, tmp_path / "server.log") as proc:
        before = scrape(proc)
        assert value(before, "predmesh_reload_total") == 0, "the start-up load is not a reload"
        assert_event_counters_at_zero(before)
        drive(proc)
        text = scrape(proc)
    promtool_check(text)
    series = samples(text)
    assert len(series) < SERIES_BUDGET, len(series)
    print(f"series in one scrape (iris, two versions served): {len(series)}")

    info = [s for s in series if s.name == "predmesh_model_info"]
    assert [(s.labels["version"], s.value) for s in info] == [("1", 1.0)], info
    assert len(info[0].labels["sha256"]) == 64
    assert value(text, "predmesh_reload_total", result="success") == 1
    for version, label in (("2", "setosa"), ("2", "versicolor"), ("2", "virginica"), ("1", "virginica")):
        assert value(text, "predmesh_predictions_total", model="iris", version=version, **{"class": label}) > 0
    assert value(text, "predmesh_predictions_total", transport="rest") == 2
    # Sub-millisecond resolution: buckets below 1 ms exist, and Predict calls land in them.
    bounds = {float(s.labels["le"]) for s in series
              if s.name == "grpc_server_handling_seconds_bucket" and s.labels["grpc_method"] == "Predict"}
    assert {0.0001, 0.00025, 0.0005, 0.001} <= bounds
    assert value(text, "grpc_server_handling_seconds_bucket", grpc_method="Predict", le="0.005") > 0
    assert value(text, "predmesh_feedback_predictions", version="2") == 7
    assert value(text, "predmesh_feedback_accuracy", version="2") == pytest.approx(6 / 7)
    assert "predmesh_feedback_count" not in text
    assert value(text, "predmesh_batch_run_last_timestamp_seconds", kind="nightly", status="succeeded") > 1.7e9
    for name in ("predmesh_spool_bytes", "predmesh_spool_oldest_seconds", "predmesh_prediction_queue",
                 "predmesh_db_write_failures_total", "process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert any(s.name == name for s in series), name


def test_several_processes_export_group_process_metrics_and_one_model_info(model_store, tmp_path):
    env = {"PREDMESH_PROCESSES": "2", "PREDMESH_RELOAD_POLL_SECONDS": "0.2",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    with ServerProc(model_store, tmp_path / "server.log", env=env) as proc:
        wait_for(lambda: proc.log().count("predmesh inference listening") == 2, 90, interval=0.3,
                 what="both workers serving")
        assert value(scrape(proc), "predmesh_worker_processes") == 2
        first = scrape(proc)
        assert value(first, "predmesh_reload_total") == 0, "start-up loads are not reloads"
        assert_event_counters_at_zero(first)
        drive(proc)
        # the other process follows the serving pointer: model_info of version 2 is gone from every process
        try:
            wait_for(lambda: value(scrape(proc), "predmesh_reload_total", result="success") == 2, 60,
                     interval=0.3, what="both processes on version 1")
        except TimeoutError:
            text = scrape(proc)
            raise AssertionError([line for line in text.splitlines() if "reload" in line or "model_info" in line]
                                 + [proc.log()[-4000:]]) from None
        # drift series only for the serving version (the retired one's are zeroed in the files and dropped)
        wait_for(lambda: {s.labels["version"] for s in samples(scrape(proc))
                          if s.name == "predmesh_drift_window_rows"} == {"1"}, 20, interval=0.5,
                 what="drift series of version 1 only")
        text = scrape(proc)
        # the drift alerts' guard: the smallest window among the processes, never more than their sum
        rows = {s.name: s.value for s in samples(text) if s.name.startswith("predmesh_drift_window_rows")}
        assert 0 < rows["predmesh_drift_window_rows_min"] <= rows["predmesh_drift_window_rows"], rows
        proc.terminate(timeout=30)
    promtool_check(text)
    series = samples(text)
    assert len(series) < SERIES_BUDGET, len(series)
    info = [(s.labels["version"], s.value) for s in series if s.name == "predmesh_model_info"]
    assert info == [("1", 1.0)], info
    cpu = value(text, "process_cpu_seconds_total")
    assert cpu > value(first, "process_cpu_seconds_total") > 0
    assert value(text, "process_resident_memory_bytes") > 3 * 20e6  # supervisor + two workers with models
    assert value(text, "process_open_fds") > 0 and value(text, "process_start_time_seconds") > 0
