"""Hot reload under load (T01) and failed reloads that change nothing (T02), on a real server process."""
from __future__ import annotations

import random
import re
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inference.models.loader import load_estimator, read_manifest
from predmesh import Client, FailedPrecondition
from tests.support import artifacts
from tests.support.load import LoadResult, run_load
from tests.support.procs import ADMIN_TOKEN

pytestmark = pytest.mark.slow
NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def random_row(rng: random.Random) -> dict[str, float]:
    lows, highs = [4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5]
    return {n: round(rng.uniform(lo, hi), 2) for n, lo, hi in zip(NAMES, lows, highs)}


class HealthWatch:
    """Collects every status the server's Health.Watch stream emits."""

    def __init__(self, target: str):
        self.statuses: list[int] = []
        self._channel = grpc.insecure_channel(target)
        self._stream = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(service="predmesh.v1.InferenceService"))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for response in self._stream:
                self.statuses.append(response.status)
        except grpc.RpcError:
            pass

    def close(self) -> list[int]:
        self._stream.cancel()
        self._channel.close()
        self._thread.join(5)
        return self.statuses


def reload_failures(proc) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    match = re.search(r'predmesh_reload_total\{model="iris",result="failure"\} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


def test_hot_reload_under_load_drops_nothing_and_names_the_serving_version(server_proc, model_store):
    """T01 short variant: ≥ 20 s at 160 req/s, 6 reloads alternating RandomForest (v1) and LogisticRegression (v2)."""
    estimators = {}
    for version in ("1", "2"):
        path = model_store / "iris" / version
        estimators[version] = load_estimator(path, read_manifest(path, None))
    rng = random.Random(7)
    rows: dict[str, dict[str, float]] = {}
    watch = HealthWatch(server_proc.target)
    done = threading.Event()
    reloads = []

    with Client(server_proc.target, timeout=5) as client, \
            Client(server_proc.target, timeout=5, admin_token=ADMIN_TOKEN) as admin:
        def call(request_id):
            row = rows.setdefault(request_id, random_row(rng))
            return client.predict("iris", row, request_id=request_id)

        def reloader():
            for i in range(6):
                if done.wait(3.0):
                    return
                target = "1" if i % 2 == 0 else "2"
                started = time.monotonic()
                result = admin.reload_model("iris", target, timeout=10)
                reloads.append((target, result.model.version, time.monotonic() - started))

        thread = threading.Thread(target=reloader)
        thread.start()
        result = run_load(call, rate=160, duration=22)
        done.set()
        thread.join(30)
    statuses = watch.close()

    assert len(result.outcomes) >= 150 * 20
    assert result.failed == [], result.failed[:3]
    assert len(reloads) >= 5 and all(want == got for want, got, _ in reloads), reloads
    versions = {o.value.model_version for o in result.ok}
    assert versions == {"1", "2"}, versions
    # The version a response names really served it: its probabilities are that version's output for the row.
    for version, estimator in estimators.items():
        answered = [o.value for o in result.ok if o.value.model_version == version]
        expected = estimator.predict_proba(np.array([[rows[p.request_id][n] for n in NAMES] for p in answered]))
        got = np.array([[p.probabilities[c] for c in ("setosa", "versicolor", "virginica")] for p in answered])
        mismatched = np.flatnonzero(~np.isclose(got, expected, atol=1e-9).all(axis=1))
        assert mismatched.size == 0, (version, [answered[i] for i in mismatched[:3]])
    assert health_pb2.HealthCheckResponse.NOT_SERVING not in statuses
    assert statuses and statuses[0] == health_pb2.HealthCheckResponse.SERVING
    print(f"\nT01: {len(result.outcomes)} requests, 0 failed, p50 {result.percentile(50) * 1000:.1f} ms, "
          f"p99 {result.percentile(99) * 1000:.1f} ms, reloads {[(v, round(s * 1000)) for _, v, s in reloads]}")


def test_failed_reloads_change_nothing_under_load(server_proc, model_store, tmp_path):
    """T02: truncated file, hash mismatch, 3-feature model, failing smoke test → FAILED_PRECONDITION, no effect."""
    bad = {
        "11": artifacts.truncated(model_store, "iris", "2", "11"),
        "12": artifacts.hash_mismatch(model_store, "iris", "2", "1", "12"),
        "13": artifacts.wrong_feature_count(model_store, "iris", "2", "13"),
        "14": artifacts.failing_smoke_test(model_store, "iris", "2", "14"),
    }
    failures_before = reload_failures(server_proc)
    stop = threading.Event()
    outcome: dict[str, LoadResult] = {}
    with Client(server_proc.target, timeout=5) as client, \
            Client(server_proc.target, timeout=10, admin_token=ADMIN_TOKEN) as admin:
        rng = random.Random(3)
        loader = threading.Thread(target=lambda: outcome.setdefault("load", run_load(
            lambda rid: client.predict("iris", random_row(rng), request_id=rid), rate=100, duration=60,
            stop=stop)))
        loader.start()
        time.sleep(1)
        reasons = {}
        for version in bad:
            started = time.monotonic()
            with pytest.raises(FailedPrecondition) as exc:
                admin.reload_model("iris", version)
            assert time.monotonic() - started < 5
            reasons[version] = exc.value.message
            assert client.get_model("iris").version == "2"
        time.sleep(1)
        stop.set()
        loader.join(30)
    load = outcome["load"]
    assert len(load.outcomes) > 100 and load.failed == [], load.failed[:3]
    assert {o.value.model_version for o in load.ok} == {"2"}
    assert "skops" in reasons["11"]
    assert "does not match the manifest" in reasons["12"]
    assert "expects 3 features" in reasons["13"]
    assert "smoke test failed" in reasons["14"]
    assert reload_failures(server_proc) - failures_before == 4
