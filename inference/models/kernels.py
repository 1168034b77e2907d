"""The "native" runtime: predict_proba of fitted scikit-learn models without per-call framework overhead.

scikit-learn's own predict_proba spends almost all of its time on one row in input validation and (for forests)
joblib dispatch, not arithmetic. For the estimators below the same arithmetic is done directly on the fitted
attributes. A kernel is only used after it reproduced the estimator's own predict_proba on the golden rows and
on random rows spanning the training range (see verified_kernel); otherwise scikit-learn scores, as it does by
default (PREDMESH_RUNTIME=sklearn).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from inference.models.manifest import Manifest

log = logging.getLogger(__name__)
Kernel = Callable[[np.ndarray], np.ndarray]
RUNTIMES = ("sklearn", "native")
TOLERANCE = 1e-9
CHECK_ROWS = 512
WALK_MAX_ROWS = 24  # forests: up to this many rows walk all trees at once, more go tree by tree


def _logistic(est: LogisticRegression) -> Kernel | None:
    coef = np.ascontiguousarray(est.coef_.T, dtype=np.float64)
    intercept = np.asarray(est.intercept_, dtype=np.float64)
    if coef.shape[1] == 1:  # binary: sklearn returns [1 - p, p] with p = expit(z)
        def binary(x: np.ndarray) -> np.ndarray:
            p = 1.0 / (1.0 + np.exp(-(x @ coef + intercept)))
            return np.hstack([1.0 - p, p])
        return binary

    def softmax(x: np.ndarray) -> np.ndarray:
        z = x @ coef
        z += intercept
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z
    return softmax


def _forest(est) -> Kernel | None:
    """Average of the trees' leaf distributions. Few rows: all trees walked at once over flattened node arrays
    (one numpy step per depth level); many rows: each tree's own compiled predict (cheaper per row there)."""
    trees = [t.tree_ for t in getattr(est, "estimators_", [est])]
    if any(t.n_outputs != 1 for t in trees):
        return None
    scale = 1.0 / len(trees)
    offsets = np.cumsum([0] + [t.node_count for t in trees[:-1]]).astype(np.intp)
    lefts: list[np.ndarray] = []
    rights: list[np.ndarray] = []
    features: list[np.ndarray] = []
    thresholds: list[np.ndarray] = []
    leaf_probas: list[np.ndarray] = []
    for offset, tree in zip(offsets, trees):
        is_leaf = tree.children_left == -1
        own = np.arange(tree.node_count, dtype=np.intp) + offset
        lefts.append(np.where(is_leaf, own, tree.children_left + offset))  # a leaf points at itself
        rights.append(np.where(is_leaf, own, tree.children_right + offset))
        features.append(np.where(is_leaf, 0, tree.feature))
        thresholds.append(np.where(is_leaf, np.inf, tree.threshold))
        value = tree.value[:, 0, :].astype(np.float64)
        total = value.sum(axis=1, keepdims=True)
        total[total == 0] = 1.0
        leaf_probas.append(value / total)  # what DecisionTreeClassifier.predict_proba normalises to
    left, right = np.concatenate(lefts), np.concatenate(rights)
    feature, threshold = np.concatenate(features), np.concatenate(thresholds)
    leaf_proba = np.concatenate(leaf_probas)
    depth = max(t.max_depth for t in trees)

    def walk(x32: np.ndarray) -> np.ndarray:
        x = x32.astype(np.float64)  # sklearn compares float32 features against float64 thresholds
        node = np.broadcast_to(offsets, (len(x), len(offsets)))
        rows = np.arange(len(x))[:, None]
        for _ in range(depth):
            node = np.where(x[rows, feature[node]] <= threshold[node], left[node], right[node])
        return leaf_proba[node].sum(axis=1) * scale

    def loop(x32: np.ndarray) -> np.ndarray:
        acc = trees[0].predict(x32).astype(np.float64, copy=True)
        for tree in trees[1:]:
            acc += tree.predict(x32)
        acc *= scale
        return acc

    def average(x: np.ndarray) -> np.ndarray:
        x32 = np.ascontiguousarray(x, dtype=np.float32)  # what sklearn's trees compare against
        return walk(x32) if len(x32) <= WALK_MAX_ROWS else loop(x32)
    return average


_BUILDERS = ((LogisticRegression, _logistic), (RandomForestClassifier, _forest),
             (ExtraTreesClassifier, _forest), (DecisionTreeClassifier, _forest))


def build(estimator) -> Kernel | None:
    """A native kernel for estimator, or None when its type is not supported."""
    for cls, builder in _BUILDERS:
        if type(estimator) is cls:
            try:
                return builder(estimator)
            except (AttributeError, ValueError):
                return None
    return None


def verified_kernel(estimator, manifest: Manifest, seed: int = 0) -> Kernel | None:
    """The native kernel if it matches estimator.predict_proba on golden + random rows to TOLERANCE, else None
    (scikit-learn scores): always None for a "frame" model (typed rows, a pipeline) and for any estimator type
    without a kernel (a Pipeline, boosting, SVC, neighbours, …)."""
    if manifest.input != "array" or any(f.kind != "number" for f in manifest.features):
        log.info("model %s@%s takes typed rows (a DataFrame); scoring with scikit-learn", manifest.name,
                 manifest.version)
        return None
    kernel = build(estimator)
    if kernel is None:
        log.info("model %s@%s: no native kernel for %s, scoring with scikit-learn", manifest.name,
                 manifest.version, type(estimator).__name__)
        return None
    lo = np.array([f.min for f in manifest.features])
    hi = np.array([f.max for f in manifest.features])
    rng = np.random.default_rng(seed)
    rows = lo + (hi - lo) * rng.random((CHECK_ROWS, len(lo)))
    if manifest.golden:
        rows = np.vstack([np.asarray([g["features"] for g in manifest.golden], dtype=np.float64), rows])
    try:
        reference = estimator.predict_proba(rows)
        together = kernel(rows)
        # small batches too: kernels may take another path for them (forests walk all trees at once)
        one_by_one = np.vstack([kernel(rows[i:i + 1]) for i in range(8)] + [kernel(rows[8:24])])
    except Exception:  # a kernel that cannot even run is simply not used
        log.warning("model %s@%s: native kernel failed to run; scoring with scikit-learn", manifest.name,
                    manifest.version, exc_info=True)
        return None
    if (together.shape != reference.shape or not np.allclose(together, reference, rtol=0, atol=TOLERANCE)
            or not np.allclose(one_by_one, reference[:24], rtol=0, atol=TOLERANCE)):
        log.warning("model %s@%s: native kernel disagrees with scikit-learn; scoring with scikit-learn",
                    manifest.name, manifest.version)
        return None
    log.info("model %s@%s: native kernel verified on %d rows", manifest.name, manifest.version, len(rows))
    return kernel
