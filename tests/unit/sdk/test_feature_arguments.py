"""A feature map the SDK cannot send is refused client-side with BadArgument naming the feature (protobuf's own
TypeError said only "must be real number, not str", in every call and queue job that takes features)."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from predmesh import BadArgument, calls, jobs

CASES: list[tuple[Callable[[], object], str]] = [
    (lambda: calls.predict("iris", {"a": "x"}), "features: feature 'a' is 'x'; send a number"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: calls.predict("iris", {1: 2.0}), "features: the feature name 1 is not a string"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: calls.predict("iris", ["a"]), "features is list; send a mapping"),  # type: ignore[arg-type]  # deliberately wrong
    (lambda: calls.predict_batch("iris", [{"a": 1.0}, ({"b": None}, "r")]), "rows[1]: feature 'b' is None"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: calls.predict_each("iris", [{"a": 1.0}, {"b": "2"}]), "rows[1]: feature 'b' is '2'"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: jobs.predict_job("iris", {"a": "x"}), "features: feature 'a' is 'x'"),  # type: ignore[dict-item]  # deliberately wrong
    (lambda: jobs.batch_job("iris", [{"a": 1}, {"a": [1]}]), "rows[1]: feature 'a' is [1]"),  # type: ignore[dict-item]  # deliberately wrong
]


@pytest.mark.parametrize("build, message", CASES)
def test_a_feature_that_is_not_a_number_is_a_bad_argument_naming_it(build, message):
    with pytest.raises(BadArgument) as info:
        build()
    assert info.value.message.startswith(message)
    assert isinstance(info.value, ValueError)  # existing `except ValueError` keeps working


def test_valid_features_are_sent_as_given():
    assert dict(calls.predict("iris", {"a": 1, "b": 2.5}).request.features) == {"a": 1.0, "b": 2.5}
    assert len(calls.predict_batch("iris", [{"a": 1.0}, ({"a": 2.0}, "r2")]).request.rows) == 2
