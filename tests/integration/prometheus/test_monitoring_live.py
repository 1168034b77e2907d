"""A real local mesh (inference server + Envoy gateway) scraped by a real Prometheus (Debian's, configured by
cli/monitoring.py with file-based service discovery and deploy/prometheus/rules): after traffic over gRPC and
REST, feedback, a batch run and a reload, every dashboard panel query and every rule expression is valid PromQL,
the rules evaluate without error, and the panels of the parts that run here (server, gateway) return data.
Panels of parts not started here (consumer, luigid, RabbitMQ) must still parse; the test prints which had data.
A typed model (tests/support/typed_model.py) served next to Iris gets traffic whose contract share is shifted: the
drift alert on that category is active with the real rules, and fires (its `for` shortened, nothing else changed)
in a second Prometheus after the same traffic, while unshifted traffic before it kept it silent. Also takes the
screenshot of the Prometheus graph shown in docs/monitoring.md (requests/s and accuracy) with headless Chromium."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from sklearn.datasets import load_iris

from cli.monitoring import prometheus_argv, write_config, write_targets
from predmesh import Client, InvalidArgument, NotFound
from tests.support.gateway import GatewayProc
from tests.support.procs import ADMIN_TOKEN, ROOT, WRITER_TOKEN, ServerProc, stop_process, wait_for
from tests.support.typed_model import write_typed_model
from tests.support.typed_traffic import churn_rows, send

pytestmark = [pytest.mark.envoy, pytest.mark.browser]
NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
OPTIONAL = ("predmesh_consumer", "rabbitmq_", "luigi_")  # parts this test does not start
SCREENSHOT = ROOT / "docs" / "prometheus-graph.png"


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, expr) with Grafana's variables replaced as Grafana would."""
    out = []
    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "1m").replace("$model", ".*")
                out.append((path.stem, panel["title"], expr))
    return out


def rule_exprs() -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for path in sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend((rule.get("alert") or rule["record"], rule["expr"]) for rule in group["rules"])
    return out


