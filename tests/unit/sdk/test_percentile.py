"""predmesh.percentile: linear interpolation as numpy and PostgreSQL's percentile_cont, NaN for no values."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from predmesh.percentile import percentile


@pytest.mark.parametrize("n", [1, 2, 7, 101])
def test_percentile_is_numpys_linear_interpolation(n):
    values = sorted(random.Random(n).uniform(0, 100) for _ in range(n))
    qs = [0.0, 0.25, 0.5, 0.95, 0.99, 1.0]
    assert [percentile(values, q) for q in qs] == pytest.approx(np.percentile(values, [100 * q for q in qs]))


def test_percentile_between_two_values_interpolates():
    assert percentile([10.0, 20.0], 0.5) == 15.0
    assert percentile([10.0, 20.0], 0.95) == pytest.approx(19.5)
    assert percentile([3.0], 0.99) == 3.0


def test_percentile_of_no_values_is_nan():
    assert math.isnan(percentile([], 0.5))
    assert math.isnan(percentile((), 0.0))
