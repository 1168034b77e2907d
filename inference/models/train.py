"""Train a classifier on the bundled Iris data (the demo) and store it as a new immutable version; a user's own
table is inference/models/tabular.py."""
from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

import numpy as np
import sklearn
from sklearn.datasets import load_iris
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split

from inference.models.loader import dump_estimator
from inference.models.manifest import Manifest
from inference.models.profile import GOLDEN_ROWS, class_profiles, features
from inference.models.profile import metrics as holdout_metrics
from inference.models.store import ModelStore
from inference.models.tabular import ESTIMATORS

log = logging.getLogger(__name__)


def train(store: ModelStore, model: str = "iris", estimator: str = "lr", seed: int = 0,
          shuffle_labels: bool = False) -> Manifest:
    """Fit, evaluate on a holdout split, and write a new version with its manifest; returns the manifest.
    shuffle_labels: fit on the training labels shuffled (a deliberately bad version, for canary drills)."""
    iris = load_iris()
    names = [n.removesuffix(" (cm)").replace(" ", "_") for n in iris.feature_names]
    classes = [str(c) for c in iris.target_names]
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data, iris.target, test_size=0.3, random_state=seed, stratify=iris.target)
    if shuffle_labels:
        y_train = np.random.default_rng(seed).permutation(y_train)
    clf = ESTIMATORS[estimator].make(seed).fit(x_train, y_train)
    metrics = {"train_accuracy": float(accuracy_score(y_train, clf.predict(x_train))),
               **holdout_metrics("holdout", y_test, clf.predict(x_test), clf.predict_proba(x_test), clf.classes_)}
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

