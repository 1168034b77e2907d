"""REST through the gateway reaches every process of a server group: the processes share one port (SO_REUSEPORT)
and the kernel spreads connections, not requests, so Envoy must not carry all REST traffic on one connection."""
from __future__ import annotations

import json
import subprocess

import grpc

from predmesh.oip import grpc_predict_v2_pb2 as pb
from predmesh.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.conftest import IRIS_ROW
from tests.support.gateway import GatewayProc
from tests.support.procs import ServerProc, wait_for


def answering_pids(target: str, tries: int = 60) -> set[int]:
    """Processes that answer over fresh connections (each channel is a new connection)."""
    seen: set[int] = set()
    for _ in range(tries):
        with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            _, call = pb_grpc.GRPCInferenceServiceStub(channel).ServerMetadata.with_call(
                pb.ServerMetadataRequest(), timeout=5)
            seen.add(int(dict(call.trailing_metadata())["predmesh-pid"]))
        if len(seen) >= 2:
            break
    return seen


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100  # clock ticks (USER_HZ)


def test_rest_load_through_the_gateway_is_served_by_both_processes(model_store, tmp_path):
    with ServerProc(model_store, tmp_path / "server.log",
                    env={"PREDMESH_PROCESSES": "2", "PREDMESH_PERSISTENCE": "off"}) as server:  # starts it
        wait_for(lambda: len(answering_pids(server.target)) == 2, timeout=60, interval=0.3, what="both processes")
        pids = answering_pids(server.target)
        gateway = GatewayProc([server.target], tmp_path / "gw", env={"PREDMESH_GATEWAY_RATE_LIMIT_RPS": "0"}).start()
        try:
            script = tmp_path / "post.lua"
            script.write_text(f"wrk.method = 'POST'\nwrk.body = {json.dumps(json.dumps({'features': IRIS_ROW}))}\n"
                              "wrk.headers['Content-Type'] = 'application/json'\n")
            before = {pid: cpu_seconds(pid) for pid in pids}
            out = subprocess.run(["wrk", "-t", "1", "-c", "64", "-d", "3s", "-s", str(script),
                                  f"{gateway.url}/v1/models/iris:predict"], capture_output=True, text=True, timeout=60)
            used = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
        finally:
            gateway.stop()
    assert "Non-2xx" not in out.stdout and "requests in" in out.stdout, out.stdout
    total = sum(used.values())
    assert total > 0.5, f"the load did not reach the server: {used}\n{out.stdout}"
    # each process does a real share of the work (one connection for everything would leave one idle)
    assert min(used.values()) > 0.2 * total, f"CPU seconds per process during REST load: {used}"
