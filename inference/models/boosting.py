"""Structural checks of gradient-boosting estimators loaded from an artifact, before any of them is used.

GradientBoosting adds its stages' outputs with compiled code that writes raw_predictions[i, k] for every column
k of estimators_ without a bounds check, so the stage grid must match the raw predictions the init estimator
gives. HistGradientBoosting's TreePredictor (not trusted by skops by default) is walked by compiled code that
follows its nodes' child, feature and bitset indices without bounds checks: every predictor must be a well-formed
binary tree over the estimator's features, and its bitset arrays must have the shape the code indexes. Its
in-estimator categorical preprocessor (an OrdinalEncoder next to a FunctionTransformer calling
functools.partial(check_array)) must keep every column, so rows reach the predictors at full width.
"""
from __future__ import annotations

import functools

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.ensemble._gb import BaseGradientBoosting
from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper
from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE, X_BITSET_INNER_DTYPE
from sklearn.ensemble._hist_gradient_boosting.gradient_boosting import BaseHistGradientBoosting
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder
from sklearn.tree import DecisionTreeRegressor
from sklearn.utils.validation import check_array

from inference.errors import UntrustedArtifact
from inference.models.reach import Reached, of_type

BITSET_WORDS = 8  # 256 category codes in 32-bit words: what the compiled code indexes
_CHECK_ARRAY_KEYWORDS = frozenset({"dtype", "ensure_all_finite"})


def trees_per_iteration(estimator) -> int:
    """One tree per stage for regression and two classes, one per class otherwise."""
    n_classes = len(estimator.classes_) if hasattr(estimator, "classes_") else 1
    return n_classes if n_classes > 2 else 1


def check_gradient_boosting(est: BaseGradientBoosting) -> None:
    """The stage grid and the init estimator agree with the number of raw prediction columns."""
    name = type(est).__name__
    if type(est) not in (GradientBoostingClassifier, GradientBoostingRegressor):
        raise UntrustedArtifact(f"{name} is not a supported gradient boosting estimator")
    k = trees_per_iteration(est) if isinstance(est, GradientBoostingClassifier) else 1
    stages = est.estimators_
    if (not isinstance(stages, np.ndarray) or stages.dtype != object or stages.ndim != 2 or stages.shape[0] < 1
            or stages.shape[1] != k or int(est.n_trees_per_iteration_) != k):
        raise UntrustedArtifact(f"{name}: estimators_ must be a grid of stages × {k} trees")
    if any(type(t) is not DecisionTreeRegressor for t in stages.ravel()):
        raise UntrustedArtifact(f"{name}: every stage must be a DecisionTreeRegressor")
    init = est.init_
    if isinstance(init, str):
        if init != "zero":
            raise UntrustedArtifact(f"{name}: init_ {init!r} is not supported")
    elif isinstance(est, GradientBoostingClassifier):
        prior = np.asarray(getattr(init, "class_prior_", ()))
        if (type(init) is not DummyClassifier or int(est.n_classes_) != len(est.classes_)
                or prior.shape != (len(est.classes_),) or int(getattr(init, "n_classes_", -1)) != len(est.classes_)):
            raise UntrustedArtifact(f"{name}: init_ must be the prior DummyClassifier over its classes")
    elif type(init) is not DummyRegressor:
        raise UntrustedArtifact(f"{name}: init_ must be a DummyRegressor")


def check_hist_gradient_boosting(est: BaseHistGradientBoosting) -> list[TreePredictor]:
    """Predictors, bin mapper and categorical preprocessor of a HistGradientBoosting; returns its predictors."""
    name = type(est).__name__
    n_features = int(est.n_features_in_)
    k = trees_per_iteration(est) if hasattr(est, "classes_") else 1
    if int(est.n_trees_per_iteration_) != k:
        raise UntrustedArtifact(f"{name}: n_trees_per_iteration_ does not fit its classes")
    baseline = np.asarray(est._baseline_prediction)
    if baseline.shape != (1, k) or not np.isfinite(baseline).all():
        raise UntrustedArtifact(f"{name}: baseline prediction of shape {list(baseline.shape)}")
    categorical = _check_bin_mapper(est._bin_mapper, n_features, name)
    _check_preprocessor(est._preprocessor, n_features, name)
    predictors = est._predictors
    if not isinstance(predictors, list) or not predictors:
        raise UntrustedArtifact(f"{name} has no predictors")
    checked: list[TreePredictor] = []
    for i, stage in enumerate(predictors):
        if not isinstance(stage, list) or len(stage) != k:
            raise UntrustedArtifact(f"{name}: iteration {i} does not hold {k} predictors")
        for j, predictor in enumerate(stage):
            check_predictor(predictor, n_features, categorical, f"predictor {i}.{j} of {name}")
            checked.append(predictor)
    return checked


def _check_bin_mapper(mapper, n_features: int, name: str) -> np.ndarray:
    """The categorical mask the predictors' categorical splits are looked up in (f_idx_map, known bitsets)."""
    if type(mapper) is not _BinMapper:
        raise UntrustedArtifact(f"{name}: _bin_mapper is not a _BinMapper")
    mask = np.asarray(mapper.is_categorical_)
    thresholds = mapper.bin_thresholds_
    if mask.shape != (n_features,) or not np.isin(mask, (0, 1)).all() or len(thresholds) != n_features:
        raise UntrustedArtifact(f"{name}: the bin mapper does not describe {n_features} features")
    for f in np.flatnonzero(mask):
        known = np.asarray(thresholds[f], dtype=np.float64)
        if known.ndim != 1 or not ((known >= 0) & (known < 256) & (known == np.round(known))).all():
            raise UntrustedArtifact(f"{name}: known categories of feature {f} are not codes in [0, 256)")
    return mask.astype(bool)


