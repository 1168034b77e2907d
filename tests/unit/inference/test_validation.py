"""Input validation names the offending feature and refuses non-finite or implausible values."""
from __future__ import annotations

import math

import pytest

from inference.errors import InvalidFeatures
from inference.models.loader import load_estimator, read_manifest
from inference.models.runtime import LoadedModel
from tests.conftest import IRIS_ROW


@pytest.fixture
def model(model_store):
    path = model_store / "iris" / "2"
    manifest = read_manifest(path, None)
    return LoadedModel(manifest, load_estimator(path, manifest))


def test_valid_row_in_schema_order(model):
    shuffled = dict(reversed(list(IRIS_ROW.items())))
    assert model.vector(shuffled) == [5.1, 3.5, 1.4, 0.2]


@pytest.mark.parametrize("features, message", [
    ({k: v for k, v in IRIS_ROW.items() if k != "petal_width"}, "feature 'petal_width' is missing"),
    ({**IRIS_ROW, "colour": 1.0}, "unknown feature 'colour'"),
    ({**IRIS_ROW, "petal_width": math.nan}, "feature 'petal_width' is nan"),
    ({**IRIS_ROW, "sepal_length": math.inf}, "feature 'sepal_length' is inf"),
    ({**IRIS_ROW, "sepal_length": -math.inf}, "feature 'sepal_length' is -inf"),
    ({**IRIS_ROW, "petal_length": 1e30}, "feature 'petal_length'=1e+30 is outside the plausible range"),
    ({**IRIS_ROW, "petal_length": -1e6}, "feature 'petal_length'=-1e+06 is outside the plausible range"),
    ({}, "feature 'sepal_length' is missing"),
])
def test_invalid_rows_name_the_field(model, features, message):
    with pytest.raises(InvalidFeatures, match=message.replace("+", r"\+")):
        model.vector(features)


def test_row_index_is_named_in_batches(model):
    with pytest.raises(InvalidFeatures, match="row 3: feature 'petal_width' is nan"):
        model.vector({**IRIS_ROW, "petal_width": math.nan}, row=3)


def test_scores_are_probabilities_over_the_classes(model):
    probs = model.score([model.vector(IRIS_ROW)])[0]
    assert len(probs) == 3 and abs(sum(probs) - 1) < 1e-9
    assert model.label_of(probs) == "setosa"


@pytest.mark.parametrize("n_rows", [1, 3, 12])  # up to 8 rows are checked in Python, more with numpy
@pytest.mark.parametrize("value, message", [
    (math.nan, "feature 'petal_width' is nan"),
    (-math.inf, "feature 'petal_width' is -inf"),
    (1e30, "feature 'petal_width'=1e+30 is outside the plausible range"),
])
def test_row_lists_are_checked_alike_on_both_paths(model, n_rows, value, message):
    good = model.vector(IRIS_ROW)
    model.check_rows([good] * n_rows)
    rows = [list(good) for _ in range(n_rows)]
    rows[-1][3] = value
    where = f"row {n_rows - 1}: " if n_rows > 1 else ""
    with pytest.raises(InvalidFeatures, match="^" + (where + message).replace("+", r"\+")):
        model.check_rows(rows)


def test_without_range_check_only_non_finite_values_are_refused(model_store):
    path = model_store / "iris" / "2"
    manifest = read_manifest(path, None)
    lenient = LoadedModel(manifest, load_estimator(path, manifest), range_tolerance=0)
    lenient.check_rows([[1e30, 3.5, 1.4, 0.2]])
    assert lenient.vector({**IRIS_ROW, "petal_length": -1e300})[2] == -1e300
    for bad in (math.inf, math.nan):
        with pytest.raises(InvalidFeatures, match="send a finite number"):
            lenient.check_rows([[5.1, bad, 1.4, 0.2]])
        with pytest.raises(InvalidFeatures, match="send a finite number"):
            lenient.vector({**IRIS_ROW, "sepal_width": bad})


def test_the_plausible_range_is_the_training_range_widened_by_tolerance_spans_each_side(inproc_server):
    """README: a value more than PREDMESH_RANGE_TOLERANCE (10) training spans outside the training range is refused.
    iris sepal_width was trained on [2.0, 4.4] (span 2.4): [-22, 28.4] is accepted, beyond it refused, on a server."""
    from predmesh.client import Client
    from predmesh.errors import InvalidArgument

    server, target = inproc_server
    f = server.registry.get("iris").manifest.features[1]
    assert (f.name, f.min, f.max) == ("sepal_width", 2.0, 4.4)
    lo, hi = f.min - 10 * (f.max - f.min), f.max + 10 * (f.max - f.min)
    with Client(target) as client:
        for edge in (lo, hi):
            assert client.predict("iris", {**IRIS_ROW, "sepal_width": edge}).label
        for outside in (lo - 0.01, hi + 0.01, 30.0, -30.0):
            with pytest.raises(InvalidArgument, match=r"feature 'sepal_width'=.* is outside the plausible range "
                                                      rf"\[{lo:g}, {hi:g}\]"):
                client.predict("iris", {**IRIS_ROW, "sepal_width": outside})


@pytest.mark.parametrize("tolerance", [math.nan, -1.0, math.inf])
def test_a_tolerance_that_is_not_a_finite_non_negative_number_is_refused(model_store, tolerance):
    path = model_store / "iris" / "2"
    manifest = read_manifest(path, None)
    with pytest.raises(ValueError, match="range_tolerance"):
        LoadedModel(manifest, load_estimator(path, manifest), range_tolerance=tolerance)
