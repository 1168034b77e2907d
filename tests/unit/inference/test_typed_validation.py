"""Typed features at the edge (DESIGN-22 section 4): each value is checked against its feature's kind, nullability,
categories and plausible range, with a message naming the feature; a frame model scores exactly what its pipeline
gives for the same rows through frame.to_frame. The model is the typed fixture (tests/support/typed_model.py):
tenure (number, nullable), monthly (number), contract (category, nullable, accepts unknown), senior (boolean,
nullable); variants of its manifest make the other cases (not nullable, unknown categories refused)."""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

from inference.errors import InvalidFeatures, ReloadFailed
from inference.models.frame import to_frame
from inference.models.loader import load_estimator, version_dir
from inference.models.manifest import Manifest
from inference.models.registry import ModelRegistry
from inference.models.runtime import LoadedModel
from tests.support.typed_model import write_typed_model

ROW = {"tenure": 3, "monthly": 80.5, "contract": "Month-to-month", "senior": True}
NAMES = ("tenure", "monthly", "contract", "senior")


@pytest.fixture(scope="module")
def typed(tmp_path_factory):
    root = tmp_path_factory.mktemp("typed")
    manifest, pipeline = write_typed_model(root)
    estimator = load_estimator(version_dir(root, "churn", manifest.version), manifest)
    return root, manifest, estimator, pipeline


@pytest.fixture(scope="module")
def model(typed):
    _, manifest, estimator, _ = typed
    return LoadedModel(manifest, estimator)


def strict(manifest: Manifest) -> Manifest:
    """The same model with nothing nullable and unknown categories refused."""
    return dataclasses.replace(manifest, features=tuple(
        dataclasses.replace(f, nullable=False, accepts_unknown=False) for f in manifest.features))


@pytest.fixture(scope="module")
def strict_model(typed):
    _, manifest, estimator, _ = typed
    return LoadedModel(strict(manifest), estimator)


def test_the_fixture_is_what_the_design_says(typed):
    _, manifest, _, _ = typed
    assert manifest.input == "frame" and manifest.feature_names == NAMES
    assert [(f.kind, f.nullable, f.accepts_unknown) for f in manifest.features] == [
        ("number", True, False), ("number", False, False), ("category", True, True), ("boolean", True, False)]


def test_a_valid_row_is_plain_values_in_schema_order(model):
    shuffled = dict(reversed(list(ROW.items())))
    row = model.vector(shuffled)
    assert row == [3.0, 80.5, "Month-to-month", True] and type(row[0]) is float
    assert model.vector({**ROW, "tenure": None, "contract": None, "senior": None}) == [None, 80.5, None, None]
    assert model.runtime == "sklearn" and model.frame


def test_probabilities_are_the_pipelines_own(typed, model):
    _, manifest, _, pipeline = typed
    rows = [model.vector(ROW), model.vector({**ROW, "tenure": None, "contract": "Two year", "senior": False}),
            model.vector({**ROW, "contract": "Never seen", "senior": None})]
    expected = pipeline.predict_proba(to_frame(rows, manifest.features))
    np.testing.assert_allclose(model.score(rows), expected, rtol=0, atol=1e-12)
    for row, probabilities in zip(rows, expected):  # one at a time too: the batcher's own single-row path
        np.testing.assert_allclose(model.score([row])[0], probabilities, rtol=0, atol=1e-12)


@pytest.mark.parametrize("change, hinted", [
    ({"tenure": math.nan}, True), ({"contract": math.nan}, True), ({"senior": math.nan}, True),
    ({"monthly": math.nan}, False),  # not nullable: a missing value would be refused too
    ({"tenure": math.inf}, False),
])
def test_a_nan_where_a_gap_is_accepted_says_a_gap_is_null(model, change, hinted):
    """A row from pandas (df.to_dict("records")) carries NaN for every gap, also in text columns: the refusal said
    only "got nan" or "send a finite number", never that the gap the model accepts is sent as null (None)."""
    with pytest.raises(InvalidFeatures) as info:
        model.vector({**ROW, **change})
    assert ("a missing value is null (None in Python): NaN, pandas' gap, is not" in str(info.value)) is hinted


