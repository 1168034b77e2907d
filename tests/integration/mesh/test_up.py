"""`predmesh up` with every part of the mesh in this checkout: each URL answers, scoring works through REST, gRPC,
the queue and the dashboard, one nightly batch runs on the mesh's luigid, a part killed with -9 is reported and
restarted, `predmesh status` sees everything up, and Ctrl-C stops the mesh with no process left.

Parts land one by one: a part whose package is not in the checkout must be named as absent in the banner (and is
then not exercised); a part that is in the checkout is always exercised: nothing is skipped."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import IRIS_ROW
from tests.support.match import search
from tests.support.procs import ROOT, free_port, health_status, wait_for

pytestmark = [pytest.mark.envoy, pytest.mark.rabbitmq, pytest.mark.browser, pytest.mark.timeout(300)]


def two_free_ports() -> int:
    """A port p with p+1 free too (replica k listens on p + k - 1), below the kernel's ephemeral range: a port from
    that range can be taken meanwhile as the source port of some outgoing connection (Envoy's health checks to the
    first replica did exactly that once), and then the second replica cannot bind it."""
    import random
    import socket
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for _ in range(200):
        p = random.randrange(20000, low - 2)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two adjacent free ports below the ephemeral range")


def healthy_hosts(envoy_admin: int) -> int:
    clusters = requests.get(f"http://127.0.0.1:{envoy_admin}/clusters?format=json", timeout=2).json()
    return sum(1 for c in clusters["cluster_statuses"] if c["name"] == "inference"
               for h in c["host_statuses"] if not any(k.startswith("failed") and v
                                                      for k, v in h["health_status"].items()))


def descendants(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    found = {int(p) for p in out}
    for child in list(found):
        found |= descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def in_group(pgids: set[int]) -> list[int]:
    """Processes still alive in any of these process groups (every part runs in its own)."""
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) in pgids and fields[0] != "Z":
                left.append(int(entry.name))
    return left


def test_up_runs_every_part_scores_everywhere_and_stops_clean(model_store, tmp_path):
    grpc_port = two_free_ports()
    ports = {name: free_port() for name in ("rest", "admin", "envoy", "luigid", "ui", "consumer", "prometheus")}
    env = {**os.environ, "PREDMESH_GRPC_ADDR": f"127.0.0.1:{grpc_port}", "PREDMESH_METRICS_ADDR": "",
           "PREDMESH_MODEL_STORE": str(model_store), "PREDMESH_GATEWAY_ADDR": f"127.0.0.1:{ports['rest']}",
           "PREDMESH_GATEWAY_ADMIN_ADDR": f"127.0.0.1:{ports['admin']}",
           "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": f"127.0.0.1:{ports['envoy']}",
           "PREDMESH_GATEWAY_HC_INTERVAL_MS": "250",
           "PREDMESH_LUIGID_ADDR": f"127.0.0.1:{ports['luigid']}",
           "PREDMESH_UI_ADDR": f"127.0.0.1:{ports['ui']}",
           "PREDMESH_CONSUMER_METRICS_ADDR": f"127.0.0.1:{ports['consumer']}",
           "PREDMESH_PROMETHEUS_ADDR": f"127.0.0.1:{ports['prometheus']}",
           "PREDMESH_DATABASE_URL": f"sqlite:///{tmp_path / 'predmesh.db'}",
           "PREDMESH_SPOOL_DIR": str(tmp_path / "spool"), "PREDMESH_DRAIN_SECONDS": "0",
           "PREDMESH_PROCESSES": "1",  # one process per replica (the default is one per CPU): lighter here
           "PYTHONUNBUFFERED": "1",
           # the parts run from a scratch directory: import this checkout's packages (also ones that landed
           # after the editable install was made)
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    from tests.support.queue import shared_amqp_url, unique_prefix
    env.update(PREDMESH_AMQP_URL=shared_amqp_url(), PREDMESH_AMQP_PREFIX=unique_prefix())
    metrics_port = two_free_ports()
    env["PREDMESH_METRICS_ADDR"] = f"127.0.0.1:{metrics_port}"
    workdir = tmp_path / "work"        # `predmesh up` keeps its relative state (var/...) here
    workdir.mkdir()
    out = open(tmp_path / "up.log", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "cli", "up", "--replicas", "2"], cwd=workdir, env=env,
                            stdout=out, stderr=subprocess.STDOUT)
    def log() -> str:
        return (tmp_path / "up.log").read_text(errors="replace")

    started: set[int] = set()
    t0 = time.monotonic()
    def step(what: str) -> None:
        print(f"[{time.monotonic() - t0:5.1f} s] {what}", flush=True)

    try:
        wait_for(lambda: "parts up; Ctrl-C" in log() or proc.poll() is not None, 90, interval=0.2,
                 what="predmesh up banner")
        assert proc.poll() is None, log()
        banner = log()
        total = int(search(r"predmesh up: (\d+)/(\d+) parts up", banner).group(2))
        assert f"{total}/{total} parts up" in banner, banner
        started = descendants(proc.pid)

        step("mesh up")
        # --- replicas and gateway: every URL answers --------------------------------------------------------
        for port in (grpc_port, grpc_port + 1):
            assert f"gRPC 127.0.0.1:{port}" in banner
            assert health_status(f"127.0.0.1:{port}") == 1       # SERVING
        for port in (metrics_port, metrics_port + 1):
            assert f"metrics http://127.0.0.1:{port}/metrics" in banner
            assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
        rest = f"http://127.0.0.1:{ports['rest']}"
        assert f"REST {rest}/v1/models" in banner
        assert requests.get(f"{rest}/openapi.json", timeout=5).status_code == 200
        assert f"API docs {rest}/docs" in banner
        assert requests.get(f"{rest}/docs", timeout=5).status_code == 200
        assert requests.get(f"http://127.0.0.1:{ports['envoy']}/stats/prometheus", timeout=5).status_code == 200
        assert requests.post(f"http://127.0.0.1:{ports['admin']}/v1/models/iris:reload", json={},
                             timeout=5).status_code in (401, 404)   # admin listener answers (no token here)
        wait_for(lambda: healthy_hosts(ports["envoy"]) == 2, 30, interval=0.2, what="both replicas in Envoy")

        step("replica and gateway URLs")
        # --- scoring through REST and gRPC (directly and through the gateway) --------------------------------
        answer = requests.post(f"{rest}/v1/models/iris:predict", json={"features": IRIS_ROW,
                                                                       "request_id": "up-rest-1"}, timeout=5)
        assert answer.status_code == 200 and answer.json()["prediction"]["label"] == "setosa"
        from predmesh import Client
        for target in (f"127.0.0.1:{grpc_port + 1}", f"127.0.0.1:{ports['rest']}"):
            with Client(target, timeout=5) as client:
                assert client.predict("iris", IRIS_ROW, request_id=f"up-grpc-{target}").label == "setosa"

        step("REST and gRPC")
        # --- luigid, and one nightly batch on it ---------------------------------------------------------------
        # writes of monitoring data need the writer token `predmesh up` made for its parts; anonymous ones do not
        token_file = workdir / "var" / "writer-token"
        assert f"export PREDMESH_WRITER_TOKEN_FILE={token_file}" in banner, banner
        assert requests.post(f"{rest}/v1/batchRuns", json={"run_key": "anon", "kind": "nightly", "model": "iris",
                                                           "status": "BATCH_RUN_STATUS_FAILED"},
                             timeout=5).status_code == 401
        env["PREDMESH_WRITER_TOKEN_FILE"] = str(token_file)   # as the banner says, for `predmesh batch`
        luigid = f"http://127.0.0.1:{ports['luigid']}"
        assert f"{luigid}/static/visualiser/index.html" in banner
        assert requests.get(f"{luigid}/static/visualiser/index.html", timeout=5).status_code == 200
        assert requests.get(f"{luigid}/api/task_list", timeout=5).json()["response"] is not None
        _run_nightly(env, workdir, luigid)

        step("luigid and the nightly batch")
        # --- the queue -----------------------------------------------------------------------------------------
        _score_through_the_queue(env, banner)

        step("the queue")
        # --- the dashboard -------------------------------------------------------------------------------------
        _score_through_the_dashboard(f"http://127.0.0.1:{ports['ui']}", banner, rest)

        step("the dashboard")
        # --- Prometheus -------------------------------------------------------------------------------------
        prometheus = f"http://127.0.0.1:{ports['prometheus']}"
        assert shutil.which("prometheus"), "scripts/setup.sh installs Debian's prometheus"
        assert f"{prometheus}/graph" in banner
        assert requests.get(f"{prometheus}/-/ready", timeout=5).status_code == 200
        step("prometheus")

        # --- status sees every part up ---------------------------------------------------------------------------
        def status_all_up():      # a probe may time out once on a loaded machine: ask again, a few times
            result = subprocess.run([sys.executable, "-m", "cli", "status", "--replicas", "2"], cwd=workdir,
                                    env=env, capture_output=True, text=True, timeout=60)
            attempts.append(result.stdout + result.stderr)
            return result if result.returncode == 0 else None
        attempts: list[str] = []
        try:
            status = wait_for(status_all_up, 40, interval=1, what="predmesh status: every part up")
        except TimeoutError:
            raise AssertionError("\n".join(attempts[-2:])) from None
        assert f"{total}/{total} parts up" in status.stdout

        step("status")
        # --- a part that dies is reported and restarted ----------------------------------------------------------
        replica2 = _pid_listening(grpc_port + 1)
        os.kill(replica2, signal.SIGKILL)
        wait_for(lambda: "inference-2 exited with -9; restarting it" in log(), 15, interval=0.2,
                 what="the death reported")
        wait_for(lambda: "inference-2 is healthy again" in log(), 60, interval=0.2, what="the replica back")
        assert health_status(f"127.0.0.1:{grpc_port + 1}") == 1
        started |= descendants(proc.pid)
        step("a replica killed and restarted")
        # by now (the first scrape comes a few seconds after /-/ready) every part it was given is scraped
        wait_for(lambda: _scraped_up(prometheus) >= EXPECTED_JOBS, 30, interval=0.5,
                 what="Prometheus scraping every part")
        step("prometheus scraped every part")
    finally:
        pgids = {os.getpgid(p) for p in started if alive(p)}
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        out.close()
    from tests.support.queue import Broker
    Broker(env["PREDMESH_AMQP_URL"], env["PREDMESH_AMQP_PREFIX"]).delete_topology()
    step("stopped")
    assert code == 0, log()[-3000:]
    time.sleep(0.3)
    assert [p for p in started if alive(p)] == [], "left running"
    assert in_group(pgids - {os.getpgid(0)}) == [], "a part's process group still has members"


def _scraped_up(prometheus: str) -> set[str]:
    """Jobs with every target up (and at least one target)."""
    active = requests.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    jobs: dict[str, list[bool]] = {}
    for target in active:
        jobs.setdefault(target["labels"]["job"], []).append(target["health"] == "up")
    return {job for job, health in jobs.items() if health and all(health)}


EXPECTED_JOBS = {"inference", "envoy", "prometheus", "consumer", "luigid"}


def _pid_listening(port: int) -> int:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    return int(search(r"pid=(\d+)", out).group(1))


def _run_nightly(env: dict, workdir: Path, luigid: str) -> None:
    """One nightly day through the mesh: scored via the gateway, scheduled on the luigid `predmesh up` runs."""
    day = "2026-11-01"
    batch_dir = workdir / "batch-out"
    result = subprocess.run([sys.executable, "-m", "cli", "batch", "nightly", "--date", day, "--rows", "60"],
                            cwd=workdir, env={**env, "PREDMESH_SERVER_ADDR": env["PREDMESH_GATEWAY_ADDR"],
                                              "PREDMESH_BATCH_DIR": str(batch_dir)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    import json
    report = json.loads((batch_dir / "nightly" / "iris" / day / "report.json").read_text())
    assert report["accuracy"] > 0.8, report
    assert (batch_dir / "nightly" / "iris" / day / "report.png").stat().st_size > 0
    tasks = requests.get(f"{luigid}/api/task_list", params={"data": json.dumps({"status": "DONE"})},
                         timeout=5).json()["response"]
    assert {t.split("_")[0] for t in tasks} >= {"GenerateData", "Score", "Report"}, sorted(tasks)


def _score_through_the_queue(env: dict, banner: str) -> None:
    """A job published on the queue is scored by the consumer `predmesh up` started and answered by reply-to."""
    from predmesh import jobs
    from predmesh.publisher import Publisher
    from predmesh.v1 import inference_pb2

    assert "(broker reachable)" in banner and f"metrics http://{env['PREDMESH_CONSUMER_METRICS_ADDR']}" in banner
    metrics = requests.get(f"http://{env['PREDMESH_CONSUMER_METRICS_ADDR']}/metrics", timeout=5)
    assert metrics.status_code == 200 and "predmesh_consumer_connected 1.0" in metrics.text
    with Publisher(env["PREDMESH_AMQP_URL"], prefix=env["PREDMESH_AMQP_PREFIX"]) as publisher:
        mid = publisher.publish(jobs.predict_job("iris", IRIS_ROW), message_id="up-queue-1", reply=True)
        result = publisher.wait_results([mid], timeout=30)[mid]
    assert isinstance(result, inference_pb2.PredictResponse)
    assert result.prediction.label == "setosa" and result.prediction.request_id == "up-queue-1"


def _score_through_the_dashboard(url: str, banner: str, rest: str) -> None:
    """The dashboard `predmesh up` started answers, and a prediction made in its form (real Chromium) shows and is
    stored through the mesh as a dashboard prediction."""
    from playwright.sync_api import expect, sync_playwright

    from tests.support.ui import CHROMIUM, CHROMIUM_ARGS

    assert f"{url}/" in banner
    assert requests.get(f"{url}/", timeout=10).status_code == 200
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(f"{url}/")
            expect(page.get_by_text("Connected", exact=False).first).to_be_visible(timeout=30000)
            for name, value in IRIS_ROW.items():
                field = page.get_by_label(name, exact=True)
                field.fill(str(value))
                field.press("Enter")
                field.blur()
            page.wait_for_timeout(300)
            page.get_by_role("button", name="Predict").click()
            expect(page.get_by_text("Predicted label: setosa")).to_be_visible(timeout=15000)
            expect(page.get_by_text("Traceback")).to_have_count(0)
        finally:
            browser.close()

    def stored_from_the_dashboard():
        answer = requests.get(f"{rest}/v1/predictions", params={"model": "iris", "page_size": "100"}, timeout=5)
        return [p for p in answer.json().get("predictions", []) if "UI" in str(p.get("transport")).upper()]
    assert wait_for(stored_from_the_dashboard, 15, interval=0.3, what="the dashboard's prediction stored")
