"""The CLI's start-up failures: a malformed setting, a busy port or Ctrl-C during start-up end with ONE line on
stderr naming the cause and a non-zero exit, never a traceback; a failed gateway start leaves a running gateway's
files alone."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.gateway import GatewayProc
from tests.support.procs import ROOT, free_port


def predmesh(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)


def isolated(tmp_path: Path) -> dict[str, str]:
    """Free ports and private paths, so nothing here touches var/ or a running mesh."""
    return {"PREDMESH_GRPC_ADDR": f"127.0.0.1:{free_port()}", "PREDMESH_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            "PREDMESH_MODEL_STORE": str(tmp_path / "models"), "PREDMESH_SPOOL_DIR": str(tmp_path / "spool"),
            "PREDMESH_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}", "PREDMESH_GATEWAY_DIR": str(tmp_path / "gw"),
            "PREDMESH_GATEWAY_ADDR": f"127.0.0.1:{free_port()}", "PREDMESH_GATEWAY_ADMIN_ADDR": "",
            "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": f"127.0.0.1:{free_port()}"}


def one_line_failure(result, code: int, *fragments: str) -> str:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code and len(lines) == 1, (result.returncode, result.stderr)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command, env, fragments", [
    ("serve", {"PREDMESH_PROCESSES": "two"}, ["predmesh serve:", "PREDMESH_PROCESSES='two'"]),
    ("serve", {"PREDMESH_GRPC_ADDR": "localhost"}, ["predmesh serve:", "PREDMESH_GRPC_ADDR", "host:port"]),
    ("serve", {"PREDMESH_DATABASE_URL": "mysql://u@127.0.0.1/db"}, ["predmesh serve:", "scheme must be"]),
    ("serve", {"PREDMESH_RUNTIME": "gpu"}, ["PREDMESH_RUNTIME='gpu'"]),
    ("train", {"PREDMESH_LOG_LEVEL": "loud"}, ["predmesh train:", "PREDMESH_LOG_LEVEL"]),
    ("migrate", {"PREDMESH_DATABASE_URL": "ftp://x/y"}, ["predmesh migrate:", "scheme must be"]),
    ("gateway", {"PREDMESH_GATEWAY_ADDR": "8080"}, ["predmesh gateway:", "host:port"]),
    ("gateway", {"PREDMESH_GATEWAY_CORS_ORIGINS": "app.example"}, ["PREDMESH_GATEWAY_CORS_ORIGINS"]),
    ("up", {"PREDMESH_PROCESSES": "many"}, ["predmesh up:", "PREDMESH_PROCESSES='many'"]),
    # accepted before: a screen of Envoy's JSON (exit 1), a broker retried for ever, a traceback from Bokeh
    ("gateway", {"PREDMESH_GATEWAY_TIMEOUT_S": "-1"}, ["predmesh gateway:", "PREDMESH_GATEWAY_TIMEOUT_S='-1'"]),
    ("consume", {"PREDMESH_AMQP_URL": "http://broker:5672/"}, ["predmesh consume:", "PREDMESH_AMQP_URL", "amqp://"]),
    ("ui", {"PREDMESH_UI_ALLOWED_ORIGINS": "https://dash.example.org"},
     ["predmesh ui:", "PREDMESH_UI_ALLOWED_ORIGINS", "host[:port]"]),
    ("gateway", {"PREDMESH_GATEWAY_ADMIN_ADDR": "nope"}, ["predmesh gateway:", "PREDMESH_GATEWAY_ADMIN_ADDR"]),
])
def test_a_malformed_setting_is_one_line_and_exit_2(tmp_path, command, env, fragments):
    result = predmesh(command, env={**isolated(tmp_path), **env})
    one_line_failure(result, 2, *fragments)


def test_a_busy_port_is_one_line_and_exit_1(tmp_path, trained_store):
    env = {**isolated(tmp_path), "PREDMESH_MODEL_STORE": str(trained_store)}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        addr = f"127.0.0.1:{busy.getsockname()[1]}"
        # each address and each way of serving (one process, a supervisor of several) once, not all four pairs:
        # every refused start imports the server (seconds of CPU) and the suite is near its time budget
        for variable, processes in (("PREDMESH_GRPC_ADDR", "auto"), ("PREDMESH_METRICS_ADDR", "1")):
            result = predmesh("serve", env={**env, variable: addr, "PREDMESH_PROCESSES": processes})
            one_line_failure(result, 1, "predmesh serve:", variable, addr, "already in use")
        result = predmesh("gateway", env={**env, "PREDMESH_GATEWAY_ADDR": addr})
        one_line_failure(result, 1, "predmesh gateway:", "PREDMESH_GATEWAY_ADDR", "already in use")
        # the stats listener was left to Envoy: its critical log and exit 1, after the work files were written
        result = predmesh("gateway", env={**env, "PREDMESH_GATEWAY_STATS_ADDR": addr})
        one_line_failure(result, 1, "predmesh gateway:", "PREDMESH_GATEWAY_STATS_ADDR", addr, "already in use")
        # the consumer's metrics and luigid ended with a traceback each (and, under `predmesh up`, one a second)
        result = predmesh("consume", env={**env, "PREDMESH_CONSUMER_METRICS_ADDR": addr})
        one_line_failure(result, 1, "predmesh consume:", "PREDMESH_CONSUMER_METRICS_ADDR", addr, "already in use")
        result = predmesh("batch", "scheduler", env={**env, "PREDMESH_LUIGID_ADDR": addr,
                                                     "PREDMESH_LUIGID_DIR": str(tmp_path / "luigi")})
        one_line_failure(result, 1, "predmesh batch scheduler:", "PREDMESH_LUIGID_ADDR", addr, "already in use")
    assert not (tmp_path / "gw").exists()  # refused before anything was written


def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path):
    """The store is empty, so `serve` trains first: Ctrl-C then (and during the imports) ends cleanly."""
    for wait_for_text in (None, "training the demo model"):
        env = {**os.environ, **isolated(tmp_path), "PREDMESH_PROCESSES": "1", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "cli", "serve"], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                                text=True)
        seen = []
        if wait_for_text is None:
            time.sleep(0.5)  # interpreter up, modules loading
        else:
            assert proc.stderr is not None
            for line in proc.stderr:
                seen.append(line)
                if wait_for_text in line:
                    break
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[1]
        output = "".join(seen) + rest
        assert proc.returncode == 130, output
        assert "Traceback" not in output
        assert output.strip().splitlines()[-1] in ("predmesh: interrupted during start-up",
                                                   "predmesh serve: interrupted during start-up"), output


@pytest.mark.envoy
def test_a_failed_second_gateway_start_leaves_the_running_gateways_files(tmp_path, trained_store):
    work = tmp_path / "gw"
    running = GatewayProc([f"127.0.0.1:{free_port()}"], work).start(healthy=0)
    try:
        before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in work.rglob("*") if p.is_file()
                  and p.name != "gateway.log"}
        assert {p.name for p in before} >= {"envoy.yaml", "openapi.json", "predmesh.binpb", "index.html"}
        env = {"PREDMESH_GATEWAY_DIR": str(work), "PREDMESH_GATEWAY_ADDR": f"127.0.0.1:{running.port}",
               "PREDMESH_GATEWAY_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
               "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
               "PREDMESH_GATEWAY_UPSTREAMS": "127.0.0.1:1", "PREDMESH_GATEWAY_MAX_BODY_BYTES": "2048"}
        one_line_failure(predmesh("gateway", env=env), 1, "already in use")
        after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in work.rglob("*") if p.is_file()
                 and p.name != "gateway.log"}
        assert after == before
        assert running.alive() and (running.envoy_get("/ready") or "").strip() == "LIVE"
    finally:
        running.stop()
