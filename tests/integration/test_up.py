"""`predmesh up --replicas 2`: replicas + gateway start, REST answers through Envoy, SIGINT stops everything."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import IRIS_ROW
from tests.support.procs import ROOT, free_port, wait_for

pytestmark = pytest.mark.envoy


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


def children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    found = {int(p) for p in out}
    for child in list(found):
        found |= children(child)
    return found


def test_up_with_two_replicas_serves_rest_and_stops_everything(model_store, tmp_path):
    grpc_port, rest_port, envoy_admin = two_free_ports(), free_port(), free_port()
    env = {**os.environ, "PREDMESH_GRPC_ADDR": f"127.0.0.1:{grpc_port}", "PREDMESH_METRICS_ADDR": "",
           "PREDMESH_MODEL_STORE": str(model_store), "PREDMESH_GATEWAY_ADDR": f"127.0.0.1:{rest_port}",
           "PREDMESH_GATEWAY_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
           "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": f"127.0.0.1:{envoy_admin}",
           "PREDMESH_GATEWAY_DIR": str(tmp_path / "gw"), "PREDMESH_GATEWAY_HC_INTERVAL_MS": "250",
           "PREDMESH_DATABASE_URL": f"sqlite:///{tmp_path / 'predmesh.db'}",
           "PREDMESH_SPOOL_DIR": str(tmp_path / "spool"), "PREDMESH_DRAIN_SECONDS": "0",
           "PYTHONUNBUFFERED": "1"}
    out = open(tmp_path / "up.log", "w+b")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--replicas", "2"], cwd=ROOT, env=env,
                            stdout=out, stderr=subprocess.STDOUT)
    try:
        log = lambda: (tmp_path / "up.log").read_text(errors="replace")  # noqa: E731
        wait_for(lambda: "REST http://" in log() or proc.poll() is not None, 60, what="predmesh up banner")
        assert proc.poll() is None, log()
        assert f"REST http://127.0.0.1:{rest_port}/v1/models" in log()
        assert f"gRPC 127.0.0.1:{grpc_port}" in log() and f"gRPC 127.0.0.1:{grpc_port + 1}" in log()
        url = f"http://127.0.0.1:{rest_port}/v1/models/iris:predict"
        wait_for(lambda: requests.post(url, json={"features": IRIS_ROW}, timeout=2).status_code == 200, 30,
                 interval=0.2, what="REST through the gateway")
        assert requests.get(f"http://127.0.0.1:{rest_port}/openapi.json", timeout=2).status_code == 200
        wait_for(lambda: healthy_hosts(envoy_admin) == 2, 30, interval=0.2, what="both replicas healthy in Envoy")
        started = children(proc.pid)
        assert len(started) >= 4  # 2 replicas, the gateway launcher and envoy
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        out.close()
    assert code == 0
    time.sleep(0.2)
    alive = [p for p in started if os.path.exists(f"/proc/{p}") and
             "zombie" not in open(f"/proc/{p}/status").read().lower()]
    assert not alive, f"left running: {alive}"
