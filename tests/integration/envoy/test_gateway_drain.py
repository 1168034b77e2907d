"""T04: two replicas behind Envoy under load; SIGTERM one: no client-visible error, no lost prediction."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import requests

from tests.conftest import IRIS_ROW
from tests.support.gateway import GatewayProc
from tests.support.load import run_load
from tests.support.procs import HealthProbe, ServerProc

pytestmark = [pytest.mark.envoy, pytest.mark.slow]

RATE = 200
DURATION = 4.0
DRAIN_S = 2.0
GRACE_S = 3.0
HC_INTERVAL_S = 0.25
HC_UNHEALTHY = 2


def rest_predictions(metrics_port: int) -> float | None:
    """predmesh_predictions_total{transport="rest"} of one replica, or None if it does not answer."""
    try:
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).text
    except requests.RequestException:
        return None
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith("predmesh_predictions_total{") and 'transport="rest"' in line)


def test_sigterm_one_of_two_replicas_under_load(trained_store, tmp_path):
    env = {"PREDMESH_DRAIN_SECONDS": str(DRAIN_S), "PREDMESH_GRACE_SECONDS": str(GRACE_S)}
    with ServerProc(trained_store, tmp_path / "a.log", env=env) as a, \
            ServerProc(trained_store, tmp_path / "b.log", env=env) as b, \
            GatewayProc([a.target, b.target], tmp_path / "gw", env={
                "PREDMESH_GATEWAY_HC_INTERVAL_MS": str(int(HC_INTERVAL_S * 1000)),
                "PREDMESH_GATEWAY_HC_UNHEALTHY_THRESHOLD": str(HC_UNHEALTHY)}) as gw:
        local = threading.local()
        url = gw.url + "/v1/models/iris:predict"

        def call(request_id: str) -> str:
            session = getattr(local, "session", None) or requests.Session()
            local.session = session
            resp = session.post(url, json={"features": IRIS_ROW, "request_id": request_id}, timeout=2.0)
            if resp.status_code != 200:
                raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")
            return resp.json()["prediction"]["request_id"]

        timeline: dict[str, float] = {}
        last_a_count: list[float] = []

        probe = HealthProbe(a.target)  # connected before the SIGTERM: the drain is timed, not a connection

        def watch_health() -> None:
            while "sigterm" not in timeline:
                time.sleep(0.01)
            sent = probe.first_not_serving(timeline["sigterm"], a.alive)
            if sent is not None:
                timeline["not_serving"] = sent

        def kill_one() -> None:
            time.sleep(1.2)
            timeline["sigterm"] = time.monotonic()
            a.started.send_signal(15)
            while a.alive():
                now = time.monotonic()
                if "ejected" not in timeline and gw.healthy_hosts() == 1:
                    timeline["ejected"] = now
                count = rest_predictions(a.metrics_port)
                if count is not None and "ejected" in timeline:
                    last_a_count.append(count)  # after ejection no new request reaches a
                time.sleep(0.05)
            timeline["exited"] = time.monotonic()

        killer = threading.Thread(target=kill_one)
        watcher = threading.Thread(target=watch_health)
        watcher.start()
        killer.start()
        result = run_load(call, RATE, DURATION, threads=24)
        killer.join(timeout=30)
        watcher.join(timeout=30)
        probe.close()

        assert not result.failed, [o.error for o in result.failed[:5]]
        assert len(result.ok) >= RATE * DURATION * 0.9
        assert len({o.value for o in result.ok}) == len(result.ok)
        # health reads NOT_SERVING within 1 s; Envoy ejects within interval × unhealthy_threshold (+ one check
        # in flight and the admin poll); the process exits within drain + grace + 2 s
        assert "not_serving" in timeline, "health never read NOT_SERVING while replica a drained"
        assert timeline["not_serving"] - timeline["sigterm"] <= 1.0
        assert timeline["ejected"] - timeline["sigterm"] <= HC_INTERVAL_S * HC_UNHEALTHY + 0.6
        assert timeline["exited"] - timeline["sigterm"] <= DRAIN_S + GRACE_S + 2.0
        assert a.started.returncode == 0, a.log()[-2000:]
        # both replicas scored: their REST counters (a's read after its ejection) add up to the OK responses
        assert last_a_count, "replica a was never scraped after its ejection"
        b_count = rest_predictions(b.metrics_port)
        assert b_count is not None, "replica b answers its metrics"
        # a's counter stops moving at its ejection (calls already sent to it still finish) and never goes back:
        # the supervisor stops its /metrics before removing its workers' metric files, so no reading is 0
        assert last_a_count == sorted(last_a_count), last_a_count
        a_count = last_a_count[-1]
        assert a_count > 0 and b_count > 0
        assert a_count + b_count == len(result.ok)
        assert b.terminate() == 0
    # no lost records: every OK response has exactly one row in the replicas' (shared SQLite) database
    ok_ids = {o.value for o in result.ok}
    with sqlite3.connect(tmp_path / "predmesh.db") as db:
        rows = db.execute("SELECT request_id FROM predictions").fetchall()
    stored = [r[0] for r in rows]
    assert len(stored) == len(set(stored))
    assert ok_ids <= set(stored), f"{len(ok_ids - set(stored))} OK responses without a record"
    assert len(stored) == len(ok_ids)
