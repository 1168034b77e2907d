"""PREDMESH_GATEWAY_STATS_ADDR: a listener that exposes exactly GET /stats/prometheus and GET /ready of Envoy's
admin interface (which stays on loopback): Prometheus and probes get what they need, and nobody reaching that
port can call a mutating admin endpoint such as /quitquitquit."""
from __future__ import annotations

import pytest
import requests

from tests.support.gateway import GatewayProc
from tests.support.procs import free_port

pytestmark = pytest.mark.envoy


def test_the_stats_listener_serves_prometheus_and_ready_and_nothing_else(tmp_path):
    stats = f"127.0.0.1:{free_port()}"
    gw = GatewayProc([f"127.0.0.1:{free_port()}"], tmp_path / "gw", env={"PREDMESH_GATEWAY_STATS_ADDR": stats})
    gw.start(healthy=0)  # the upstream is a closed port: only the listeners matter here
    try:
        url = f"http://{stats}"
        metrics = requests.get(f"{url}/stats/prometheus", timeout=5)
        assert metrics.status_code == 200 and "envoy_cluster_upstream_cx_total" in metrics.text
        assert requests.get(f"{url}/ready", timeout=5).text.strip() == "LIVE"
        for method, path in (("POST", "/quitquitquit"), ("POST", "/healthcheck/fail"), ("GET", "/config_dump"),
                             ("POST", "/stats/prometheus"), ("GET", "/stats/prometheus/../../quitquitquit"),
                             ("POST", "/logging?level=trace"), ("GET", "/stats")):
            answer = requests.request(method, url + path, timeout=5)
            assert answer.status_code == 404, (method, path, answer.status_code, answer.text[:200])
        assert gw.alive() and requests.get(f"{url}/ready", timeout=5).text.strip() == "LIVE"  # still up
    finally:
        gw.stop()