def _check_preprocessor(pre, n_features: int, name: str) -> None:
    """None, or the ColumnTransformer HistGradientBoosting builds for native categories: an OrdinalEncoder and a
    check_array pass-through whose columns partition the input, so every column reaches the predictors."""
    if pre is None:
        return
    if type(pre) is not ColumnTransformer or int(pre.n_features_in_) != n_features:
        raise UntrustedArtifact(f"{name}: the categorical preprocessor is not the one it builds")
    covered = np.zeros(n_features, dtype=np.int64)
    indices = pre._transformer_to_input_indices
    for entry in pre.transformers_:
        label, transformer, columns = entry
        mask = np.asarray(columns, dtype=bool) if len(columns) else np.zeros(n_features, dtype=bool)
        if mask.shape != (n_features,) or list(np.flatnonzero(mask)) != list(indices.get(label, [])):
            raise UntrustedArtifact(f"{name}: the categorical preprocessor's columns are inconsistent")
        if label == "encoder" and type(transformer) is OrdinalEncoder:
            if len(transformer.categories_) != mask.sum() or int(transformer.n_features_in_) != mask.sum():
                raise UntrustedArtifact(f"{name}: the categorical encoder does not cover its columns")
        elif label == "numerical" and type(transformer) is FunctionTransformer:
            if not is_check_array(transformer.func) or transformer.inverse_func is not None or transformer.kw_args:
                raise UntrustedArtifact(f"{name}: the numerical pass-through is not check_array")
        elif not (label == "remainder" and isinstance(transformer, str) and not mask.any()):
            raise UntrustedArtifact(f"{name}: unexpected step {label!r} in the categorical preprocessor")
        covered += mask
    if (covered != 1).any():
        raise UntrustedArtifact(f"{name}: the categorical preprocessor does not keep every column once")


def is_check_array(func) -> bool:
    """functools.partial(check_array, dtype=…, ensure_all_finite=…) as HistGradientBoosting stores it."""
    return (isinstance(func, functools.partial) and func.func is check_array and not func.args
            and set(func.keywords) <= _CHECK_ARRAY_KEYWORDS)


def check_partials(found: list[Reached]) -> None:
    """Trusting functools.partial is safe only for the one partial HistGradientBoosting stores."""
    for reached in of_type(found, functools.partial):
        if not is_check_array(reached.obj):
            raise UntrustedArtifact("the artifact holds a functools.partial other than HistGradientBoosting's "
                                    "check_array")


def check_predictor(predictor, n_features: int, categorical: np.ndarray, where: str) -> None:
    """Raise UntrustedArtifact unless the TreePredictor is a binary tree rooted at node 0 whose children come
    after their parent and within the node array, whose splits use features in [0, n_features) (categorical
    splits: categorical features and a bitset row that exists), with finite values and no NaN threshold."""
    if type(predictor) is not TreePredictor:
        raise UntrustedArtifact(f"{where} is not a TreePredictor")
    nodes = predictor.nodes
    if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1:
        raise UntrustedArtifact(f"{where}: nodes are not an array of predictor records")
    n = len(nodes)
    if n < 1:
        raise UntrustedArtifact(f"{where} has no nodes")
    bitsets = []
    for field in ("raw_left_cat_bitsets", "binned_left_cat_bitsets"):
        array = getattr(predictor, field)
        if (not isinstance(array, np.ndarray) or array.dtype != X_BITSET_INNER_DTYPE or array.ndim != 2
                or array.shape[1] != BITSET_WORDS or not array.flags.c_contiguous):
            raise UntrustedArtifact(f"{where}: {field} is not an (n, {BITSET_WORDS}) uint32 array")
        bitsets.append(len(array))
    is_leaf = nodes["is_leaf"]
    if not np.isin(is_leaf, (0, 1)).all():
        raise UntrustedArtifact(f"{where}: is_leaf is not 0 or 1")
    if not np.isfinite(nodes["value"][is_leaf == 1]).all():
        raise UntrustedArtifact(f"{where} has non-finite leaf values")
    internal = np.flatnonzero(is_leaf == 0)
    left = nodes["left"][internal].astype(np.int64)
    right = nodes["right"][internal].astype(np.int64)
    for side, child in (("left", left), ("right", right)):
        if ((child <= internal) | (child >= n)).any():
            raise UntrustedArtifact(f"{where} has a {side} child index out of range or not after its parent")
    parents = np.bincount(np.concatenate([left, right]), minlength=n)
    if parents[0] != 0 or (parents[1:] != 1).any():
        raise UntrustedArtifact(f"{where}: nodes are not a single tree rooted at node 0")
    feature = nodes["feature_idx"][internal].astype(np.int64)
    if ((feature < 0) | (feature >= n_features)).any():
        raise UntrustedArtifact(f"{where} splits on a feature index outside [0, {n_features})")
    if np.isnan(nodes["num_threshold"][internal]).any():
        raise UntrustedArtifact(f"{where} has a NaN split threshold")
    split_categorical = nodes["is_categorical"][internal]
    if not np.isin(split_categorical, (0, 1)).all():
        raise UntrustedArtifact(f"{where}: is_categorical is not 0 or 1")
    cat = split_categorical == 1
    if cat.any():
        if not categorical[feature[cat]].all():
            raise UntrustedArtifact(f"{where} has a categorical split on a feature that is not categorical")
        if (nodes["bitset_idx"][internal][cat].astype(np.int64) >= min(bitsets)).any():
            raise UntrustedArtifact(f"{where} has a bitset index outside its bitset arrays")
