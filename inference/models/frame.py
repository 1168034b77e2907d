"""Rows of plain feature values → the input an estimator takes (Manifest.input): the one conversion training,
the golden smoke test and serving share, so what was evaluated is what is served.

A row holds, in schema order, a float for a number, a str for a category, a bool for a boolean and None for a
missing value (the runtime has already checked every value against the feature's kind). "array" estimators take a
float64 matrix (every feature a number, none missing); "frame" estimators a pandas DataFrame with the features as
named columns: numbers float64, categories pandas strings, booleans an object column of bool, a missing value
NaN.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from inference.models.manifest import Feature


def rows_matrix(rows: Sequence[Sequence[object]] | np.ndarray, n_features: int) -> np.ndarray:
    """Rows of plain values as one object matrix (rows × features), None for a missing value."""
    if isinstance(rows, np.ndarray) and rows.dtype == object and rows.ndim == 2:
        return rows
    matrix = np.empty((len(rows), n_features), dtype=object)
    for i, row in enumerate(rows):
        matrix[i, :] = row
    return matrix


def to_frame(rows: Sequence[Sequence[object]] | np.ndarray, features: Sequence[Feature]) -> pd.DataFrame:
    """The DataFrame a "frame" estimator takes for these rows (plain values in schema order, or a float64 matrix
    of an all-number schema)."""
    names = [f.name for f in features]
    if isinstance(rows, np.ndarray) and rows.dtype != object:
        return pd.DataFrame(np.asarray(rows, dtype=np.float64), columns=names)
    matrix = rows_matrix(rows, len(names))
    columns: dict[str, object] = {}
    for i, f in enumerate(features):
        column = matrix[:, i]
        if f.kind == "number":
            # None → NaN: float64 conversion of an object column maps None to nan
            columns[f.name] = column.astype(np.float64)
        elif f.kind == "category":
            # pandas' string dtype (as read_csv gives), also for a batch whose values are all missing
            columns[f.name] = pd.array(column, dtype="str")
        else:
            values = column.copy()
            values[pd.isna(values)] = np.nan
            columns[f.name] = values
    return pd.DataFrame(columns, columns=names)
