"""The native runtime: kernels reproduce scikit-learn's predict_proba, and one that does not is never used."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

from inference.models import kernels
from inference.models.loader import load_estimator, read_manifest, version_dir

X, Y = load_iris(return_X_y=True)



def built(estimator) -> kernels.Kernel:
    kernel = kernels.build(estimator)
    assert kernel is not None, estimator
    return kernel

@pytest.mark.parametrize("estimator", [
    LogisticRegression(max_iter=1000), RandomForestClassifier(n_estimators=30, random_state=0),
    DecisionTreeClassifier(random_state=0),
])
def test_kernel_equals_predict_proba(estimator):
    estimator.fit(X, Y)
    kernel = built(estimator)
    rows = np.random.default_rng(1).uniform(X.min(axis=0) - 1, X.max(axis=0) + 1, size=(300, 4))
    assert np.allclose(kernel(rows), estimator.predict_proba(rows), rtol=0, atol=1e-12)
    assert np.allclose(kernel(rows[:1]), estimator.predict_proba(rows[:1]), rtol=0, atol=1e-12)


def test_binary_logistic_regression():
    estimator = LogisticRegression(max_iter=1000).fit(X[Y < 2], Y[Y < 2])
    assert np.allclose(built(estimator)(X), estimator.predict_proba(X), rtol=0, atol=1e-12)


def test_unsupported_estimator_has_no_kernel():
    assert kernels.build(GradientBoostingClassifier(n_estimators=5).fit(X, Y)) is None


def _stored(trained_store, version):
    path = version_dir(trained_store, "iris", version)
    manifest = read_manifest(path, None)
    return load_estimator(path, manifest), manifest


def test_verified_kernel_for_stored_models(trained_store):
    for version in ("1", "2"):  # RandomForest(100), LogisticRegression
        estimator, manifest = _stored(trained_store, version)
        assert kernels.verified_kernel(estimator, manifest) is not None


def test_disagreeing_kernel_is_refused(trained_store, monkeypatch):
    estimator, manifest = _stored(trained_store, "2")
    good = built(estimator)
    monkeypatch.setattr(kernels, "build", lambda est: (lambda x: good(x) + 1e-6))
    assert kernels.verified_kernel(estimator, manifest) is None
    monkeypatch.setattr(kernels, "build", lambda est: (lambda x: 1 / 0))
    assert kernels.verified_kernel(estimator, manifest) is None


def test_server_uses_the_kernel_only_when_asked(model_store):
    from prometheus_client import CollectorRegistry

    from inference.metrics import ServerMetrics
    from inference.models.registry import ModelRegistry
    from inference.models.store import ModelStore

    for runtime in ("sklearn", "native"):
        registry = ModelRegistry(ModelStore(model_store), ServerMetrics(CollectorRegistry()), runtime=runtime)
        registry.load_all()
        assert registry.get("iris").runtime == runtime


def test_frame_models_and_pipelines_score_with_scikit_learn(trained_store, tmp_path):
    from dataclasses import replace

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tests.support.typed_model import write_typed_model

    written, _ = write_typed_model(tmp_path)
    path = version_dir(tmp_path, "churn", written.version)
    typed = read_manifest(path, None)
    assert typed.input == "frame"
    assert kernels.verified_kernel(load_estimator(path, typed), typed) is None
    estimator, manifest = _stored(trained_store, "2")  # Iris LogisticRegression: verified when given arrays
    assert kernels.verified_kernel(estimator, manifest) is not None
    # the same estimator behind a frame manifest, or wrapped in a pipeline, is never given a kernel
    assert kernels.verified_kernel(estimator, replace(manifest, input="frame")) is None
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, Y)
    assert kernels.verified_kernel(pipeline, manifest) is None
