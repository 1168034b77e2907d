"""One serving version and one quality across the fleet: `predmesh up --replicas 3` sharing PostgreSQL behind its
Envoy gateway.

A rollout (admin REST on the gateway's admin listener), a rollback (the SDK) and a pin (`predmesh pin`) each reach
every replica within the poll interval (plus a load); 1,000 requests through the gateway after convergence are all
answered by one version; feedback sent to one replica moves the accuracy every replica exports within one quality
refresh; a replica killed with SIGKILL is restarted by the supervisor and serves the pinned version from its first
call; a version one replica's store lacks leaves that replica serving what it served, counted and alerted on.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests

from predmesh import Client, InvalidArgument
from predmesh.v1 import inference_pb2, inference_pb2_grpc
from tests.conftest import IRIS_ROW
from tests.support.pg import TempSchema
from tests.support.procs import ADMIN_TOKEN, ROOT, WRITER_TOKEN, ServerProc, free_port, wait_for

pytestmark = [pytest.mark.envoy]

POLL_S = 0.5
QUALITY_REFRESH_S = 0.5
CONVERGE_S = POLL_S + 10.0  # the poll interval plus a model load on a busy 2-core machine


def serving(target: str) -> tuple[str, str]:
    """(version served, desired version) as GetModel on one replica answers."""
    with grpc.insecure_channel(target) as channel:
        answer = inference_pb2_grpc.InferenceServiceStub(channel).GetModel(
            inference_pb2.GetModelRequest(model="iris"), timeout=5)
    return answer.model.version, answer.desired.version


def converge(targets: list[str], version: str) -> float:
    """Seconds until every replica serves version (and reports it as desired)."""
    started = time.monotonic()
    wait_for(lambda: all(serving(t) == (version, version) for t in targets), CONVERGE_S, interval=0.05,
             what=f"every replica on version {version}: {[serving(t) for t in targets]}")
    return time.monotonic() - started


def versions_answering(rest: str, n: int = 1000, clients: int = 4) -> dict[str, int]:
    """n predictions through the gateway's REST listener (from a few clients at once, so the gateway balances
    them over every replica): how many each version answered."""
    def send(count: int) -> Counter:
        seen: Counter = Counter()
        with requests.Session() as session:
            for _ in range(count):
                r = session.post(f"{rest}/v1/models/iris:predict", json={"features": IRIS_ROW}, timeout=10)
                assert r.status_code == 200, r.text
                seen[r.json()["prediction"]["model_version"]] += 1
        return seen

    with ThreadPoolExecutor(clients) as pool:
        counts = list(pool.map(send, [n // clients + (i < n % clients) for i in range(clients)]))
    return dict(sum(counts, Counter()))


def scrape(metrics_addr: str, name: str) -> str:
    text = requests.get(f"http://{metrics_addr}/metrics", timeout=5).text
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def gauge(metrics_addr: str, series: str) -> float | None:
    """The value of one series (name and labels exactly as exported), None when absent."""
    for line in scrape(metrics_addr, series.split("{")[0]).splitlines():
        if line.rpartition(" ")[0] == series:
            return float(line.rpartition(" ")[2])
    return None


def migrated(url: str) -> None:
    """`predmesh migrate` once before the replicas start (as the deployment's migration job does)."""
    subprocess.run([sys.executable, "-m", "database", "migrate", "--url", url], cwd=ROOT, check=True, timeout=120,
                   capture_output=True)


def free_run(n: int) -> int:
    """A port p with p .. p+n-1 free (replica k listens on p + k - 1), below the kernel's ephemeral range (a port
    in it can be taken meanwhile as the source port of an outgoing connection)."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    for _ in range(200):
        p = random.randrange(20000, low - n)
        sockets = [socket.socket() for _ in range(n)]
        try:
            for i, sock in enumerate(sockets):
                sock.bind(("127.0.0.1", p + i))
            return p
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {n} adjacent free ports below the ephemeral range")


def healthy_hosts(envoy_admin: str) -> int:
    clusters = requests.get(f"http://{envoy_admin}/clusters?format=json", timeout=2).json()
    return sum(1 for c in clusters["cluster_statuses"] if c["name"] == "inference"
               for h in c["host_statuses"] if not any(k.startswith("failed") and v
                                                      for k, v in h["health_status"].items()))


def pid_listening(port: int) -> int:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    found = re.search(r"pid=(\d+)", out)
    assert found, f"nothing listens on {port}: {out!r}"
    return int(found.group(1))


def failures(metrics_addr: str) -> float:
    return gauge(metrics_addr, 'predmesh_desired_state_failures_total{model="iris"}') or 0.0


def test_up_replicas_follow_rollout_rollback_pin_share_quality_and_survive_a_kill(trained_store, tmp_path):
    store = tmp_path / "models"  # one store for the fleet (on Kubernetes: the shared models volume)
    shutil.copytree(trained_store, store)  # iris 1 (RandomForest), 2 (LogisticRegression, newest)
    grpc_port, metrics_port = free_run(3), free_run(3)
    targets = [f"127.0.0.1:{grpc_port + i}" for i in range(3)]
    metrics = [f"127.0.0.1:{metrics_port + i}" for i in range(3)]
    ports = {name: free_port() for name in ("rest", "admin", "envoy")}
    rest, admin = f"http://127.0.0.1:{ports['rest']}", f"http://127.0.0.1:{ports['admin']}"
    envoy_admin = f"127.0.0.1:{ports['envoy']}"
    with TempSchema() as schema:
        migrated(schema.url)
        env = {**os.environ, "PREDMESH_DATABASE_URL": schema.url, "PREDMESH_MODEL_STORE": str(store),
               "PREDMESH_GRPC_ADDR": targets[0], "PREDMESH_METRICS_ADDR": metrics[0],
               "PREDMESH_GATEWAY_ADDR": f"127.0.0.1:{ports['rest']}",
               "PREDMESH_GATEWAY_ADMIN_ADDR": f"127.0.0.1:{ports['admin']}",
               "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": envoy_admin, "PREDMESH_GATEWAY_HC_INTERVAL_MS": "250",
               "PREDMESH_GATEWAY_RATE_LIMIT_RPS": "0",
               "PREDMESH_DESIRED_STATE_POLL_SECONDS": str(POLL_S),
               "PREDMESH_QUALITY_REFRESH_SECONDS": str(QUALITY_REFRESH_S),
               "PREDMESH_ADMIN_TOKEN": ADMIN_TOKEN, "PREDMESH_WRITER_TOKEN": WRITER_TOKEN,
               "PREDMESH_SPOOL_DIR": str(tmp_path / "spool"), "PREDMESH_DRAIN_SECONDS": "0",
               "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        workdir = tmp_path / "work"  # `predmesh up` keeps its relative state (var/...) here
        workdir.mkdir()
        out = open(tmp_path / "up.log", "w+b")
        proc = subprocess.Popen([sys.executable, "-m", "cli", "up", "--replicas", "3", "--no-consumer", "--no-ui",
                                 "--no-luigid", "--no-prometheus"], cwd=workdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT)

        def log() -> str:
            return (tmp_path / "up.log").read_text(errors="replace")

        t0 = time.monotonic()
        try:
            wait_for(lambda: "parts up; Ctrl-C" in log() or proc.poll() is not None, 90, interval=0.2,
                     what="predmesh up banner")
            assert proc.poll() is None and "4/4 parts up" in log(), log()[-3000:]
            wait_for(lambda: healthy_hosts(envoy_admin) == 3, 30, interval=0.2, what="three replicas in Envoy")
            print(f"[{time.monotonic() - t0:5.1f} s] mesh up")
            # no desired state recorded: each replica serves the newest stored version, and says none is desired
            assert {serving(t) for t in targets} == {("2", "")}

            # rollout to 1 through the admin REST listener (any replica answers; all follow)
            answer = requests.post(f"{admin}/v1/models/iris:rollout", timeout=30,
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                   json={"version": "1", "reason": "test rollout"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["desired"]["version"] == "1" and answer.json()["previous_version"] == "2"
            print(f"rollout converged in {converge(targets, '1'):.2f} s")
            assert versions_answering(rest) == {"1": 1000}

            # rollback through the SDK: back to 2, the version that served before
            with Client(targets[2], admin_token=ADMIN_TOKEN, timeout=30) as client:
                state = client.rollback_model("iris", reason="test rollback")
                # a canary without a share would take no call (and be rolled back for want of evidence)
                with pytest.raises(InvalidArgument, match="needs a candidate_share above 0"):
                    client.rollout_model("iris", "2", candidate="1")
            assert (state.version, state.previous_version) == ("2", "1")
            print(f"rollback converged in {converge(targets, '2'):.2f} s")
            assert versions_answering(rest) == {"2": 1000}

            # pin through the CLI
            pinned = subprocess.run([sys.executable, "-m", "cli", "pin", "iris", "1", "--reason", "hold",
                                     "--server", targets[1]], cwd=ROOT, capture_output=True, text=True,
                                    env=env, timeout=60)
            assert pinned.returncode == 0, pinned.stderr
            assert "version 1 (pinned)" in pinned.stdout, pinned.stdout
            print(f"pin converged in {converge(targets, '1'):.2f} s")
            assert versions_answering(rest) == {"1": 1000}
            print(f"[{time.monotonic() - t0:5.1f} s] rollout, rollback, pin")

            # feedback sent to replica 2 only moves the accuracy replicas 1 and 3 export too, within a refresh
            _feedback_moves_every_replicas_accuracy(targets[1], metrics)
            print(f"[{time.monotonic() - t0:5.1f} s] quality shared")

            # replica 1 killed with SIGKILL: the supervisor restarts it, on the pinned version from its first call
            before = len(log())
            os.kill(pid_listening(grpc_port), signal.SIGKILL)
            wait_for(lambda: "inference-1 exited with -9; restarting it" in log(), 15, interval=0.2,
                     what="the death reported")
            wait_for(lambda: "inference-1 is healthy again" in log(), 60, interval=0.2, what="the replica back")
            assert serving(targets[0]) == ("1", "1")
            restarted = log()[before:]
            assert "serving version 1 (was none)" in restarted and "serving version 2" not in restarted, restarted
            wait_for(lambda: healthy_hosts(envoy_admin) == 3, 30, interval=0.2,
                     what="the restarted replica back in Envoy")
            assert versions_answering(rest) == {"1": 1000}
            # and it exports the fleet's accuracy (read at its start, and on every refresh after)
            wait_for(lambda: gauge(metrics[0], ACCURACY) == gauge(metrics[1], ACCURACY) == 0.5,
                     QUALITY_REFRESH_S + 10, what="the restarted replica's accuracy")
            print(f"[{time.monotonic() - t0:5.1f} s] kill and restart")

            # the history is recorded: who and why
            with Client(targets[1], admin_token=ADMIN_TOKEN) as client:
                state = client.get_desired_state("iris")
            assert (state.version, state.pinned, state.reason, state.serving_version) == ("1", True, "hold", "1")
            for m in metrics:
                assert gauge(m, 'predmesh_model_desired_info{model="iris",version="1"}') == 1.0
        finally:
            proc.send_signal(signal.SIGINT)
            code = proc.wait(60)
            out.close()
        assert code == 0, log()[-3000:]


ACCURACY = 'predmesh_feedback_accuracy{model="iris",version="1"}'
LABELLED = 'predmesh_feedback_predictions{model="iris",version="1"}'


def _feedback_moves_every_replicas_accuracy(target: str, metrics: list[str], n: int = 20) -> None:
    """n predictions and their feedback on one replica: all correct (accuracy 1 on every replica), then half
    overwritten with a wrong label (0.5 on every replica). Only that replica handled a feedback call."""
    with Client(target, writer_token=WRITER_TOKEN, timeout=10) as client:
        ids = {client.predict("iris", IRIS_ROW).prediction_id: "setosa" for _ in range(n)}
        stored = wait_for(lambda: client.submit_feedback_batch(ids).recorded == n, 20,
                          what="the predictions stored (durable spool, then the database writer)")
        assert stored
        wait_for(lambda: [(gauge(m, ACCURACY), gauge(m, LABELLED)) for m in metrics] == [(1.0, n)] * 3,
                 QUALITY_REFRESH_S + 10, what="accuracy 1 on every replica")
        client.submit_feedback_batch(dict.fromkeys(list(ids)[:n // 2], "virginica"))
        wait_for(lambda: [(gauge(m, ACCURACY), gauge(m, LABELLED)) for m in metrics] == [(0.5, n)] * 3,
                 QUALITY_REFRESH_S + 10, what="accuracy 0.5 on every replica")


def test_a_version_missing_from_one_replicas_store_keeps_it_serving_counted(trained_store, tmp_path):
    """Replica b's store lacks version 3: it keeps serving 2, logs why and counts the failure; a rollout back to 2
    converges it again."""
    with TempSchema() as schema:
        migrated(schema.url)
        env = {"PREDMESH_DATABASE_URL": schema.url, "PREDMESH_DESIRED_STATE_POLL_SECONDS": str(POLL_S)}
        stores = {}
        for name in ("a", "b"):
            stores[name] = tmp_path / name / "models"
            shutil.copytree(trained_store, stores[name])
        from inference.models.store import ModelStore
        from inference.models.train import train
        train(ModelStore(stores["a"]), "iris", "lr", seed=3)  # version 3, in a's store only
        a, b = (ServerProc(stores[n], tmp_path / n / "server.log",
                           {**env, "PREDMESH_SPOOL_DIR": str(tmp_path / n / "spool")}) for n in ("a", "b"))
        with a, b:
            assert serving(a.target) == ("3", "") and serving(b.target) == ("2", "")
            with Client(a.target, admin_token=ADMIN_TOKEN, timeout=30) as client:
                client.rollout_model("iris", "3")
            wait_for(lambda: serving(b.target) == ("2", "3"), CONVERGE_S, what="b reads the desired state")
            wait_for(lambda: failures(f"127.0.0.1:{b.metrics_port}") >= 2, CONVERGE_S,
                     what="b counts each poll's failed attempt")
            assert serving(a.target) == ("3", "3")
            assert b.log().count("the desired version 3 cannot serve on this replica, still serving 2") == 1
            with Client(b.target, admin_token=ADMIN_TOKEN, timeout=30) as client:
                client.rollout_model("iris", "2", reason="back")
            converge([a.target, b.target], "2")
