"""The request fingerprint behind idempotency keys (database/fingerprint.py): the per-row path (values in schema
order, or a stored features mapping) and the columnar path (float64 or object matrix) agree row for row."""
from __future__ import annotations

import math

import numpy as np
import pytest

from database.fingerprint import matrix_hashes, row_hash, row_hashes, stored_hash

NAMES = ("sepal_length", "sepal_width", "petal_length", "petal_width")  # schema order, not sorted


def test_a_float_matrix_hashes_each_row_as_the_row_path_does():
    rng = np.random.default_rng(7)
    matrix = rng.normal(size=(200, 4)) * 10
    matrix[3, 1] = math.nan  # a missing value
    matrix[5, 2] = -0.0  # the same number as 0.0
    columnar = matrix_hashes("iris", NAMES, matrix)
    rows = [[None if v != v else v for v in row] for row in matrix.tolist()]
    assert columnar == row_hashes("iris", NAMES, rows) == [row_hash("iris", NAMES, r) for r in rows]
    assert columnar == [stored_hash("iris", dict(zip(NAMES, r))) for r in rows]  # as the database holds the row
    assert len(set(columnar)) == 200 and all(len(h) == 32 for h in columnar)
    zero = matrix.copy()
    zero[5, 2] = 0.0
    assert matrix_hashes("iris", NAMES, zero)[5] == columnar[5]


def test_an_object_matrix_of_plain_values_hashes_as_the_row_path_does():
    names = ("tenure", "contract", "senior", "monthly")
    rows: list[list[object]] = [[1.0, "month", True, None], [2.5, "two-year", False, 70.0], [3.0, None, True, 1e-300],
            [4.0, "", False, math.nan]]
    matrix = np.empty((4, 4), dtype=object)
    for i, row in enumerate(rows):
        matrix[i] = row
    assert matrix_hashes("churn", names, matrix) == [row_hash("churn", names, r) for r in rows]
    # a boolean is its number, and NaN is missing, on every path
    assert row_hash("churn", names, [1.0, "month", 1.0, math.nan]) == row_hash("churn", names, rows[0])


def test_order_of_the_features_does_not_matter_but_every_value_and_the_model_do():
    row = [5.1, 3.5, 1.4, 0.2]
    base = row_hash("iris", NAMES, row)
    reordered = list(zip(NAMES, row))[::-1]
    assert row_hash("iris", [n for n, _ in reordered], [v for _, v in reordered]) == base
    assert row_hash("iris2", NAMES, row) != base
    for j in range(4):
        changed = list(row)
        changed[j] = math.nextafter(row[j], math.inf)
        assert row_hash("iris", NAMES, changed) != base
    assert row_hash("iris", NAMES, [5.1, 3.5, 1.4, None]) != row_hash("iris", NAMES, [5.1, 3.5, 1.4, 0.0])
    # a string is length-prefixed: no two rows of strings run into the same bytes
    assert (row_hash("m", ("a", "b"), ["xs", "y"]) != row_hash("m", ("a", "b"), ["x", "sy"]))
    assert row_hash("m", ("a",), ["1"]) != row_hash("m", ("a",), [1.0])


@pytest.mark.parametrize("n", [0, 1, 5000])
def test_matrix_hashes_of_any_size(n):
    matrix = np.arange(n * 4, dtype=np.float64).reshape(n, 4)
    out = matrix_hashes("iris", NAMES, matrix)
    assert len(out) == n and (n == 0 or out[-1] == row_hash("iris", NAMES, matrix[-1].tolist()))
