"""The estimators people use load from the store, inside pipelines, and score exactly as they were fitted."""
from __future__ import annotations

import numpy as np
import pytest

from inference.models.loader import load_estimator, read_manifest
from inference.models.structure import TRUSTED_TYPES
from tests.support.estimators import ESTIMATORS, fitted, store


def _load(path):
    return load_estimator(path, read_manifest(path, None))


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_every_accepted_estimator_round_trips_and_predicts_identically(tmp_path, kind, classes):
    estimator, rows = fitted(kind, classes)
    loaded = _load(store(tmp_path, "m", estimator, rows))
    assert type(loaded[-1]) is type(estimator[-1])
    expected = estimator.predict_proba(rows)
    assert np.allclose(loaded.predict_proba(rows), expected, rtol=0, atol=1e-12)
    assert (loaded.predict(rows) == estimator.predict(rows)).all()
    assert len(expected[0]) == classes


def test_boosting_trees_with_negative_leaves_are_accepted(tmp_path):
    estimator, rows = fitted("gboost", 2)
    values = np.concatenate([t.tree_.value.ravel() for t in estimator[-1].estimators_.ravel()])
    assert (values < 0).any()  # the case the old check refused
    assert np.allclose(_load(store(tmp_path, "m", estimator, rows)).predict_proba(rows),
                       estimator.predict_proba(rows), rtol=0, atol=1e-12)


def test_native_categorical_splits_are_exercised(tmp_path):
    estimator, rows = fitted("hgb-categorical", 3)
    loaded = _load(store(tmp_path, "m", estimator, rows))[-1]
    assert any(p.nodes["is_categorical"].any() for stage in loaded._predictors for p in stage)
    assert loaded._bin_mapper.is_categorical_.any()


def test_trusted_types_are_exactly_the_checked_ones():
    assert {
        "numpy.dtype", "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "functools.partial", "sklearn.utils.validation.check_array",
        "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree",
        "sklearn.metrics._dist_metrics.EuclideanDistance64", "sklearn.metrics._dist_metrics.ManhattanDistance64",
        "sklearn.metrics._dist_metrics.ChebyshevDistance64", "sklearn.metrics._dist_metrics.MinkowskiDistance64",
        "sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration",
    } == TRUSTED_TYPES
