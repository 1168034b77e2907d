"""Train a classifier on a user's table (CSV or Parquet) and store it as a new "frame" version: each column's kind
inferred, a scikit-learn Pipeline (imputation, encoding of categories, scaling where the estimator needs it) fitted
on a stratified split, evaluated on the holdout, profiled, and written with its golden rows."""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
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
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.svm import SVC

from inference.models import profile
from inference.models.columns import TableError, check_classes, kind_of, labels, plain_rows, read_table
from inference.models.frame import to_frame
from inference.models.loader import dump_estimator
from inference.models.manifest import Feature, Manifest
from inference.models.store import ModelStore

log = logging.getLogger(__name__)
HOLDOUT = 0.3


@dataclass(frozen=True)
class Estimator:
    """A classifier choice of `predmesh train --estimator` (its help: inference/__main__.py ESTIMATOR_HELP): how to
    build it and whether it needs scaled inputs."""

    make: Callable[[int], Any]  # a scikit-learn classifier
    scaled: bool


ESTIMATORS = {
    "lr": Estimator(lambda seed: LogisticRegression(max_iter=1000, random_state=seed), scaled=True),
    "rf": Estimator(lambda seed: RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1), scaled=False),
    "et": Estimator(lambda seed: ExtraTreesClassifier(n_estimators=100, random_state=seed, n_jobs=1), scaled=False),
    "gb": Estimator(lambda seed: GradientBoostingClassifier(random_state=seed), scaled=False),
    # (pipeline() builds HistGradientBoosting with its categorical columns)
    "hgb": Estimator(lambda seed: HistGradientBoostingClassifier(random_state=seed), scaled=False),
    # SVC's own probability=True is deprecated (scikit-learn 1.9); this is its documented replacement: Platt
    # scaling fitted on 5-fold cross-validated decisions, one SVC fitted on all the rows
    "svc": Estimator(lambda seed: CalibratedClassifierCV(SVC(random_state=seed), ensemble=False), scaled=True),
    "knn": Estimator(lambda seed: KNeighborsClassifier(), scaled=True),
}


def pipeline(estimator: str, names: Sequence[str], kinds: Sequence[str], seed: int = 0) -> Pipeline:
    """A Pipeline over a DataFrame with these columns (frame.to_frame's dtypes): ColumnTransformer then the
    classifier. HistGradientBoosting takes categories and booleans ordinal-encoded as native categorical features
    (missing and unseen values as its missing value) and numbers as they are (it handles NaN); the others take
    numbers median-imputed, booleans and categories imputed with the most frequent value and one-hot encoded
    (an unseen category encodes as all zeros), scaled for the estimators that need it."""
    choice = ESTIMATORS[estimator]
    numbers = [n for n, k in zip(names, kinds) if k == "number"]
    coded = [n for n, k in zip(names, kinds) if k != "number"]
    if estimator == "hgb":
        parts: list[tuple] = []
        if coded:
            parts.append(("categories", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                                       max_categories=255), coded))
        if numbers:
            parts.append(("numbers", "passthrough", numbers))
        clf = HistGradientBoostingClassifier(random_state=seed, categorical_features=list(range(len(coded))) or None)
        return Pipeline([("columns", ColumnTransformer(parts, sparse_threshold=0.0)), ("classifier", clf)])
    scale = [StandardScaler()] if choice.scaled else []
    parts = []
    if numbers:
        parts.append(("numbers", make_pipeline(SimpleImputer(strategy="median"), *scale), numbers))
    if coded:
        parts.append(("categories", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                                  OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                      coded))
    return Pipeline([("columns", ColumnTransformer(parts, sparse_threshold=0.0)),
                     ("classifier", choice.make(seed))])


