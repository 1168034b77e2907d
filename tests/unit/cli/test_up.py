"""The `predmesh up` supervisor with real child processes (shell one-liners): plan, probes, restart with
backoff, stopping whole process groups, and `--check`."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from cli import up
from cli.probe import grpc_health, http_ok
from tests.support.procs import ROOT, free_port, wait_for


def args(*argv):
    return up.parser().parse_args(list(argv))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "zombie" not in fh.read().lower()
    except FileNotFoundError:
        return False


def test_plan_places_replicas_on_adjacent_ports_behind_the_gateway(monkeypatch):
    env = {"PREDMESH_GRPC_ADDR": "127.0.0.1:41000", "PREDMESH_METRICS_ADDR": "127.0.0.1:42000",
           "PREDMESH_GATEWAY_ADDR": "127.0.0.1:43000", "PREDMESH_LUIGID_ADDR": "127.0.0.1:44000"}
    mesh = up.plan(args("--replicas", "3", "--no-consumer", "--no-ui", "--no-prometheus"), env)
    names = [p.name for p in mesh.parts]
    assert names == ["inference-1", "inference-2", "inference-3", "gateway", "luigid"]
    assert [p.env["PREDMESH_GRPC_ADDR"] for p in mesh.parts[:3]] == \
        ["127.0.0.1:41000", "127.0.0.1:41001", "127.0.0.1:41002"]
    assert mesh.parts[2].env["PREDMESH_METRICS_ADDR"] == "127.0.0.1:42002"
    assert all(p.env["PREDMESH_PROCESSES"] == "1" for p in mesh.parts[:3])   # N replicas, one process each
    single = up.plan(args("--no-consumer", "--no-ui", "--no-prometheus", "--no-luigid"), env)
    assert "PREDMESH_PROCESSES" not in single.parts[0].env                   # one replica: the server's default
    chosen = up.plan(args("--replicas", "2", "--no-consumer", "--no-ui", "--no-prometheus", "--no-luigid"),
                     {**env, "PREDMESH_PROCESSES": "2"})
    assert "PREDMESH_PROCESSES" not in chosen.parts[0].env                   # an explicit choice is kept
    assert mesh.parts[3].env["PREDMESH_GATEWAY_UPSTREAMS"] == "127.0.0.1:41000,127.0.0.1:41001,127.0.0.1:41002"
    assert [p.stage for p in mesh.parts] == [0, 0, 0, 1, 2]
    assert all(p.core for p in mesh.parts[:4]) and not mesh.parts[4].core
    assert "--port" in mesh.parts[4].argv or mesh.parts[4].argv[-1] == "scheduler"
    assert any("--no-consumer" in n for n in mesh.notes) and any("--no-ui" in n for n in mesh.notes)
    text = up.report(mesh, {})
    assert "gRPC 127.0.0.1:41002" in text and "REST http://127.0.0.1:43000/v1/models" in text
    assert "http://127.0.0.1:44000/" in text


def test_the_consumer_is_started_only_when_the_broker_answers(monkeypatch):
    port = free_port()                                   # nothing listens there
    env = {"PREDMESH_AMQP_URL": f"amqp://guest:secret@127.0.0.1:{port}/%2F"}
    mesh = up.plan(args("--no-gateway", "--no-luigid", "--no-ui", "--no-prometheus"), env)
    assert "consumer" not in [p.name for p in mesh.parts]
    note = next(n for n in mesh.notes if n.startswith("consumer"))
    assert "not reachable" in note and "secret" not in note and "***" in note


def test_probes_say_why_a_part_is_down(inproc_server):
    _server, target = inproc_server
    assert grpc_health(target) == (True, "gRPC health SERVING")
    ok, detail = grpc_health(f"127.0.0.1:{free_port()}", timeout=0.5)
    assert not ok and "UNAVAILABLE" in detail
    ok, detail = http_ok(f"http://127.0.0.1:{free_port()}/", timeout=0.5)
    assert not ok and "no answer" in detail
    result = subprocess.run([sys.executable, "-m", "cli.probe", "grpc", target], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "SERVING" in result.stdout
    result = subprocess.run([sys.executable, "-m", "cli.probe", "http", f"http://127.0.0.1:{free_port()}/"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1


def test_a_dead_part_is_reported_and_restarted_with_backoff(tmp_path):
    counter = tmp_path / "starts"
    part = up.Part("flaky", ["sh", "-c", f"echo x >> {counter}; exit 3"])
    messages: list[str] = []
    up.start(part)
    assert part.proc is not None
    part.proc.wait(10)
    now = time.monotonic()
    up.supervise_once([part], os.environ, now=now, log=messages.append)
    assert messages == ["predmesh up: flaky exited with 3; restarting it in 1 s"]
    up.supervise_once([part], os.environ, now=now + 0.5, log=messages.append)
    assert len(messages) == 1, "not restarted before its backoff"
    up.supervise_once([part], os.environ, now=now + 1.01, log=messages.append)
    assert messages[-1] == "predmesh up: flaky restarted (restart 1)"
    assert part.proc is not None
    part.proc.wait(10)
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
    assert part.proc is not None
    part.proc.wait(10)
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
    assert polite.proc is not None and stubborn.proc is not None
    assert polite.proc.returncode == -signal.SIGTERM
    assert not alive(stubborn.proc.pid) and not alive(polite.proc.pid)
    wait_for(lambda: not alive(grandchild), 5, what="the SIGKILLed grandchild gone")   # delivery is asynchronous


def test_check_reports_each_part_and_fails_when_one_is_down(inproc_server, capsys):
    _server, target = inproc_server
    down = f"127.0.0.1:{free_port()}"
    mesh = up.Plan([up.Part("inference", [], probe=lambda: grpc_health(target), urls=[f"gRPC {target}"]),
                    up.Part("luigid", [], probe=lambda: http_ok(f"http://{down}/api/task_list"))],
                   ["dashboard: not in this checkout"])
    assert up.check(mesh) == 1
    out = capsys.readouterr().out
    assert "1/2 parts up" in out
    assert "inference    UP    gRPC health SERVING" in out and "luigid       DOWN  no answer" in out
    assert "- dashboard: not in this checkout" in out
    assert up.check(up.Plan(mesh.parts[:1], [])) == 0


def test_status_command_probes_without_starting_anything(tmp_path):
    env = {**os.environ, "PREDMESH_GRPC_ADDR": f"127.0.0.1:{free_port()}", "PREDMESH_METRICS_ADDR": "",
           "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
           "PREDMESH_LUIGID_ADDR": f"127.0.0.1:{free_port()}",
           "PREDMESH_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"}
    result = subprocess.run([sys.executable, "-m", "cli", "status"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"predmesh mesh: 0/\d+ parts up", result.stdout) and "DOWN" in result.stdout
    assert not (tmp_path / "var").exists(), "--check must not create state"


@pytest.mark.parametrize("argv", [["--replicas", "0"]])
def test_bad_options_are_refused(argv):
    result = subprocess.run([sys.executable, "-m", "cli", "up", *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "--replicas must be at least 1" in result.stderr


def test_prometheus_is_planned_with_every_part_as_a_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"PREDMESH_GRPC_ADDR": "127.0.0.1:41000", "PREDMESH_METRICS_ADDR": "127.0.0.1:42000",
           "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": "127.0.0.1:43901", "PREDMESH_LUIGID_ADDR": "127.0.0.1:44000",
           "PREDMESH_PROMETHEUS_ADDR": "127.0.0.1:45090"}
    mesh = up.plan(args("--replicas", "2", "--no-consumer", "--no-ui"), env)
    assert up.shutil.which("prometheus"), "scripts/setup.sh installs Debian's prometheus"
    prometheus = mesh.parts[-1]
    assert prometheus.name == "prometheus" and "--web.listen-address=127.0.0.1:45090" in prometheus.argv
    assert not (tmp_path / "var").exists(), "nothing is written before the part starts"
    assert prometheus.prepare is not None
    prometheus.prepare()
    import json
    targets = tmp_path / "var" / "prometheus" / "targets"
    assert json.loads((targets / "inference.json").read_text())[0]["targets"] == \
        ["127.0.0.1:42000", "127.0.0.1:42001"]
    assert json.loads((targets / "envoy.json").read_text())[0]["targets"] == ["127.0.0.1:43901"]
    luigid = json.loads((targets / "luigid.json").read_text())
    assert luigid == [{"targets": ["127.0.0.1:44000"], "labels": {}}]
    assert json.loads((targets / "consumer.json").read_text()) == []          # --no-consumer
    config = tmp_path / "var" / "prometheus" / "prometheus.yml"
    result = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
