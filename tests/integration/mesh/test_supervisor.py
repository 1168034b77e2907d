"""The `predmesh up` supervisor with real child processes (shell one-liners): restart with backoff, stopping whole
process groups, `predmesh status`, the probe command and the planned Prometheus configuration under promtool.
(The plan, the probes and `--check` in-process: tests/unit/cli/test_up_plan.py.)"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cli import up
from tests.support.procs import ROOT, closed_port, wait_for


def args(*argv):
    return up.parser().parse_args(list(argv))


def process_of(part: up.Part) -> subprocess.Popen:
    """The part's child process (the test started it)."""
    assert part.proc is not None, f"{part.name} has no process"
    return part.proc


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "zombie" not in fh.read().lower()
    except FileNotFoundError:
        return False


def test_a_dead_part_is_reported_and_restarted_with_backoff(tmp_path):
    counter = tmp_path / "starts"
    part = up.Part("flaky", ["sh", "-c", f"echo x >> {counter}; exit 3"])
    messages: list[str] = []
    up.start(part)
    process_of(part).wait(10)
    now = time.monotonic()
    up.supervise_once([part], os.environ, now=now, log=messages.append)
    assert messages == ["predmesh up: flaky exited with 3; restarting it in 1 s"]
    up.supervise_once([part], os.environ, now=now + 0.5, log=messages.append)
    assert len(messages) == 1, "not restarted before its backoff"
    up.supervise_once([part], os.environ, now=now + 1.01, log=messages.append)
    assert messages[-1] == "predmesh up: flaky restarted (restart 1)"
    process_of(part).wait(10)
    up.supervise_once([part], os.environ, now=now + 2, log=messages.append)
    assert messages[-1] == "predmesh up: flaky exited with 3; restarting it in 2 s"   # doubled
    assert counter.read_text().count("x") == 2
    part.backoff = up.BACKOFF_MAX
    part.restart_at = 0
    up.supervise_once([part], os.environ, now=now + 3, log=messages.append)
    assert part.backoff == up.BACKOFF_MAX, "capped"


def test_a_restarted_part_is_announced_healthy_again(tmp_path):
    flag = tmp_path / "healthy"
    part = up.Part("svc", ["sleep", "30"], probe=lambda: (flag.exists(), "flag"))
    messages: list[str] = []
    try:
        up.start(part)
        part.recovering = True
        up.supervise_once([part], os.environ, log=messages.append)
        assert messages == []
        flag.touch()
        part.checked_at = 0
        up.supervise_once([part], os.environ, log=messages.append)
        assert messages == ["predmesh up: svc is healthy again (flag)"]
    finally:
        up.stop_all([part], timeout=5)


def test_a_part_that_may_not_restart_is_only_reported():
    part = up.Part("once", ["sh", "-c", "exit 0"], restartable=False)
    messages: list[str] = []
    up.start(part)
    process_of(part).wait(10)
    up.supervise_once([part], os.environ, log=messages.append)
    assert messages == ["predmesh up: once exited with 0; not restarting it"] and part.proc is None


def test_stop_all_stops_whole_process_groups_even_stubborn_ones(tmp_path):
    pidfile = tmp_path / "child"
    # a part whose own child ignores SIGTERM (as a stuck grandchild would)
    stubborn = up.Part("stubborn", ["sh", "-c", (f"sh -c 'trap \"\" TERM; echo $$ > {pidfile}; "
                                                 "while :; do sleep 0.1; done' & wait")])
    polite = up.Part("polite", ["sleep", "60"])
    up.start(stubborn)
    up.start(polite)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10, what="grandchild pid")
    grandchild = int(pidfile.read_text())
    started = time.monotonic()
    up.stop_all([polite, stubborn], timeout=2)
    assert time.monotonic() - started < 10
    assert process_of(polite).returncode == -signal.SIGTERM
    assert not alive(process_of(stubborn).pid) and not alive(process_of(polite).pid)
    wait_for(lambda: not alive(grandchild), 5, what="the SIGKILLed grandchild gone")   # delivery is asynchronous


def test_stop_all_stops_the_clients_before_the_gateway_and_the_gateway_before_the_replicas(tmp_path):
    """Signalled all at once, Envoy exited at once and a consumer finishing its in-flight jobs got UNAVAILABLE
    until `predmesh up` killed it 20 s later (seen on a mesh stopped under queue load). Now each stage is signalled
    once the stage started after it has exited."""
    def part(name: str, stage: int, linger: float) -> up.Part:
        script = (f"trap 'date +%s%N > {tmp_path / name}.term; sleep {linger}; date +%s%N > {tmp_path / name}.done; "
                  "exit 0' TERM; while :; do sleep 0.05; done")
        return up.Part(name, ["sh", "-c", script], stage=stage)

    replica, gateway, consumer = part("replica", 0, 0), part("gateway", 1, 0), part("consumer", 2, 1.0)
    parts = [replica, gateway, consumer]
    for p in parts:
        up.start(p)
    time.sleep(0.3)  # the traps are set
    up.stop_all(parts, timeout=10)

    def at(name: str, what: str) -> int:
        return int((tmp_path / f"{name}.{what}").read_text())

    assert at("gateway", "term") >= at("consumer", "done"), "the gateway was stopped before the consumer finished"
    assert at("replica", "term") >= at("gateway", "done")
    assert all(process_of(p).returncode == 0 for p in parts)


def test_status_command_probes_without_starting_anything(tmp_path):
    with contextlib.ExitStack() as held:
        grpc, envoy, luigid, amqp = (held.enter_context(closed_port()) for _ in range(4))
        env = {**os.environ, "PREDMESH_GRPC_ADDR": f"127.0.0.1:{grpc}", "PREDMESH_METRICS_ADDR": "",
               "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": f"127.0.0.1:{envoy}", "PREDMESH_LUIGID_ADDR": f"127.0.0.1:{luigid}",
               "PREDMESH_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{amqp}/%2F"}
        result = subprocess.run([sys.executable, "-m", "cli", "status"], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"predmesh mesh: 0/\d+ parts up", result.stdout) and "DOWN" in result.stdout
    assert not (tmp_path / "var").exists(), "--check must not create state"
    assert result.stderr == "", "the report is the output (luigi's `Loaded []` came first)"


@pytest.mark.parametrize("argv", [["--replicas", "0"]])
def test_bad_options_are_refused(argv):
    result = subprocess.run([sys.executable, "-m", "cli", "up", *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "--replicas must be at least 1" in result.stderr


def test_the_probe_command_answers_with_its_exit_code(inproc_server):
    _server, target = inproc_server
    result = subprocess.run([sys.executable, "-m", "cli.probe", "grpc", target], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "SERVING" in result.stdout
    with closed_port() as port:
        result = subprocess.run([sys.executable, "-m", "cli.probe", "http", f"http://127.0.0.1:{port}/"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1


@pytest.mark.prometheus
def test_the_planned_prometheus_configuration_passes_promtool(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"PREDMESH_GRPC_ADDR": "127.0.0.1:41000", "PREDMESH_METRICS_ADDR": "127.0.0.1:42000",
           "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": "127.0.0.1:43901", "PREDMESH_LUIGID_ADDR": "127.0.0.1:44000",
           "PREDMESH_PROMETHEUS_ADDR": "127.0.0.1:45090"}
    prometheus = up.plan(args("--replicas", "2", "--no-consumer", "--no-ui"), env).parts[-1]
    assert prometheus.name == "prometheus" and prometheus.prepare is not None
    prometheus.prepare()
    config = tmp_path / "var" / "prometheus" / "prometheus.yml"
    result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
