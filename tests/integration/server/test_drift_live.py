"""Drift through a real server: shifted traffic (one feature + 3 standard deviations, taken from the model's own
training distribution as GetModel reports it) moves that feature's PSI gauge past the alert threshold while the
other features stay low; on a typed model a shifted category share and unseen categories do the same to that
feature's PSI, and the unseen values are counted; PREDMESH_DRIFT=0 turns tracking off."""
from __future__ import annotations

import time
import urllib.request

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris

from predmesh import Client
from tests.support.procs import ServerProc, wait_for
from tests.support.typed_model import write_typed_model
from tests.support.typed_traffic import churn_rows
from tests.support.typed_traffic import send as send_typed

PSI_ALERT = 0.25  # deploy/prometheus/alerts.yml: PredmeshFeatureDrift
NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def gauges(proc: ServerProc, name: str, **labels: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {s.labels.get("feature", ""): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name and labels.items() <= s.labels.items()}


def send(proc: ServerProc, shift: str | None, rows: int = 600) -> None:
    rng = np.random.default_rng(11)
    data = load_iris().data[rng.integers(0, 150, rows)]
    with Client(proc.target, timeout=10) as client:
        if shift:
            std = {f.name: f.std for f in client.get_model("iris").features}[shift]
            data[:, NAMES.index(shift)] += 3 * std
        for start in range(0, rows, 50):
            client.predict_batch("iris", [dict(zip(NAMES, map(float, row))) for row in data[start:start + 50]])


def test_a_shifted_feature_crosses_the_psi_threshold_and_the_others_stay_low(model_store, tmp_path):
    with ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DRIFT_WINDOW_S": "120"}) as proc:
        send(proc, "petal_length")
        psi = wait_for(lambda: (g := gauges(proc, "predmesh_feature_drift_psi")) and
                       gauges(proc, "predmesh_drift_window_rows").get("") == 600 and g, 15, interval=0.3,
                       what="drift gauges over all 600 rows")
        out = gauges(proc, "predmesh_feature_out_of_range_ratio")
    print("PSI after petal_length + 3 std:", {k: round(v, 3) for k, v in psi.items()})
    assert set(psi) == set(NAMES)
    assert psi["petal_length"] > PSI_ALERT, psi
    assert all(v < 0.1 for k, v in psi.items() if k != "petal_length"), psi
    assert out["petal_length"] > 0.3 and out["sepal_width"] == 0


def test_a_shifted_category_share_and_unseen_categories_move_the_category_psi(model_store, tmp_path):
    write_typed_model(model_store)
    rows = churn_rows(600, seed=21, shift=0.8, unseen=0.05)
    sent_unseen = sum(r["contract"] == "Three year" for r in rows)
    churn = {"model": "churn"}
    with ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DRIFT_WINDOW_S": "120"}) as proc:
        with Client(proc.target, timeout=10) as client:
            send_typed(client, rows)
        # the row count first: PSI read after a tick that saw all 600 rows is of all 600 (read the other way
        # round, a PSI of the first few hundred rows could pass with a later tick's count)
        psi = wait_for(lambda: gauges(proc, "predmesh_drift_window_rows", **churn).get("") == 600 and
                       gauges(proc, "predmesh_feature_drift_psi", **churn), 15, interval=0.3,
                       what="churn drift gauges over all 600 rows")
        unseen = gauges(proc, "predmesh_feature_unseen_categories_total", **churn)
        missing = gauges(proc, "predmesh_feature_missing_ratio", **churn)
        live = gauges(proc, "predmesh_feature_category_share", **churn, category="Two year", source="live")
        training = gauges(proc, "predmesh_feature_category_share", **churn, category="Two year", source="training")
    print("churn PSI with contract shifted and 5 % unseen:", {k: round(v, 3) for k, v in psi.items()},
          f"unseen counted {unseen}, sent {sent_unseen}; Two year live {live} vs training {training}")
    assert set(psi) == {"contract", "senior"}  # the fixture's numbers have no deciles
    assert psi["contract"] > PSI_ALERT and psi["senior"] < 0.1, psi
    assert unseen == {"contract": sent_unseen} and sent_unseen > 10
    assert live["contract"] > training["contract"] + 0.2
    assert set(missing) == {"tenure", "contract", "senior"} and missing["senior"] == 0  # the nullable ones


def test_drift_tracking_can_be_switched_off(model_store, tmp_path):
    with ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DRIFT": "0"}) as proc:
        send(proc, "petal_length", rows=100)
        time.sleep(2.5)  # more than the monitor's 1 s tick, had it been running
        assert gauges(proc, "predmesh_drift_window_rows") == {}
        assert gauges(proc, "predmesh_feature_drift_psi") == {}