@pytest.mark.parametrize("change, message", [
    # number
    ({"tenure": "abc"}, "feature 'tenure' is a number; got the string 'abc'"),
    ({"tenure": True}, "feature 'tenure' is a number; got true"),
    ({"monthly": False}, "feature 'monthly' is a number; got false"),
    ({"monthly": None}, "feature 'monthly' is missing (null) and this model cannot impute it; send a number"),
    ({"tenure": math.nan}, "feature 'tenure' is nan; send a finite number"),
    ({"monthly": math.inf}, "feature 'monthly' is inf; send a finite number"),
    ({"tenure": 1e9}, "feature 'tenure'=1e+09 is outside the plausible range"),
    # category
    ({"contract": 3.0}, ("feature 'contract' is categorical: send one of its categories as a string "
                        "(e.g. 'Month-to-month'); got 3")),
    ({"contract": True}, ("feature 'contract' is categorical: send one of its categories as a string "
                         "(e.g. 'Month-to-month'); got true")),
    # boolean
    ({"senior": 1.0}, "feature 'senior' is a boolean; send true or false"),
    ({"senior": "true"}, "feature 'senior' is a boolean; send true or false"),
    # names
    ({"extra": 1.0}, "unknown feature 'extra'"),
])
def test_each_refusal_names_the_feature(model, change, message):
    with pytest.raises(InvalidFeatures) as info:
        model.vector({**ROW, **change})
    assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(InvalidFeatures, match="^row 4: " + message.replace("(", r"\(").replace(")", r"\)")
                       .replace("+", r"\+").replace(".", r"\.")):
        model.vector({**ROW, **change}, row=4)


@pytest.mark.parametrize("change, message", [
    ({"tenure": None}, "feature 'tenure' is missing (null) and this model cannot impute it; send a number"),
    ({"contract": None}, "feature 'contract' is missing (null) and this model cannot impute it"),
    ({"senior": None}, ("feature 'senior' is missing (null) and this model cannot impute it; it is a boolean; send "
                       "true or false")),
    ({"contract": "Zzz"}, ("feature 'contract' has no category 'Zzz'; expected one of 'Month-to-month', 'One year', "
                          "'Two year'")),
])
def test_what_a_model_cannot_take_is_refused_and_what_it_can_is_scored(model, strict_model, change, message):
    assert model.vector({**ROW, **change})  # the fixture imputes, and handles unknown categories
    with pytest.raises(InvalidFeatures) as info:
        strict_model.vector({**ROW, **change})
    assert str(info.value).startswith(message), str(info.value)


def test_an_unknown_category_lists_at_most_ten(typed):
    _, manifest, estimator, _ = typed
    many = tuple((f"c{i:02d}", 1 / 12) for i in range(12))
    features = tuple(dataclasses.replace(f, categories=many, accepts_unknown=False) if f.kind == "category" else f
                     for f in manifest.features)
    model = LoadedModel(dataclasses.replace(manifest, features=features), estimator)
    with pytest.raises(InvalidFeatures) as info:
        model.vector({**ROW, "contract": "zz"})
    listed = ", ".join(f"'c{i:02d}'" for i in range(10))
    assert str(info.value) == f"feature 'contract' has no category 'zz'; expected one of {listed}, …"


def test_matrix_columns_check_each_row_and_keep_the_others(typed, model, strict_model):
    _, manifest, _, pipeline = typed
    values = np.array([[3, 80.5, 1], [np.nan, 70, np.nan], [5, np.nan, 0.5], [7, 60, 0]], dtype=float)
    strings = {"contract": ["One year", None, "Two year", "New"]}
    matrix, refused = model.columns(values, ("tenure", "monthly", "senior"), strings, partial=True)
    assert refused == {2: "feature 'monthly' is missing (null) and this model cannot impute it; send a number"}
    assert matrix.dtype == object and matrix.tolist()[1] == [None, 70.0, None, None]
    assert matrix.tolist()[0] == [3.0, 80.5, "One year", True] and matrix.tolist()[3][3] is False
    kept = matrix[[0, 1, 3]]
    np.testing.assert_allclose(model.score(kept), pipeline.predict_proba(to_frame(kept, manifest.features)),
                               rtol=0, atol=1e-12)
    with pytest.raises(InvalidFeatures, match=r"^row 2: feature 'monthly' is missing"):
        model.columns(values, ("tenure", "monthly", "senior"), strings)
    # the strict variant: missing values and the unknown category are refused per row
    _, refused = strict_model.columns(values, ("tenure", "monthly", "senior"), strings, partial=True)
    assert refused[1].startswith("feature 'tenure' is missing (null)")
    assert refused[3].startswith("feature 'contract' has no category 'New'")
    assert 0 not in refused
    # a boolean other than 0 / 1, in another column order
    _, refused = model.columns(values[:, [2, 0, 1]], ("senior", "tenure", "monthly"), strings, partial=True)
    assert refused[2] == "feature 'monthly' is missing (null) and this model cannot impute it; send a number"


