"""Nearest-neighbour estimators loaded from an artifact: their search index is rebuilt, never trusted.

A KDTree or BallTree stores an index permutation and node bounds that compiled code follows without bounds
checks, and a DistanceMetric object stores parameters compiled code reads. Instead of checking them, the loader
rebuilds the index from the estimator's training points (_fit_X, checked here: finite, one row per label, the
estimator's feature count) with the estimator's leaf_size and a plain metric (euclidean, manhattan, chebyshev or
minkowski with a finite p ≥ 1), so the stored index and metric objects are discarded before anything uses them.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import DistanceMetric
from sklearn.neighbors import BallTree, KDTree, KNeighborsClassifier

from inference.errors import UntrustedArtifact
from inference.models.reach import Reached, of_type

PLAIN_METRICS = frozenset({"euclidean", "manhattan", "chebyshev", "minkowski"})
_INDEXES = {"kd_tree": KDTree, "ball_tree": BallTree}


def rebuild_indexes(found: list[Reached]) -> list[object]:
    """Check every KNeighborsClassifier's fitted data and rebuild its search index; returns the new indexes."""
    rebuilt: list[object] = []
    for reached in of_type(found, KNeighborsClassifier):
        est = reached.obj
        index = _rebuild(est, type(est).__name__)
        if index is not None:
            rebuilt.append(index)
    return rebuilt


def _rebuild(est: KNeighborsClassifier, name: str):
    metric, params = est.effective_metric_, dict(est.effective_metric_params_ or {})
    if not isinstance(metric, str) or metric not in PLAIN_METRICS:
        raise UntrustedArtifact(f"{name}: metric {metric!r} is not one of {', '.join(sorted(PLAIN_METRICS))}")
    if not isinstance(est.metric, str) or (est.metric_params or {}).keys() - {"p"}:
        raise UntrustedArtifact(f"{name}: only a named metric with at most a p parameter is supported")
    if set(params) - ({"p"} if metric == "minkowski" else set()):
        raise UntrustedArtifact(f"{name}: metric parameters {sorted(params)} are not supported")
    p = params.get("p", 2)
    if not isinstance(p, (int, float)) or not math.isfinite(p) or p < 1:
        raise UntrustedArtifact(f"{name}: minkowski p must be a finite number ≥ 1")
    x = est._fit_X
    labels = np.asarray(est._y)
    n_features = int(est.n_features_in_)
    if (not isinstance(x, np.ndarray) or x.dtype.kind not in "iuf" or x.ndim != 2 or x.shape[1] != n_features
            or not np.isfinite(x).all()):
        raise UntrustedArtifact(f"{name}: the training points are not a finite numeric matrix of {n_features} "
                                "columns (sparse training data is not supported)")
    n = x.shape[0]
    if (int(est.n_samples_fit_) != n or labels.shape[:1] != (n,) or labels.dtype.kind not in "iu"
            or not 1 <= int(est.n_neighbors) <= n):
        raise UntrustedArtifact(f"{name}: training points, labels and n_neighbors do not agree")
    classes = [est.classes_] if not est.outputs_2d_ else list(est.classes_)
    columns = labels.reshape(n, -1)
    if columns.shape[1] != len(classes) or any(
            ((columns[:, j] < 0) | (columns[:, j] >= len(c))).any() for j, c in enumerate(classes)):
        raise UntrustedArtifact(f"{name}: labels outside its classes")
    method = est._fit_method
    if method == "brute":
        est._tree = None
        return None
    if method not in _INDEXES:
        raise UntrustedArtifact(f"{name}: search method {method!r} is not supported")
    points = np.ascontiguousarray(x, dtype=np.float64)
    est._tree = _INDEXES[method](points, int(est.leaf_size), metric=metric, **params)
    return est._tree


def check_indexes(found: list[Reached], rebuilt: list[object]) -> None:
    """After the rebuild, no stored index or metric object may remain anywhere in the estimator."""
    fresh = {id(index) for index in rebuilt}
    for reached in of_type(found, (KDTree, BallTree, DistanceMetric)):
        if id(reached.obj) not in fresh:
            raise UntrustedArtifact(f"a stored {type(reached.obj).__name__} outside a KNeighborsClassifier's "
                                    "search index is not accepted")
