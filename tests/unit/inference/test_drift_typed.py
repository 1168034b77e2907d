"""Drift of category, boolean and missing values (inference/models/drift.py) on the typed fixture's manifest
(tests/support/typed_model.py): its own training table reads as stable; a shifted category share, unseen
categories and a jump in the missing share each cross the alert threshold of the one PSI gauge the alert reads,
and the unseen values are counted per feature without ever becoming a label."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from inference.metrics import ServerMetrics
from inference.models.drift import DriftTracker
from inference.models.manifest import Feature
from tests.support.typed_model import FEATURES, table, write_typed_model

PSI_ALERT = 0.25  # deploy/prometheus/rules/alerts.yml: PredmeshFeatureDrift


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    manifest, _ = write_typed_model(tmp_path_factory.mktemp("store"))
    df = table()
    return manifest, rows_of(df)


def rows_of(df: pd.DataFrame) -> np.ndarray:
    """The plain-value object matrix the server hands over for these rows (schema order, None = missing)."""
    out = np.empty((len(df), len(FEATURES)), dtype=object)
    for j, name in enumerate(FEATURES):
        col = df[name].to_numpy(dtype=object)
        out[:, j] = [None if pd.isna(v) else (bool(v) if name == "senior" else
                                              v if isinstance(v, str) else float(v)) for v in col]
    return out


def feed(tracker: DriftTracker, x, batch: int = 7) -> None:
    p = np.tile([0.3, 0.7], (len(x), 1))
    for start in range(0, len(x), batch):  # as the batcher would hand them over
        tracker.observe((x[start:start + batch], p[start:start + batch]))


def summary_of(manifest, x, **kwargs) -> dict:
    tracker = DriftTracker(manifest, **kwargs)
    feed(tracker, x)
    summary = tracker.tick()
    assert summary is not None
    return summary


def test_the_training_table_itself_reads_as_stable(typed):
    manifest, x = typed
    summary = summary_of(manifest, x)
    assert summary["rows"] == len(x)
    assert set(summary["psi"]) == {"contract", "senior"}  # the fixture's numbers have no deciles
    assert max(summary["psi"].values()) < 1e-6, summary
    contract = {f.name: f for f in manifest.features}["contract"]
    assert summary["missing"]["contract"] == pytest.approx(contract.missing_share)
    assert set(summary["missing"]) == {"tenure", "contract", "senior"}  # the nullable ones (not monthly)
    shares = summary["categories"]["contract"]
    assert list(shares) == [*contract.category_names, "(unseen)"]
    assert all(live == pytest.approx(training) for live, training in shares.values())
    assert list(summary["categories"]["senior"]) == ["false", "true"]  # no unseen bucket for a boolean
    assert summary["unseen"] == {}
    assert set(summary["out_of_range"]) == {"tenure", "monthly"} and max(summary["out_of_range"].values()) == 0


def test_a_resample_of_the_training_table_stays_below_the_alert(typed):
    manifest, x = typed
    pick = np.random.default_rng(3).integers(0, len(x), 600)
    summary = summary_of(manifest, x[pick])
    assert max(summary["psi"].values()) < 0.1, summary


def test_a_shifted_category_share_crosses_the_alert_and_the_other_features_do_not(typed):
    manifest, x = typed
    shifted = x.copy()
    rng = np.random.default_rng(4)
    month = np.flatnonzero(shifted[:, 2] == "Month-to-month")
    shifted[rng.choice(month, int(len(month) * 0.8), replace=False), 2] = "Two year"  # 45/29/25 → ~9/29/62
    summary = summary_of(manifest, shifted)
    print("PSI with contract shifted:", {k: round(v, 3) for k, v in summary["psi"].items()})
    assert summary["psi"]["contract"] > PSI_ALERT * 2, summary
    assert summary["psi"]["senior"] < 1e-6
    live, training = summary["categories"]["contract"]["Two year"]
    assert live > training + 0.3 and training == pytest.approx(0.25, abs=0.05)
    assert summary["missing"]["contract"] == pytest.approx(summary_of(manifest, x)["missing"]["contract"])


def test_a_boolean_share_shift_crosses_the_alert(typed):
    manifest, x = typed
    shifted = x.copy()
    shifted[: len(x) // 2, 3] = True  # ~26 % true → ~63 %
    summary = summary_of(manifest, shifted)
    assert summary["psi"]["senior"] > PSI_ALERT, summary
    assert summary["categories"]["senior"]["true"][0] > 0.5


def test_unseen_categories_fill_the_unseen_bin_and_are_counted_without_their_value_as_a_label(typed):
    manifest, x = typed
    shifted = x.copy()
    shifted[::10, 2] = "Three year"  # 10 % of the rows: a category training never saw
    tracker = DriftTracker(manifest)
    feed(tracker, shifted)
    summary = tracker.tick()
    assert summary is not None
    assert summary["psi"]["contract"] > PSI_ALERT, summary
    assert summary["unseen"] == {"contract": 40}
    assert summary["categories"]["contract"]["(unseen)"][0] == pytest.approx(40 / (len(x) - np.sum(
        pd.isna(shifted[:, 2]))))
    assert "Three year" not in summary["categories"]["contract"]

    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)
    metrics.drift({("churn", manifest.version): summary})
    feed(tracker, shifted[:100])
    metrics.drift({("churn", manifest.version): tracker.tick()})  # a later tick counts only its new rows
    value = registry.get_sample_value
    assert value("predmesh_feature_unseen_categories_total", {"model": "churn", "feature": "contract"}) == 50
    labels = {(k, v) for m in registry.collect() for s in m.samples for k, v in s.labels.items()}
    assert not any("Three year" in v for _, v in labels)
    mv = {"model": "churn", "version": manifest.version}
    assert (value("predmesh_feature_drift_psi", {**mv, "feature": "contract"}) or 0.0) > PSI_ALERT
    assert value("predmesh_feature_category_share", {**mv, "feature": "contract", "category": "(unseen)",
                                                     "source": "training"}) == 0
    assert value("predmesh_feature_category_share", {**mv, "feature": "contract", "category": "Month-to-month",
                                                     "source": "training"}) == pytest.approx(0.45, abs=0.05)
    assert value("predmesh_feature_missing_ratio", {**mv, "feature": "tenure"}) is not None
    metrics.drift({})  # the version retired: its gauges go, the counter (per model) stays
    assert value("predmesh_feature_category_share", {**mv, "feature": "contract", "category": "(unseen)",
                                                     "source": "live"}) is None
    assert value("predmesh_feature_missing_ratio", {**mv, "feature": "tenure"}) is None
    assert value("predmesh_feature_unseen_categories_total", {"model": "churn", "feature": "contract"}) == 50


def test_a_jump_in_the_missing_share_crosses_the_alert(typed):
    manifest, x = typed
    shifted = x.copy()
    shifted[: len(x) // 2, 2] = None  # ~5 % missing → ~50 %
    summary = summary_of(manifest, shifted)
    assert summary["missing"]["contract"] > 0.45
    assert summary["psi"]["contract"] > PSI_ALERT, summary
    # the shares of the rows with a value are unchanged in expectation: the category view stays close
    assert all(abs(live - training) < 0.1 for live, training in summary["categories"]["contract"].values())


def test_a_number_with_deciles_and_gaps_bins_missing_values_apart(typed):
    manifest, x = typed
    tenure = np.array([v for v in x[:, 0] if v is not None], dtype=np.float64)
    edges = np.percentile(tenure, np.arange(10, 100, 10))
    bins = np.bincount(np.searchsorted(edges, tenure, side="left"), minlength=10) / len(tenure)
    features = list(manifest.features)
    features[0] = replace(features[0], quantiles=tuple(edges), shares=tuple(bins))
    profiled = replace(manifest, features=tuple(features))
    assert summary_of(profiled, x)["psi"]["tenure"] < 1e-6  # missing in the training share: stable
    gaps = x.copy()
    gaps[: len(x) // 3, 0] = None
    summary = summary_of(profiled, gaps)
    assert summary["psi"]["tenure"] > PSI_ALERT and summary["missing"]["tenure"] > 0.3
    assert summary["out_of_range"]["tenure"] == 0  # a missing value is not out of range


def test_rows_as_lists_and_all_number_float_batches_are_taken_too(typed):
    manifest, x = typed
    tracker = DriftTracker(manifest)
    p = np.tile([0.5, 0.5], (len(x), 1))
    tracker.observe((x[:100].tolist(), p[:100]))  # a list of lists of plain values
    tracker.observe((x[100:], p[100:]))
    summary = tracker.tick()
    assert summary is not None and summary["rows"] == len(x)
    assert max(summary["psi"].values()) < 1e-6

    numbers = replace(manifest, input="array", features=tuple(
        Feature(f.name, 0.0, 100.0, quantiles=tuple(float(q) for q in range(10, 100, 10)), shares=(0.1,) * 10)
        for f in manifest.features))
    tracker = DriftTracker(numbers)
    grid = np.repeat(np.arange(5.0, 100.0, 10.0), 4)[:, None].repeat(4, axis=1)
    grid[0, 1] = np.nan  # an array model whose estimator takes NaN: a missing value, not the lowest bin
    tracker.observe((grid, np.tile([0.5, 0.5], (len(grid), 1))))
    summary = tracker.tick()
    assert summary is not None and summary["psi"]["tenure"] < 1e-6
    assert summary["psi"]["monthly"] > 0  # the one NaN moved a share out of the first bin
