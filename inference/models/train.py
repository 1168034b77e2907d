"""Train a classifier on the bundled Iris data and store it as a new immutable version."""
from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, precision_score
from sklearn.model_selection import train_test_split

from inference.models.loader import dump_estimator
from inference.models.manifest import ClassProfile, Feature, Manifest
from inference.models.store import ModelStore

log = logging.getLogger(__name__)

ESTIMATORS = {
    "lr": lambda seed: LogisticRegression(max_iter=1000, random_state=seed),
    "rf": lambda seed: RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1),
}
GOLDEN_ROWS = 8


def train(store: ModelStore, model: str = "iris", estimator: str = "lr", seed: int = 0) -> Manifest:
    """Fit, evaluate on a holdout split, and write a new version with its manifest; returns the manifest."""
    iris = load_iris()
    names = [n.removesuffix(" (cm)").replace(" ", "_") for n in iris.feature_names]
    classes = [str(c) for c in iris.target_names]
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, iris.target, test_size=0.3, random_state=seed, stratify=iris.target)
    clf = ESTIMATORS[estimator](seed).fit(x_train, y_train)
    predicted = clf.predict(x_test)
    metrics = {
        "train_accuracy": float(accuracy_score(y_train, clf.predict(x_train))),
        "holdout_accuracy": float(accuracy_score(y_test, predicted)),
        "holdout_macro_precision": float(precision_score(y_test, predicted, average="macro", zero_division=0)),
    }
    golden_x = x_test[:GOLDEN_ROWS]
    golden = tuple(
        {"features": [float(v) for v in row], "label": classes[int(np.argmax(p))], "probabilities": p.tolist()}
        for row, p in zip(golden_x, clf.predict_proba(golden_x)))
    artifact = dump_estimator(clf)
    manifest = Manifest(
        name=model, version="", sha256=hashlib.sha256(artifact).hexdigest(), metrics=metrics,
        features=features(names, iris.data), class_profiles=class_profiles(classes, iris.data, iris.target),
        classes=tuple(classes), created_at=datetime.now(UTC), sklearn_version=sklearn.__version__,
        estimator=type(clf).__name__, golden=golden)
    stored = store.write(manifest, artifact)
    log.info("trained %s version %s (%s): holdout accuracy %.3f", model, stored.version, stored.estimator,
             metrics["holdout_accuracy"])
    return stored


def features(names: list[str], x: np.ndarray) -> tuple[Feature, ...]:
    """The schema with the training distribution of each feature: range, mean, std and decile edges."""
    deciles = np.percentile(x, np.arange(10, 100, 10), axis=0)
    return tuple(
        Feature(name, float(x[:, i].min()), float(x[:, i].max()), float(x[:, i].mean()), float(x[:, i].std()),
                tuple(float(q) for q in deciles[:, i]), bin_shares(x[:, i], deciles[:, i]))
        for i, name in enumerate(names))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> tuple[float, ...]:
    """The share of values in each bin the edges make (bin i: edges[i-1] < v <= edges[i]), as drift bins them."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return tuple(float(c) for c in counts / len(values))


def class_profiles(classes: list[str], x: np.ndarray, y: np.ndarray) -> tuple[ClassProfile, ...]:
    """Per class (in class order): share of the training rows and per-feature mean and std."""
    return tuple(
        ClassProfile(label, float(np.mean(y == k)), tuple(float(v) for v in x[y == k].mean(axis=0)),
                     tuple(float(v) for v in x[y == k].std(axis=0)))
        for k, label in enumerate(classes))