def test_matrix_columns_of_the_wrong_kind_are_refused_naming_the_feature(model):
    values = np.array([[3, 80.5, 1.0, 1.0]])
    with pytest.raises(InvalidFeatures, match=r"matrix\.feature_names: feature 'contract' is categorical"):
        model.columns(values, NAMES, {})
    with pytest.raises(InvalidFeatures, match=r"matrix\.string_columns: feature 'tenure' is a number"):
        model.columns(values[:, [1, 3]], ("monthly", "senior"), {"tenure": ["3"], "contract": ["One year"]})
    bad = np.array([[3, 80.5, 0.5]])
    with pytest.raises(InvalidFeatures, match=r"feature 'senior' is a boolean; send true or false \(1 or 0"):
        model.columns(bad, ("tenure", "monthly", "senior"), {"contract": ["One year"]})


def test_an_array_model_keeps_its_float_path_and_nullable_numbers_become_nan(model_store):
    from inference.models.loader import read_manifest

    path = model_store / "iris" / "2"
    manifest = read_manifest(path, None)
    estimator = load_estimator(path, manifest)
    iris = LoadedModel(manifest, estimator)
    row = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
    assert iris.vector(row) == [5.1, 3.5, 1.4, 0.2] and not iris.frame
    with pytest.raises(InvalidFeatures, match=r"feature 'petal_width' is a number; got the string '0\.2'"):
        iris.vector({**row, "petal_width": "0.2"})
    with pytest.raises(InvalidFeatures, match="feature 'petal_width' is missing \\(null\\)"):
        iris.vector({**row, "petal_width": None})
    # an array model whose manifest says a number is nullable (its estimator handles NaN): None → NaN
    features = tuple(dataclasses.replace(f, nullable=f.name == "petal_width") for f in manifest.features)
    lenient = LoadedModel(dataclasses.replace(manifest, features=features), estimator)
    assert lenient.vector({**row, "petal_width": None})[3] is None
    matrix = np.array([[5.1, 3.5, 1.4, np.nan]])
    assert lenient.refused_rows(matrix) == {} and iris.refused_rows(matrix)
    lenient.check_matrix(matrix)


def test_the_smoke_test_checks_typed_golden_rows(typed):
    root, manifest, _, _ = typed
    from prometheus_client import CollectorRegistry

    from inference.metrics import ServerMetrics
    from inference.models.store import ModelStore

    registry = ModelRegistry(ModelStore(root), ServerMetrics(CollectorRegistry()))
    model, _ = registry.reload("churn")
    assert model.frame and model.runtime == "sklearn"
    # a golden row of the wrong kind is a refused reload, naming the row and the feature
    candidate = LoadedModel(dataclasses.replace(manifest, golden=(
        {**manifest.golden[0], "features": ["x", 1.0, "One year", False]},)), model.estimator)
    with pytest.raises(ReloadFailed, match="golden row 0 is not a valid row for this model: feature 'tenure' is a "
                                           "number"):
        ModelRegistry._smoke_test(candidate)


UNSTORABLE = "feature 'contract' contains the character U+0000, which a stored prediction cannot hold"


@pytest.mark.parametrize("value, code", [("a\x00b", "0000"), ("\x00", "0000"), ("Zürich\ud800", "D800")])
def test_a_category_the_database_cannot_store_is_refused_naming_the_feature(model, strict_model, value, code):
    """PostgreSQL's jsonb refuses U+0000 (and a lone surrogate is no UTF-8): a category accepted as unknown would
    be answered OK and then refused by the prediction log, so the edge refuses it, on every path."""
    words = re.escape(UNSTORABLE.replace("0000", code))
    with pytest.raises(InvalidFeatures, match=f"^{words}"):
        model.vector({**ROW, "contract": value})
    with pytest.raises(InvalidFeatures, match=f"^row 1: {words}"):
        model.check_matrix(np.array([[3.0, 80.5, "One year", True], [3.0, 80.5, value, True]], dtype=object))
    values = np.array([[3, 80.5, 1], [4, 70, 0]], dtype=float)
    _, refused = model.columns(values, ("tenure", "monthly", "senior"), {"contract": ["One year", value]},
                               partial=True)
    assert list(refused) == [1] and refused[1].startswith(UNSTORABLE.replace("0000", code))
    with pytest.raises(InvalidFeatures, match=f"^row 1: {words}"):
        model.columns(values, ("tenure", "monthly", "senior"), {"contract": ["One year", value]})
    # a model refusing unknown categories refuses it too, for the same reason
    with pytest.raises(InvalidFeatures, match=f"^{words}"):
        strict_model.vector({**ROW, "contract": value})
    # printable unicode, quotes, backslashes and other control characters are stored fine: accepted
    assert model.vector({**ROW, "contract": 'tab\t"q"\\ 東京\n'})[2] == 'tab\t"q"\\ 東京\n'
