"""Every estimator the loader accepts, each fitted in a pipeline on the typed fixture table (a number with gaps, a
number, a category with gaps, a boolean) and stored as a version, for round-trip and crafted-artifact tests."""
from __future__ import annotations

import copy
import functools
import hashlib
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.svm import SVC

from tests.support.typed_model import FEATURES, table

NUMBERS = ["tenure", "monthly", "senior"]


def _onehot() -> ColumnTransformer:
    return ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMBERS),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         ["contract"]),
    ])


def _ordinal() -> ColumnTransformer:
    """Categories as codes (missing and unknown: NaN), numbers passed through: for native categorical HGB."""
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan)
    return ColumnTransformer([("cat", encoder, ["contract"])], remainder="passthrough")


def _senior_as_float() -> ColumnTransformer:
    return ColumnTransformer([("cat", "passthrough", ["contract"]),
                              ("num", SimpleImputer(strategy="median"), NUMBERS)]).set_output(transform="pandas")


ESTIMATORS = {
    "logistic": lambda: Pipeline([("pre", _onehot()), ("clf", LogisticRegression(max_iter=1000))]),
    "forest": lambda: Pipeline([("pre", _onehot()), ("clf", RandomForestClassifier(20, random_state=0))]),
    "extra": lambda: Pipeline([("pre", _onehot()), ("clf", ExtraTreesClassifier(20, random_state=0))]),
    "gboost": lambda: Pipeline([("pre", _onehot()), ("clf", GradientBoostingClassifier(n_estimators=20))]),
    "hgb": lambda: Pipeline([("pre", _onehot()), ("clf", HistGradientBoostingClassifier(max_iter=20))]),
    "hgb-categorical": lambda: Pipeline([("pre", _ordinal()), ("clf", HistGradientBoostingClassifier(
        max_iter=20, categorical_features=[0]))]),
    "hgb-from-dtype": lambda: Pipeline([("pre", _senior_as_float()), ("clf", HistGradientBoostingClassifier(
        max_iter=20, categorical_features="from_dtype"))]),
    "svc-probability": lambda: Pipeline([("pre", _onehot()), ("clf", SVC(probability=True, random_state=0))]),
    "svc-calibrated": lambda: Pipeline([("pre", _onehot()), ("clf", CalibratedClassifierCV(SVC(), ensemble=False))]),
    "kneighbors": lambda: Pipeline([("pre", _onehot()), ("clf", KNeighborsClassifier(7))]),
    "kneighbors-ball": lambda: Pipeline([("pre", _onehot()), ("clf", KNeighborsClassifier(
        7, algorithm="ball_tree", p=1, weights="distance"))]),
    "kneighbors-brute": lambda: Pipeline([("pre", _onehot()), ("clf", KNeighborsClassifier(7, algorithm="brute"))]),
}


def fitted(kind: str, classes: int = 2):
    """ESTIMATORS[kind] fitted on the fixture table (churn yes/no; three classes: a label from monthly), and the
    rows: a fresh copy each call (fits are cached: boosting fits are slow on a busy machine)."""
    estimator, rows = _fitted(kind, classes)
    return copy.deepcopy(estimator), rows.copy()


