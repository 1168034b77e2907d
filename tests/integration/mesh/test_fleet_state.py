"""One serving version across the fleet: three server processes sharing PostgreSQL behind the Envoy gateway.

A rollout (admin REST on the gateway's admin listener), a rollback (the SDK) and a pin (`predmesh pin`) each reach
every replica within the poll interval (plus a load); 1,000 requests through the gateway after convergence are all
answered by one version; a replica killed with SIGKILL and started again serves the pinned version from its first
call; a version one replica's store lacks leaves that replica serving what it served, counted and alerted on.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

import grpc
import requests

from predmesh import Client
from predmesh.v1 import inference_pb2, inference_pb2_grpc
from tests.conftest import IRIS_ROW
from tests.support.gateway import GatewayProc
from tests.support.pg import TempSchema
from tests.support.procs import ADMIN_TOKEN, ROOT, ServerProc, free_port, wait_for

POLL_S = 0.5
CONVERGE_S = POLL_S + 10.0  # the poll interval plus a model load on a busy 2-core machine


def serving(target: str) -> tuple[str, str]:
    """(version served, desired version) as GetModel on one replica answers."""
    with grpc.insecure_channel(target) as channel:
        answer = inference_pb2_grpc.InferenceServiceStub(channel).GetModel(
            inference_pb2.GetModelRequest(model="iris"), timeout=5)
    return answer.model.version, answer.desired.version


def converge(replicas: list[ServerProc], version: str) -> float:
    """Seconds until every replica serves version (and reports it as desired)."""
    started = time.monotonic()
    wait_for(lambda: all(serving(r.target) == (version, version) for r in replicas), CONVERGE_S, interval=0.05,
             what=f"every replica on version {version}: {[serving(r.target) for r in replicas]}")
    return time.monotonic() - started


def versions_answering(gateway: GatewayProc, n: int = 1000) -> dict[str, int]:
    """n predictions through the gateway's REST listener: how many each version answered."""
    seen: dict[str, int] = {}
    with requests.Session() as session:
        for _ in range(n):
            r = session.post(f"{gateway.url}/v1/models/iris:predict", json={"features": IRIS_ROW}, timeout=10)
            assert r.status_code == 200, r.text
            version = r.json()["prediction"]["model_version"]
            seen[version] = seen.get(version, 0) + 1
    return seen


def metric(replica: ServerProc, name: str) -> str:
    text = requests.get(f"http://127.0.0.1:{replica.metrics_port}/metrics", timeout=5).text
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def migrated(url: str) -> None:
    """`predmesh migrate` once before the replicas start (as the deployment's migration job does)."""
    subprocess.run([sys.executable, "-m", "database", "migrate", "--url", url], cwd=ROOT, check=True, timeout=120,
                   capture_output=True)


def failures(replica: ServerProc) -> float:
    found = metric(replica, 'predmesh_desired_state_failures_total{model="iris"}')
    return float(found.split()[-1]) if found else 0.0


def test_rollout_rollback_pin_reach_every_replica_and_survive_a_kill(trained_store, tmp_path):
    store = tmp_path / "models"  # one store for the fleet (on Kubernetes: the shared models volume)
    shutil.copytree(trained_store, store)  # iris 1 (RandomForest), 2 (LogisticRegression, newest)
    with TempSchema() as schema:
        migrated(schema.url)
        env = {"PREDMESH_DATABASE_URL": schema.url, "PREDMESH_DESIRED_STATE_POLL_SECONDS": str(POLL_S)}
        replicas = []
        for i in range(3):
            (tmp_path / f"r{i}").mkdir()
            replicas.append(ServerProc(store, tmp_path / f"r{i}" / "server.log",
                                       {**env, "PREDMESH_SPOOL_DIR": str(tmp_path / f"r{i}" / "spool")},
                                       grpc_port=free_port()))
        gateway = None
        try:
            for r in replicas:
                r.start()
            gateway = GatewayProc([r.target for r in replicas], tmp_path / "gw",
                                  env={"PREDMESH_GATEWAY_RATE_LIMIT_RPS": "0"}).start()
            # no desired state recorded: each replica serves the newest stored version, and says none is desired
            assert {serving(r.target) for r in replicas} == {("2", "")}

            # rollout to 1 through the admin REST listener (any replica answers; all follow)
            answer = requests.post(f"{gateway.admin_url}/v1/models/iris:rollout", timeout=30,
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                   json={"version": "1", "reason": "test rollout"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["desired"]["version"] == "1" and answer.json()["previous_version"] == "2"
            took = converge(replicas, "1")
            print(f"rollout converged in {took:.2f} s")
            assert versions_answering(gateway) == {"1": 1000}

            # rollback through the SDK: back to 2, the version that served before
            with Client(replicas[2].target, admin_token=ADMIN_TOKEN, timeout=30) as client:
                state = client.rollback_model("iris", reason="test rollback")
            assert (state.version, state.previous_version) == ("2", "1")
            took = converge(replicas, "2")
            print(f"rollback converged in {took:.2f} s")
            assert versions_answering(gateway) == {"2": 1000}

            # pin through the CLI
            out = subprocess.run([sys.executable, "-m", "cli", "pin", "iris", "1", "--reason", "hold",
                                  "--server", replicas[1].target], cwd=ROOT, capture_output=True, text=True,
                                 env={**replicas[1].env, "PREDMESH_ADMIN_TOKEN": ADMIN_TOKEN}, timeout=60)
            assert out.returncode == 0, out.stderr
            assert "version 1 (pinned)" in out.stdout, out.stdout
            took = converge(replicas, "1")
            print(f"pin converged in {took:.2f} s")
            assert versions_answering(gateway) == {"1": 1000}

            # a replica killed with SIGKILL and started again serves the pinned version from its start-up load
            victim = replicas[0]
            victim.kill()
            before = len(victim.log())
            victim.start()
            assert serving(victim.target) == ("1", "1")
            restarted = victim.log()[before:]
            assert "serving version 1 (was none)" in restarted and "serving version 2" not in restarted
            wait_for(lambda: gateway.healthy_hosts() == 3, 30, what="the restarted replica back in Envoy")
            assert versions_answering(gateway) == {"1": 1000}

            # the history is recorded: who and why
            with Client(replicas[1].target, admin_token=ADMIN_TOKEN) as client:
                state = client.get_desired_state("iris")
            assert (state.version, state.pinned, state.reason, state.serving_version) == ("1", True, "hold", "1")
            for replica in replicas:
                assert 'predmesh_model_desired_info{model="iris",version="1"} 1.0' in metric(
                    replica, "predmesh_model_desired_info")
        finally:
            if gateway is not None:
                gateway.stop()
            for r in replicas:
                r.close()


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
            wait_for(lambda: failures(b) >= 2, CONVERGE_S, what="b counts each poll's failed attempt")
            assert serving(a.target) == ("3", "3")
            assert b.log().count("the desired version 3 cannot serve on this replica, still serving 2") == 1
            with Client(b.target, admin_token=ADMIN_TOKEN, timeout=30) as client:
                client.rollout_model("iris", "2", reason="back")
            converge([a, b], "2")