class Prometheus:
    """Prometheus on port 0; the port it bound is read from its `msg="Listening on" address=…` line."""

    def __init__(self, config: Path, data: Path, log: Path):
        self._log = open(log, "ab")
        offset = self._log.tell()
        argv = [a if not a.startswith("--log.level=") else "--log.level=info"  # the line is at info
                for a in prometheus_argv(config, data, "127.0.0.1:0")]
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)

        def listening():
            with open(log, "rb") as fh:
                fh.seek(offset)
                return re.search(rb'msg="Listening on" address=127\.0\.0\.1:(\d+)', fh.read())
        found = wait_for(lambda: listening() or self.proc.poll() is not None, 30, what="Prometheus listening")
        assert self.proc.poll() is None, Path(log).read_text(errors="replace")
        self.port = int(found[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params):
        return requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


@pytest.fixture
def mesh(model_store, tmp_path):
    if not shutil.which("prometheus"):
        pytest.fail("prometheus missing: scripts/setup.sh installs Debian's prometheus")
    write_typed_model(model_store)  # served next to Iris: its category drift fills the category panels
    server = ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DRIFT_WINDOW_S": "600"}).start()
    gateway: GatewayProc | None = None
    prom: Prometheus | None = None
    try:
        gateway = GatewayProc([server.target], tmp_path / "gateway").start()
        config = write_config(tmp_path / "prom", {
            "inference": [f"127.0.0.1:{server.metrics_port}"],
            "envoy": [f"127.0.0.1:{gateway.envoy_admin_port}"],
        }, scrape_interval="1s", evaluation_interval="1s")
        prom = Prometheus(config, tmp_path / "prom-data", tmp_path / "prometheus.log")
        write_targets(config.parent, "prometheus", [f"127.0.0.1:{prom.port}"])  # picked up while it runs
        wait_for(lambda: _up(prom) >= {"inference", "envoy", "prometheus"}, 60, interval=0.5,
                 what="Prometheus scraping the server, Envoy and itself")
        yield server, gateway, prom
    finally:
        if prom is not None:
            prom.stop()
        if gateway is not None:
            gateway.stop()
        server.kill()


def _up(prom: Prometheus) -> set[str]:
    try:
        targets = prom.api("targets")["data"]["activeTargets"]
    except (requests.RequestException, ValueError, KeyError):
        return set()
    return {t["labels"]["job"] for t in targets if t["health"] == "up"}


def drive(server: ServerProc, gateway: GatewayProc) -> None:
    rng = np.random.default_rng(5)
    iris = load_iris()
    pick = rng.integers(0, 150, 400)
    rows = [dict(zip(NAMES, map(float, r))) for r in iris.data[pick]]
    with Client(server.target, timeout=10, writer_token=WRITER_TOKEN) as client, \
            Client(server.target, timeout=10, admin_token=ADMIN_TOKEN) as admin:
        preds = []
        for start in range(0, 300, 50):
            preds += client.predict_batch("iris", rows[start:start + 50])
        for row in rows[300:340]:
            preds.append(client.predict("iris", row))
        for row in rows[340:360]:
            response = requests.post(f"{gateway.url}/v1/models/iris:predict", json={"features": row}, timeout=10)
            assert response.status_code == 200, response.text
        assert requests.get(f"{gateway.url}/v1/no-such-route", timeout=10).status_code == 404
        with pytest.raises(NotFound):
            client.predict("unknown-model", rows[0])
        with pytest.raises(InvalidArgument):
            client.predict("iris", {**rows[0], "sepal_length": float("nan")})
        wait_for(lambda: client.get_stats().total >= len(preds), 20, interval=0.3, what="predictions stored")
        truth = iris.target_names[iris.target[pick]]
        for p, label in zip(preds[:120], truth[:120]):
            client.submit_feedback(p.prediction_id, str(label))
        client.record_batch_run("nightly/iris/2026-11-27", kind="nightly", model="iris", status="succeeded", rows=50)
        admin.reload_model("iris", "1")
        for row in rows[360:400]:
            client.predict("iris", row)
        send(client, churn_rows(300, seed=7, shift=0.8, unseen=0.05))  # category panels


def test_every_dashboard_query_and_rule_is_valid_promql_and_server_and_gateway_panels_have_data(mesh):
    server, gateway, prom = mesh
    drive(server, gateway)
    time.sleep(3)  # a few scrapes after the last call

    invalid: list[tuple[str, str, str, object]] = []
    empty_required: dict = {}
    had_data: list[str] = []
    optional_empty: list[str] = []
    queries = dashboard_queries()
    for board, title, expr in queries:
        answer = prom.query(expr)
        if answer.get("status") != "success":
            invalid.append((board, title, expr, answer.get("error")))
    for name, expr in rule_exprs():
        answer = prom.query(expr)
        if answer.get("status") != "success":
            invalid.append(("rules", name, expr, answer.get("error")))
    assert invalid == []

    def pending() -> dict:
        missing = {}
        for board, title, expr in queries:
            if any(part in expr for part in OPTIONAL):
                continue
            if not prom.query(expr)["data"]["result"]:
                missing[(board, title)] = expr
        return missing

    # Rates need two scrapes and drift gauges a monitor tick: give the data a little time to arrive.
    deadline = time.monotonic() + 30
    while (empty_required := pending()) and time.monotonic() < deadline:
        time.sleep(1)
    assert empty_required == {}, "panels of the running parts without data"

    for board, title, expr in queries:
        (had_data if prom.query(expr)["data"]["result"] else optional_empty).append(f"{board}: {title}")
    print(f"\n{len(queries)} panel queries valid; with data: {len(had_data)}; empty (parts not running here): "
          f"{len(optional_empty)}")
    for line in optional_empty:
        print("  empty:", line)

    rules = prom.api("rules")["data"]["groups"]
    loaded = [r for g in rules for r in g["rules"]]
    assert len(loaded) == len(rule_exprs())
    assert all(r["health"] == "ok" for r in loaded), [(r["name"], r.get("lastError")) for r in loaded
                                                      if r["health"] != "ok"]
    # The accuracy from the feedback sent above is visible, and the sub-millisecond buckets give a p50.
    accuracy = prom.query('predmesh_feedback_accuracy{model="iris",version="2"}')["data"]["result"]
    assert accuracy and 0.8 < float(accuracy[0]["value"][1]) <= 1.0
    info = prom.query("count(predmesh_model_info)")["data"]["result"]
    assert info and info[0]["value"][1] == "2"  # iris and churn
    # The shifted category share: the real drift alert is active (pending: its `for` is 10 minutes) for contract.
    active = wait_for(lambda: drift_alerts(prom), 20, interval=0.5, what="PredmeshFeatureDrift active")
    assert {(a["labels"]["model"], a["labels"]["feature"]) for a in active} == {("churn", "contract")}, active

    steady(server, gateway, seconds=8)  # a few seconds of steady traffic for the graph
    screenshot(prom, server)


def drift_alerts(prom: Prometheus, state: str | None = None) -> list[dict]:
    alerts = prom.api("alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == "PredmeshFeatureDrift"
            and (state is None or a["state"] == state)]


def value(prom: Prometheus, expr: str) -> float | None:
    result = prom.query(expr)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


@pytest.fixture
def drift_mesh(model_store, tmp_path):
    """The server with the typed model and a Prometheus whose rules are the real ones except the drift alert's
    `for`, shortened from 10 minutes to 2 seconds (so a test sees it fire)."""
    if not shutil.which("prometheus"):
        pytest.fail("prometheus missing: scripts/setup.sh installs Debian's prometheus")
    write_typed_model(model_store)
    rules = tmp_path / "rules"
    rules.mkdir()
    for path in (ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == "PredmeshFeatureDrift":
                    assert rule["for"] == "10m"
                    rule["for"] = "2s"
        (rules / path.name).write_text(yaml.safe_dump(doc, sort_keys=False))
    server = ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DRIFT_WINDOW_S": "600"}).start()
    prom: Prometheus | None = None
    try:
        config = write_config(tmp_path / "prom", {"inference": [f"127.0.0.1:{server.metrics_port}"]},
                              scrape_interval="1s", evaluation_interval="1s", rules_dir=rules)
        prom = Prometheus(config, tmp_path / "prom-data", tmp_path / "prometheus.log")
        wait_for(lambda: "inference" in _up(prom), 60, interval=0.5, what="Prometheus scraping the server")
        yield server, prom
    finally:
        if prom is not None:
            prom.stop()
        server.kill()


def test_a_shifted_category_share_from_real_traffic_fires_the_drift_alert(drift_mesh):
    server, prom = drift_mesh
    rows = 'model="churn",version="1"'
    with Client(server.target, timeout=10) as client:
        send(client, churn_rows(300, seed=8))  # the training distribution: silent
        wait_for(lambda: (value(prom, f"predmesh_drift_window_rows{{{rows}}}") or 0) >= 300, 20, interval=0.5,
                 what="300 unshifted rows in the scraped drift window")
        time.sleep(4)  # four evaluations: twice the shortened `for`
        steady_psi = value(prom, f'predmesh_feature_drift_psi{{{rows},feature="contract"}}')
        assert drift_alerts(prom) == [] and steady_psi is not None and steady_psi < 0.1, steady_psi
        # every Month-to-month contract sent as Two year: the window (with the 300 above) ~15/29/55 % vs 45/29/25 %
        send(client, churn_rows(600, seed=9, shift=1.0))
    firing = wait_for(lambda: drift_alerts(prom, "firing"), 30, interval=0.5, what="PredmeshFeatureDrift firing")
    psi = {s["metric"]["feature"]: float(s["value"][1])
           for s in prom.query(f"predmesh_feature_drift_psi{{{rows}}}")["data"]["result"]}
    shares = {(s["metric"]["category"], s["metric"]["source"]): float(s["value"][1]) for s in prom.query(
        f'predmesh_feature_category_share{{{rows},feature="contract"}}')["data"]["result"]}
    print(f"\ncontract PSI {steady_psi:.3f} after 300 unshifted rows, {psi['contract']:.3f} after 600 shifted ones; "
          f"all PSI {({k: round(v, 3) for k, v in psi.items()})}; Two year live {shares[('Two year', 'live')]:.2f} "
          f"vs training {shares[('Two year', 'training')]:.2f}")
    assert [(a["labels"]["model"], a["labels"]["feature"]) for a in firing] == [("churn", "contract")], firing
    assert firing[0]["annotations"]["summary"].startswith("churn@1: feature contract drifted from training (PSI ")
    assert psi["contract"] > 0.25 and all(v < 0.1 for k, v in psi.items() if k != "contract"), psi
    assert shares[("Two year", "live")] > shares[("Two year", "training")] + 0.15, shares


def steady(server: ServerProc, gateway: GatewayProc, seconds: float) -> None:
    row = dict(zip(NAMES, (6.0, 2.9, 4.5, 1.5)))
    deadline = time.monotonic() + seconds
    with Client(server.target, timeout=10) as client, requests.Session() as http:
        while time.monotonic() < deadline:
            client.predict_batch("iris", [row] * 5)
            http.post(f"{gateway.url}/v1/models/iris:predict", json={"features": row}, timeout=10)
            time.sleep(0.02)


def screenshot(prom: Prometheus, server: ServerProc) -> None:
    """The Prometheus graph of requests/s and accuracy, in headless Chromium (never `playwright install`)."""
    from urllib.parse import urlencode

    from playwright.sync_api import expect, sync_playwright

    params = urlencode({
        "g0.expr": "sum by (transport) (rate(predmesh_predictions_total[10s]))", "g0.tab": "0",
        "g0.range_input": "1m",
        "g1.expr": "predmesh_feedback_accuracy", "g1.tab": "0", "g1.range_input": "1m"})
    out = Path(os.environ.get("PREDMESH_SCREENSHOT", server.log_path.parent / "prometheus-graph.png"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                                          "--disable-background-networking", "--disable-component-update",
                                          "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(f"{prom.url}/graph?{params}")
            # both graphs drawn: their legends name the series
            expect(page.get_by_role("listitem").filter(has_text="predmesh_feedback_accuracy")).to_be_visible(
                timeout=30000)
            expect(page.get_by_role("listitem").filter(has_text='transport="grpc"')).to_be_visible(timeout=30000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    assert out.stat().st_size > 20_000