@functools.cache
def _fitted(kind: str, classes: int):
    df = table()
    x = df[list(FEATURES)]
    y = df["churn"] if classes == 2 else np.where(df["monthly"] < 60, "low", np.where(df["monthly"] < 80, "mid",
                                                                                           "high"))
    if kind == "hgb-from-dtype":
        x = x.assign(contract=x["contract"].astype("category"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # SVC(probability=True) is deprecated in 1.9
        return ESTIMATORS[kind]().fit(x, y), x


def store(root: Path, model: str, estimator, rows: pd.DataFrame, classes: tuple[str, ...] = ()) -> Path:
    """Store estimator as a new "frame" version (schema: the fixture's four features; classes: the estimator's
    unless given); returns its directory."""
    import sklearn

    from inference.models.loader import dump_estimator
    from inference.models.manifest import Feature, Manifest
    from inference.models.store import ModelStore

    features = (Feature("tenure", 0.0, 71.0, nullable=True), Feature("monthly", 0.0, 150.0),
                Feature("contract", 0.0, 0.0, kind="category", nullable=True, accepts_unknown=True,
                        categories=(("Month-to-month", 0.5), ("One year", 0.3), ("Two year", 0.2))),
                Feature("senior", 0.0, 1.0, kind="boolean", nullable=True,
                        categories=(("false", 0.8), ("true", 0.2))))
    artifact = dump_estimator(estimator)
    manifest = Manifest(
        name=model, version="", features=features, classes=classes or tuple(str(c) for c in estimator.classes_),
        sha256=hashlib.sha256(artifact).hexdigest(), metrics={}, created_at=datetime.now(UTC),
        sklearn_version=sklearn.__version__, estimator=type(estimator).__name__, golden=(), input="frame")
    written = ModelStore(root).write(manifest, artifact)
    return root / model / written.version


def crafted(root: Path, kind: str, mutate, classes: int = 3) -> Path:
    """ESTIMATORS[kind] fitted, then mutate(final estimator) altering its fitted state, stored with a correct hash:
    only the structure is wrong."""
    estimator, rows = fitted(kind, classes)
    mutate(estimator[-1])
    return store(root, f"crafted-{kind}", estimator, rows)


# ---- crafted variants: each mutate(final estimator) leaves a structure that compiled code would follow -------------

def _hgb_node(est, categorical: bool | None = None) -> tuple[np.ndarray, int]:
    """The nodes of the first predictor holding a split of the wanted kind, and that split's index."""
    for stage in est._predictors:
        for predictor in stage:
            nodes = predictor.nodes
            for i in np.flatnonzero(nodes["is_leaf"] == 0):
                if categorical is None or bool(nodes["is_categorical"][i]) == categorical:
                    return nodes, int(i)
    raise AssertionError("no such split")


def _hgb_set(field: str, value, categorical: bool | None = None):
    def mutate(est):
        nodes, i = _hgb_node(est, categorical)
        nodes[field][i] = value
    return mutate


def _hgb_leaf_value(est):
    nodes = est._predictors[0][0].nodes
    nodes["value"][np.flatnonzero(nodes["is_leaf"])[0]] = np.inf


def _hgb_narrow_bitsets(est):
    for stage in est._predictors:
        for predictor in stage:
            predictor.raw_left_cat_bitsets = np.ascontiguousarray(predictor.raw_left_cat_bitsets[:, :4])


def _hgb_drop_column(est):
    """The categorical preprocessor no longer passes the last numeric column on (rows arrive one column short)."""
    pre = est._preprocessor
    label, transformer, mask = pre.transformers_[1]
    mask = np.array(mask, dtype=bool)
    mask[np.flatnonzero(mask)[-1]] = False
    pre.transformers_[1] = (label, transformer, mask)
    pre._transformer_to_input_indices[label] = list(np.flatnonzero(mask))


def _hgb_orphan(est):
    stray = copy.deepcopy(est._predictors[0][0])
    stray.nodes["left"][0] = 10 ** 9
    est.stray_ = [stray]


def _hgb_partial(est):
    import functools

    from sklearn.utils.validation import check_array
    est._preprocessor.transformers_[1][1].func = functools.partial(check_array, ensure_min_samples=10 ** 9)


def _gb_tree_child(est):
    tree = est.estimators_[0, 0].tree_
    state = tree.__getstate__()
    nodes = state["nodes"]
    nodes[0]["left_child"] = 10 ** 9
    tree.__setstate__(state)


def _gb_stage_columns(est):
    est.estimators_ = np.ascontiguousarray(est.estimators_[:, :2])


def _gb_init(est):
    est.init_.class_prior_ = est.init_.class_prior_[:2]


def _forest_negative_count(est):
    tree = est.estimators_[0].tree_
    state = tree.__getstate__()
    state["values"][1, 0, 0] = -1.0
    tree.__setstate__(state)


def _forest_wider_tree(est):
    """One tree (and its estimator) claims a feature more than the forest validates rows against, and splits on it."""
    from sklearn.tree._tree import Tree
    owner = est.estimators_[0]
    old = owner.tree_
    state = old.__getstate__()
    state["nodes"][0]["feature"] = est.n_features_in_
    wider = Tree(est.n_features_in_ + 1, old.n_classes, old.n_outputs)
    wider.__setstate__(state)
    owner.tree_ = wider
    owner.n_features_in_ = est.n_features_in_ + 1


def _kd_scrambled(est):
    state = list(est._tree.__getstate__())
    state[1] = np.full_like(state[1], 10 ** 12)  # idx_array: not a permutation, far out of range
    est._tree.__setstate__(tuple(state))


def _kd_nan(est):
    est._fit_X[0, 0] = np.nan


def _kd_label(est):
    est._y[0] = 99


def _kd_metric(est):
    est.effective_metric_ = "mahalanobis"


def _kd_stray_metric(est):
    from sklearn.metrics import DistanceMetric
    est.stray_ = DistanceMetric.get_metric("minkowski", p=3)


def _kd_neighbours(est):
    est.n_neighbors = 10 ** 6


def _svc_counts(est):
    est._n_support = est._n_support * 1000


def _svc_intercepts(est):
    est._intercept_ = est._intercept_[:1]


def _svc_platt(est):
    est._probA = est._probA[:1]


def _svc_kernel(est):
    est.kernel = "precomputed"


def _cal_sigmoid(est):
    est.calibrated_classifiers_[0].calibrators[0].a_ = np.float64(np.nan)


def _cal_count(est):
    del est.calibrated_classifiers_[0].calibrators[1:]


# name → (estimator kind, mutation, words the refusal names); None: the loader repairs it (rebuilt index)
CRAFTS = {
    "hgb child out of range": ("hgb-categorical", _hgb_set("left", 10 ** 9), "child index out of range"),
    "hgb cycle": ("hgb-categorical", _hgb_set("right", 0), "not after its parent"),
    "hgb feature index": ("hgb-categorical", _hgb_set("feature_idx", 10 ** 6), "feature index outside"),
    "hgb negative feature": ("hgb-categorical", _hgb_set("feature_idx", -1), "feature index outside"),
    "hgb bitset index": ("hgb-categorical", _hgb_set("bitset_idx", 10 ** 6, True), "bitset index"),
    "hgb NaN threshold": ("hgb-categorical", _hgb_set("num_threshold", np.nan, False), "NaN split threshold"),
    "hgb infinite leaf": ("hgb-categorical", _hgb_leaf_value, "non-finite leaf values"),
    "hgb categorical split on a number": ("hgb-categorical", _hgb_set("is_categorical", 1, False),
                                          "not categorical"),
    "hgb bitset shape": ("hgb-categorical", _hgb_narrow_bitsets, "raw_left_cat_bitsets"),
    "hgb preprocessor drops a column": ("hgb-categorical", _hgb_drop_column, "every column"),
    "hgb stray predictor": ("hgb-categorical", _hgb_orphan, "outside a HistGradientBoosting"),
    "hgb other partial": ("hgb-categorical", _hgb_partial, "check_array"),
    "gboost child out of range": ("gboost", _gb_tree_child, "tree 0 of DecisionTreeRegressor"),
    "gboost stage grid": ("gboost", _gb_stage_columns, "grid of stages"),
    "gboost init": ("gboost", _gb_init, "prior DummyClassifier"),
    "forest negative class count": ("forest", _forest_negative_count, "negative leaf values"),
    "forest tree wider than the forest": ("forest", _forest_wider_tree, "inside a RandomForestClassifier"),
    "kneighbors NaN point": ("kneighbors", _kd_nan, "finite numeric matrix"),
    "kneighbors label out of range": ("kneighbors", _kd_label, "labels outside"),
    "kneighbors metric": ("kneighbors", _kd_metric, "mahalanobis"),
    "kneighbors stray metric": ("kneighbors", _kd_stray_metric, "MinkowskiDistance64"),
    "kneighbors n_neighbors": ("kneighbors", _kd_neighbours, "n_neighbors"),
    "svc support counts": ("svc-probability", _svc_counts, "do not agree"),
    "svc intercepts": ("svc-probability", _svc_intercepts, "do not agree"),
    "svc Platt parameters": ("svc-probability", _svc_platt, "do not agree"),
    "svc precomputed kernel": ("svc-probability", _svc_kernel, "built-in kernel"),
    "calibration NaN sigmoid": ("svc-calibrated", _cal_sigmoid, "not finite"),
    "calibration missing calibrator": ("svc-calibrated", _cal_count, "calibrators"),
    "kneighbors scrambled index": ("kneighbors", _kd_scrambled, None),
    "kneighbors-ball scrambled index": ("kneighbors-ball", _kd_scrambled, None),
}
