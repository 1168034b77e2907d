"""Drift summaries (inference/models/drift.py): the training data itself reads as stable, a shifted feature as drift."""
from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.datasets import load_iris

from inference.metrics import ServerMetrics
from inference.models.drift import DriftTracker
from inference.models.manifest import Manifest
from inference.models.train import class_profiles, features

PSI_ALERT = 0.25  # deploy/prometheus/alerts.yml


@pytest.fixture(scope="module")
def iris():
    data = load_iris()
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    classes = [str(c) for c in data.target_names]
    manifest = Manifest(name="iris", version="1", features=features(names, data.data), classes=tuple(classes),
                        sha256="0" * 64, metrics={}, created_at=datetime.now(UTC), sklearn_version="",
                        estimator="", class_profiles=class_profiles(classes, data.data, data.target))
    return manifest, data.data, np.eye(3)[data.target]


def feed(tracker: DriftTracker, x: np.ndarray, p: np.ndarray, batch: int = 7) -> None:
    for start in range(0, len(x), batch):  # as the batcher would hand them over
        tracker.observe((x[start:start + batch], p[start:start + batch]))


def ticked(tracker: DriftTracker, now: float | None = None) -> dict:
    """The window's summary after a tick (it holds rows)."""
    summary = tracker.tick(now=now)
    assert summary is not None
    return summary


def test_the_training_data_itself_reads_as_stable(iris):
    manifest, x, p = iris
    tracker = DriftTracker(manifest)
    feed(tracker, x, p)
    summary = ticked(tracker)
    assert summary["rows"] == len(x)
    assert max(summary["psi"].values()) < 1e-6, summary  # the recorded bin shares are exactly the training's
    assert max(summary["out_of_range"].values()) == 0
    assert summary["class_drift"] == pytest.approx(0, abs=1e-9)


def test_a_resample_of_the_training_data_stays_below_the_alert(iris):
    manifest, x, p = iris
    rng = np.random.default_rng(3)
    pick = rng.integers(0, len(x), 600)
    tracker = DriftTracker(manifest)
    feed(tracker, x[pick], p[pick])
    summary = ticked(tracker)
    assert max(summary["psi"].values()) < 0.1, summary
    assert summary["class_drift"] < 0.1


def test_one_feature_shifted_by_three_std_crosses_the_alert_and_the_others_do_not(iris):
    manifest, x, p = iris
    shifted = x.copy()
    shifted[:, 2] += 3 * manifest.features[2].std
    tracker = DriftTracker(manifest)
    feed(tracker, shifted, p)
    summary = ticked(tracker)
    assert summary["psi"]["petal_length"] > PSI_ALERT * 4, summary
    assert all(v < 0.01 for k, v in summary["psi"].items() if k != "petal_length"), summary
    assert summary["out_of_range"]["petal_length"] > 0.5
    assert summary["out_of_range"]["sepal_length"] == 0


def test_the_window_forgets_old_traffic_and_the_gauges_follow_the_serving_versions(iris):
    manifest, x, p = iris
    shifted = x.copy()
    shifted[:, 0] += 3 * manifest.features[0].std
    tracker = DriftTracker(manifest, window_s=60)
    feed(tracker, shifted, p)
    assert ticked(tracker, 1000.0)["psi"]["sepal_length"] > PSI_ALERT
    feed(tracker, x, p)
    assert ticked(tracker, 1030.0)["psi"]["sepal_length"] > PSI_ALERT   # both in the window
    assert ticked(tracker, 1065.0)["psi"]["sepal_length"] < 1e-6      # the shifted tick has left it
    assert tracker.tick(now=1100.0) is None                            # nothing left

    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)
    feed(tracker, shifted, p)
    metrics.drift({("iris", "1"): tracker.tick(now=2000.0)})
    value = registry.get_sample_value
    assert (value("predmesh_feature_drift_psi", {"model": "iris", "version": "1", "feature": "sepal_length"}) or 0.0) \
        > PSI_ALERT
    assert value("predmesh_drift_window_rows", {"model": "iris", "version": "1"}) == len(x)
    # one process: its window is the smallest one too (the alerts' guard)
    assert value("predmesh_drift_window_rows_min", {"model": "iris", "version": "1"}) == len(x)
    assert value("predmesh_class_drift", {"model": "iris", "version": "1"}) == pytest.approx(0, abs=1e-9)
    metrics.drift({("iris", "2"): None})  # version 1 no longer serves: its series go
    assert value("predmesh_feature_drift_psi", {"model": "iris", "version": "1", "feature": "sepal_length"}) \
        is None


def test_a_manifest_without_a_training_distribution_still_tracks_the_range(iris):
    manifest, x, p = iris
    from dataclasses import replace

    from inference.models.manifest import Feature
    old = replace(manifest, features=tuple(Feature(f.name, f.min, f.max) for f in manifest.features),
                  class_profiles=())
    tracker = DriftTracker(old)
    feed(tracker, x + 100, p)
    summary = ticked(tracker)
    assert summary["psi"] == {} and summary["class_drift"] is None
    assert summary["out_of_range"]["petal_width"] == 1.0
