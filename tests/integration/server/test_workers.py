"""PREDMESH_PROCESSES=2: two real processes share the port, metrics add up, a reload reaches both, SIGTERM drains."""
from __future__ import annotations

import os
import signal
import urllib.request

import grpc
import numpy as np
import pytest

from predmesh import Client
from predmesh.oip import grpc_predict_v2_pb2 as pb
from predmesh.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.conftest import IRIS_ROW
from tests.support.procs import ADMIN_TOKEN, ServerProc, wait_for

PID_HEADER = "predmesh-pid"


def ask(target: str) -> tuple[int, str]:
    """(pid, serving version of iris) from one process: each new channel is a new connection."""
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ServerMetadata.with_call(pb.ServerMetadataRequest(), timeout=5)
        pid = int(dict(call.trailing_metadata())[PID_HEADER])
        version = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"), timeout=5).versions[0]
        tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 4])
        stub.ModelInfer(pb.ModelInferRequest(model_name="iris", inputs=[tensor], raw_input_contents=[
            np.array([list(IRIS_ROW.values())], dtype="<f4").tobytes()]), timeout=5)
        return pid, version


def versions_by_pid(target: str, tries: int = 60) -> dict[int, str]:
    """Ask over fresh connections until two processes answered (SO_REUSEPORT spreads connections)."""
    seen: dict[int, str] = {}
    for _ in range(tries):
        pid, version = ask(target)
        seen[pid] = version
        if len(seen) >= 2:
            break
    return seen


def metrics_text(proc: ServerProc) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5).read().decode()


def metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def group(model_store, tmp_path):
    env = {"PREDMESH_PROCESSES": "2", "PREDMESH_RELOAD_POLL_SECONDS": "0.2",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    with ServerProc(model_store, tmp_path / "server.log", env=env) as proc:
        # ServerProc waits for the first process to serve; the second may still be loading its models.
        wait_for(lambda: len(versions_by_pid(proc.target)) == 2, timeout=60, interval=0.3,
                 what="both processes serving")
        yield proc
        proc.terminate(timeout=30)  # graceful: the supervisor stops its workers


def test_two_processes_serve_aggregate_metrics_and_all_take_a_reload(group):
    seen = versions_by_pid(group.target)
    assert len(seen) == 2, f"expected two distinct serving processes, saw {seen}"
    assert group.pid not in seen, "the supervisor itself does not serve"
    assert set(seen.values()) == {"2"}

    # Metrics: one endpoint, counts from both processes added up.
    before = metrics_text(group)
    calls = 0
    pids: set[int] = set()
    while len(pids) < 2 or calls < 10:
        pids.add(ask(group.target)[0])
        calls += 1
    after = metrics_text(group)
    for name, labels in (("grpc_server_handled_total", {"grpc_method": "ModelInfer", "grpc_code": "OK"}),
                         ("predmesh_predictions_total", {"model": "iris"})):
        assert metric(after, name, **labels) - metric(before, name, **labels) == calls, name
    assert metric(after, "predmesh_model_info", model="iris", version="2") == 1

    # A reload handled by one process reaches the other through the serving pointer.
    with Client(group.target, timeout=10, admin_token=ADMIN_TOKEN) as admin:
        admin.reload_model("iris", "1")
    wait_for(lambda: set(versions_by_pid(group.target).values()) == {"1"} and
             len(versions_by_pid(group.target)) == 2, timeout=20, what="both processes serving version 1")
    text = metrics_text(group)
    assert metric(text, "predmesh_model_info", model="iris", version="1") == 1
    assert metric(text, "predmesh_model_info", model="iris", version="2") == 0

    # SIGTERM stops the whole group cleanly.
    assert group.terminate(timeout=30) == 0
    for pid in seen:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_each_worker_runs_all_its_threads_on_its_own_cpu(group):
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        pytest.skip("pinning needs at least two allowed CPUs")  # cpu_plan's unit test covers this case
    cpus = {}
    for pid in versions_by_pid(group.target):
        per_thread = {tid: frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}
        assert len(per_thread) > 3, "a serving process has handler, poller and writer threads"
        assert len(set(per_thread.values())) == 1, f"worker {pid}: threads on different CPU sets {per_thread}"
        [cpus[pid]] = set(per_thread.values())
    assert all(len(c) == 1 and c <= allowed for c in cpus.values()), cpus
    assert len(set(cpus.values())) == 2, f"both workers on the same CPU: {cpus}"
    assert os.sched_getaffinity(group.pid) == allowed, "the supervisor itself stays unpinned"


def test_a_killed_worker_is_replaced(group):
    first = versions_by_pid(group.target)
    assert len(first) == 2
    victim = next(iter(first))
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        try:  # connections queued on the killed listener are reset: that is what SIGKILL costs
            now = versions_by_pid(group.target)
        except grpc.RpcError:
            return False
        return len(now) == 2 and victim not in now
    wait_for(replaced, timeout=30, interval=0.3, what="a replacement worker")

    # Even a supervisor killed with SIGKILL leaves no worker behind: they get SIGTERM and drain.
    workers = list(versions_by_pid(group.target))
    group.kill()
    wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=30, interval=0.2,
             what="the orphaned workers to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_group_that_cannot_serve_gives_up(model_store, tmp_path):
    """Workers that die right after start (here: the port is taken without SO_REUSEPORT) stop the group, exit 1."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = ServerProc(model_store, tmp_path / "server.log", grpc_port=taken.getsockname()[1],
                          env={"PREDMESH_PROCESSES": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")})
        with pytest.raises(RuntimeError, match="exited with 1"):
            proc.start(timeout=90)
        proc.close()


def test_default_is_one_process_per_allowed_cpu_with_the_native_runtime(model_store, tmp_path):
    """No PREDMESH_PROCESSES / PREDMESH_RUNTIME: as many serving processes as CPUs this process may use, each
    scoring with the verified native kernels (the fast configuration is the default)."""
    cpus = len(os.sched_getaffinity(0))
    env = {k: v for k, v in os.environ.items() if k not in ("PREDMESH_PROCESSES", "PREDMESH_RUNTIME")}
    proc = ServerProc(model_store, tmp_path / "server.log", env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")})
    proc.env = {**env, **{k: v for k, v in proc.env.items() if k not in ("PREDMESH_PROCESSES", "PREDMESH_RUNTIME")}}
    proc.start(timeout=90)  # several processes load and verify their models at once: give them time
    try:
        seen: dict[int, str] = {}
        wait_for(lambda: len(seen.update(versions_by_pid(proc.target)) or seen) >= cpus, timeout=90, interval=0.3,
                 what=f"{cpus} processes serving")
        assert len(seen) == cpus
        assert proc.terminate(timeout=30) == 0
    finally:
        proc.close()
    log = proc.log()
    assert f"predmesh inference: {cpus} processes sharing" in log or cpus == 1
    assert log.count("native kernel verified") >= cpus  # each process scores iris with the verified kernel


def test_spread_connections_reach_both_processes(group):
    """SO_REUSEPORT hands a new connection to a process by a hash of its ports: two connections reached one process
    of two in 7 of 20 tries (so a client's work went to one process). predmesh.spread asks each connection which
    process it reached (ListModels' predmesh-pid) and connects again until both are held; the batch's Clients and
    the queue consumer's connections are such spreads."""
    from batch.scoring import Clients
    from batch.settings import BatchSettings
    from predmesh.spread import Spread

    settings = BatchSettings(server=group.target, channels=2)
    for _ in range(8):  # left to the kernel, all 8 spread: (1/2)^8 at best
        with Clients(settings) as clients:
            pids = [c.server_pid() for c in clients._spread.connections]
            assert clients.processes == dict.fromkeys(pids, 1), (clients.processes, pids)
            assert len(set(pids)) == 2 and group.pid not in pids
    with Client(group.target) as client:  # the SDK call alone: a pid, the same one on the same connection
        assert client.server_pid() == client.server_pid() != group.pid
    # without own connections, gRPC shares one between equal clients: both reach one process, and Spread gives up
    with Spread(lambda: Client(group.target), 2) as shared:
        assert len(shared.processes) == 1 and sum(shared.processes.values()) == 2
    with Spread(lambda: Client(group.target, own_connection=True), 2) as own:
        assert sorted(own.processes.values()) == [1, 1]


@pytest.mark.rabbitmq
def test_the_queue_consumers_connections_reach_both_processes(group, tmp_path):
    """The consumer used to hold one connection, so one process of a group scored every window; its connections are
    now a spread (PREDMESH_CONSUMER_CONNECTIONS, 2), and it says which processes they reached."""
    import re

    from predmesh import jobs
    from predmesh.publisher import Publisher
    from tests.support.queue import Broker, ConsumerProc, shared_amqp_url, unique_prefix

    prefix = unique_prefix()
    broker = Broker(shared_amqp_url(), prefix)
    try:
        with ConsumerProc(group.target, broker.url, prefix, tmp_path / "consumer.log") as consumer:
            found = re.search(r"2 connection\(s\) to \S+; server processes reached: pid (\d+) \(1\), pid (\d+) \(1\)",
                              consumer.log())
            assert found, consumer.log()[-2000:]
            assert {int(found[1]), int(found[2])} == set(versions_by_pid(group.target))
            with Publisher(broker.url, prefix=prefix) as pub:
                ids = [pub.publish(jobs.predict_job("iris", IRIS_ROW), message_id=f"spread-{i}", reply=True)
                       for i in range(40)]
                assert set(pub.wait_results(ids, timeout=30)) == set(ids)
    finally:
        broker.delete_topology()
