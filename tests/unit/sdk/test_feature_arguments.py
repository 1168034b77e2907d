"""Feature values the SDK sends: a number, a string (category), a bool or None (missing) become the contract's
google.protobuf.Values; anything else is refused client-side with BadArgument naming the feature, in every call and
queue job that takes features."""
from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from google.protobuf.struct_pb2 import Value

from predmesh import BadArgument, calls, jobs
from predmesh.types import StoredPrediction, features_refused
from predmesh.v1 import analytics_pb2
from predmesh.values import decode, decode_all, encode

CASES: list[tuple[Callable[[], object], str]] = [
    (lambda: calls.predict("iris", {"a": [1.0]}), "features: feature 'a' is [1.0] (list); send a number"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: calls.predict("iris", {1: 2.0}), "features: the feature name 1 is not a string"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: calls.predict("iris", ["a"]), "features is list; send a mapping"),  # type: ignore[arg-type]  # deliberately wrong
    (lambda: calls.predict_batch("iris", [{"a": 1.0}, ({"b": Decimal(1)}, "r")]),
     "rows[1]: feature 'b' is Decimal('1') (Decimal)"),
    (lambda: calls.predict_each("iris", [{"a": 1.0}, {"b": b"2"}]), "rows[1]: feature 'b' is b'2' (bytes)"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: calls.stream_request("iris", {"a": {"x": 1}}, "r"), "features: feature 'a' is {'x': 1} (dict)"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: jobs.predict_job("iris", {"a": object}), "features: feature 'a' is <class 'object'>"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: jobs.batch_job("iris", [{"a": 1}, {"a": [1]}]), "rows[1]: feature 'a' is [1] (list)"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: encode({"a": 1.0, "b": (1,)}), "features: feature 'b' is (1,) (tuple)"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: calls.predict_matrix("iris", [], [], string_columns={"c": ["A", 3]}),  # type: ignore[list-item]  # deliberately wrong
     "string_columns['c'][1] is 3; send a string"),
    # an int beyond a double's range: float() raises OverflowError, which escaped as itself
    (lambda: calls.predict("iris", {"a": 1.0, "b": 10**400}),
     "features: feature 'b' is a number too large for a double"),
    (lambda: jobs.batch_job("iris", [{"a": 1}, {"a": -(10**309)}]), "rows[1]: feature 'a' is a number too large"),
    # the values of a matrix: protobuf's TypeError ("must be real number, not str") named neither row nor feature
    (lambda: calls.predict_matrix("iris", ["a", "b"], [1.0, 2.0, 3.0, "4"]),  # type: ignore[list-item]  # deliberately wrong
     "values[3] (row 1, feature 'b') is '4' (str); send numbers, flat and row-major"),
    (lambda: calls.predict_matrix("iris", ["a", "b"], [None, 2.0]),  # type: ignore[list-item]  # deliberately wrong
     "values[0] (row 0, feature 'a') is None (NoneType); send numbers"),
    (lambda: calls.predict_matrix("iris", ["a", "b"], np.array([[1.0, 2.0], [3.0, 4.0]])),  # 2-D: one array a row
     "values[0] (row 0, feature 'a') is array([1., 2.]) (ndarray); send numbers, flat and row-major"),
    (lambda: calls.predict_matrix("iris", ["a"], [10**400]), "values[0] (row 0, feature 'a') is 1000"),
    (lambda: jobs.matrix_job("iris", ["a"], 3.0), "values is float; send a flat"),  # type: ignore[arg-type]  # deliberately wrong
]


@pytest.mark.parametrize("build, message", CASES)
def test_a_feature_of_a_type_the_contract_cannot_carry_is_a_bad_argument_naming_it(build, message):
    with pytest.raises(BadArgument) as info:
        build()
    assert info.value.message.startswith(message), info.value.message
    assert isinstance(info.value, ValueError)  # existing `except ValueError` keeps working


def test_typed_features_are_sent_as_values_of_their_kind():
    row: dict[str, Any] = {"tenure": 1, "monthly": 70.5, "contract": "Month-to-month", "senior": True, "total": None,
           "n64": np.int64(3), "f32": np.float32(0.5), "b": np.bool_(False), "nan": math.nan}
    kinds = {"tenure": "number_value", "monthly": "number_value", "contract": "string_value", "senior": "bool_value",
             "total": "null_value", "n64": "number_value", "f32": "number_value", "b": "bool_value",
             "nan": "number_value"}
    for request in (calls.predict("churn", row).request, calls.predict_batch("churn", [row]).request.rows[0],
                    calls.predict_each("churn", [(row, "r")]).request.rows[0], calls.stream_request("churn", row, "r"),
                    jobs.predict_job("churn", row), jobs.batch_job("churn", [row]).rows[0]):
        assert {k: v.WhichOneof("kind") for k, v in request.features.items()} == kinds
        plain = decode_all(request.features)
        assert plain["tenure"] == 1.0 and type(plain["tenure"]) is float and plain["contract"] == "Month-to-month"
        assert plain["senior"] is True and plain["total"] is None and plain["b"] is False
        assert plain["n64"] == 3.0 and plain["f32"] == 0.5 and math.isnan(plain["nan"])  # type: ignore[arg-type]  # a float
    assert encode({"a": Value(string_value="x")})["a"].string_value == "x"  # a Value is sent as it is


def test_predict_matrix_sends_string_columns_with_their_missing_rows():
    request = calls.predict_matrix("churn", ["tenure"], [1.0, math.nan, 3.0],
                                   string_columns={"contract": ["A", None, "B"]}).request
    [column] = request.matrix.string_columns
    assert column.name == "contract" and list(column.values) == ["A", "", "B"] and list(column.missing_rows) == [1]


def test_stored_predictions_give_plain_values_back():
    m = analytics_pb2.StoredPrediction(features=encode({"a": 1.5, "c": "x", "b": True, "n": None}))
    assert StoredPrediction.from_proto(m).features == {"a": 1.5, "c": "x", "b": True, "n": None}
    assert decode(Value()) is None  # no kind: nothing to give back


def test_features_refused_is_still_where_it_was():
    assert "feature 'a'" in features_refused({"a": [1]}).message