def train_table(store: ModelStore, data: Path, target: str, model: str, estimator: str = "hgb",
                drop: Sequence[str] = (), seed: int = 0) -> Manifest:
    """Fit the chosen estimator on the file's rows (every column but the target and the dropped ones is a
    feature), evaluate on a stratified holdout and write a new version; returns its manifest. Raises TableError
    naming the file or column when the data cannot be used as asked."""
    table = read_table(data)
    if target not in table.columns:
        raise TableError(f"target column {target!r} is not in {Path(data).name} (columns: "
                         f"{', '.join(map(str, table.columns))})")
    unknown = [c for c in drop if c not in table.columns]
    if unknown:
        raise TableError(f"--drop column {unknown[0]!r} is not in {Path(data).name}")
    if target in drop:
        raise TableError(f"target column {target!r} cannot be dropped")
    if table[target].isna().all():
        raise TableError(f"target column {target!r} is empty (no row has a value)")
    unlabelled = int(table[target].isna().sum())
    if unlabelled:
        log.warning("%s: %d rows have no %r: left out", data, unlabelled, target)
        table = table[table[target].notna()].reset_index(drop=True)
    names = [str(c) for c in table.columns if c != target and c not in drop]
    if not names:
        raise TableError(f"{Path(data).name} has no feature column besides the target {target!r}")
    y = labels(table, target)
    classes_seen, counts = np.unique(y, return_counts=True)
    check_classes([str(c) for c in classes_seen], f"target column {target!r}")
    if len(classes_seen) < 2:
        raise TableError(f"target column {target!r} has one class only ({classes_seen[0]!r}); a classifier needs "
                         f"at least two")
    if counts.min() < 2:
        raise TableError(f"target column {target!r}: class {classes_seen[int(np.argmin(counts))]!r} has one row; "
                         f"the stratified holdout needs at least two rows of each class")
    kinds = [kind_of(table[n]) for n in names]
    rows = plain_rows(table, names, kinds)
    schema = profile.typed_features(rows, names, kinds)
    try:
        x_train, x_test, y_train, y_test = train_test_split(rows, y, test_size=HOLDOUT, random_state=seed,
                                                            stratify=y)
    except ValueError as exc:  # e.g. fewer holdout rows than classes
        raise TableError(f"{Path(data).name}: no stratified {HOLDOUT:.0%} holdout of {len(y)} rows and "
                         f"{len(classes_seen)} classes of {target!r}: {exc}") from None
    try:
        clf = pipeline(estimator, names, kinds, seed).fit(to_frame(x_train, schema), y_train)
    except ValueError as exc:  # scikit-learn's refusals of the data (the kinds above make them rare)
        raise TableError(f"{Path(data).name}: fitting {estimator} failed: {' '.join(str(exc).split())}") from None
    classes = [str(c) for c in clf.classes_]
    score = profile.scorer(clf, schema, "frame")
    test_proba = score(x_test)
    train_proba = score(x_train)
    metrics = {"train_accuracy": float(np.mean(clf.classes_[train_proba.argmax(axis=1)] == y_train)),
               **profile.metrics("holdout", y_test, clf.classes_[test_proba.argmax(axis=1)], test_proba,
                                 list(clf.classes_))}
    features = profile.probe(score, x_test, schema)
    artifact = dump_estimator(clf)
    manifest = Manifest(
        name=model, version="", features=features, classes=tuple(classes),
        sha256=hashlib.sha256(artifact).hexdigest(), metrics=metrics, created_at=datetime.now(UTC),
        sklearn_version=sklearn.__version__, estimator=profile.estimator_name(clf),
        golden=profile.golden_rows(score, x_test, classes),
        class_profiles=profile.typed_class_profiles(clf.classes_, rows, features, y), input="frame")
    stored = store.write(manifest, artifact)
    log.info("trained %s version %s (%s) from %s: holdout accuracy %.3f", model, stored.version, stored.estimator,
             data, metrics["holdout_accuracy"])
    return stored


def describe(features: Sequence[Feature]) -> str:
    """'7 features: 4 number, 2 category, 1 boolean'."""
    counts = {k: sum(f.kind == k for f in features) for k in ("number", "category", "boolean")}
    return f"{len(features)} features: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
