"""A loaded, verified model version: input validation in schema order and batched scoring."""
from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from inference.bounds import shown
from inference.errors import InvalidFeatures
from inference.models.batcher import Batcher
from inference.models.manifest import Manifest

_PYTHON_CHECK_ROWS = 8  # up to this many rows check_rows compares in Python


class LoadedModel:
    """An estimator with its manifest; immutable once built, so in-flight calls can finish on it after a swap."""

    def __init__(self, manifest: Manifest, estimator, *, max_batch_rows: int = 64, max_delay_s: float = 0.0,
                 range_tolerance: float = 10.0, on_batch=None, kernel=None):
        self.manifest = manifest
        self.estimator = estimator
        # kernel: a verified native predict_proba (inference/models/kernels.py) or None for scikit-learn's own.
        self.runtime = "native" if kernel is not None else "sklearn"
        self._proba = kernel if kernel is not None else estimator.predict_proba
        self.names = manifest.feature_names
        self._index = {name: i for i, name in enumerate(self.names)}
        # Plausible range per feature (PREDMESH_RANGE_TOLERANCE): the training range [min, max] widened on each
        # side by range_tolerance training spans (max - min; 1 for a feature constant in training); 0 = no check.
        if not (math.isfinite(range_tolerance) and range_tolerance >= 0):
            raise ValueError(f"range_tolerance={range_tolerance!r} must be a finite number >= 0")
        self._bounds = []
        for f in manifest.features:
            span = (f.max - f.min) or 1.0
            self._bounds.append((f.min - range_tolerance * span, f.max + range_tolerance * span))
        self._check_range = range_tolerance > 0
        # What a single value must lie within: the plausible range, or (range check off) any finite float.
        self._limits = self._bounds if self._check_range else [(-sys.float_info.max, sys.float_info.max)] * len(
            self._bounds)
        self._lo = np.array([b[0] for b in self._bounds], dtype=np.float64)
        self._hi = np.array([b[1] for b in self._bounds], dtype=np.float64)
        self.classes = manifest.classes
        self.drift = None  # a DriftTracker once track_drift() is called
        self._observe = None
        self.batcher = Batcher(self._predict_proba, max_rows=max_batch_rows, max_delay_s=max_delay_s,
                               on_batch=on_batch)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        probabilities = self._proba(matrix)
        if self._observe is not None:  # drift tracking: one deque append per batch (inference/models/drift.py)
            self._observe((matrix, probabilities))
        return probabilities

    def track_drift(self, tracker) -> None:
        """Start handing every scored batch to a DriftTracker (after the smoke test: golden rows are no traffic)."""
        self.drift = tracker
        self._observe = tracker.observe

    def check_matrix(self, matrix: np.ndarray) -> None:
        """Rows already in schema order (n × features): finite and within the plausible range, else
        InvalidFeatures naming the first offending row and feature."""
        if matrix.ndim != 2 or matrix.shape[1] != len(self.names):
            raise InvalidFeatures(f"expected shape [N, {len(self.names)}] ({', '.join(self.names)}), "
                                  f"got {list(matrix.shape)}")
        if self._check_range:  # NaN and ±inf fail the (finite) bounds too: one pass on the fast path
            if ((matrix >= self._lo) & (matrix <= self._hi)).all():
                return
            with np.errstate(invalid="ignore"):
                bad = ~((matrix >= self._lo) & (matrix <= self._hi))
        else:
            bad = ~np.isfinite(matrix)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise self._bad_value(col, float(matrix[row, col]), f"row {row}: " if len(matrix) > 1 else "")

    def refused_rows(self, matrix: np.ndarray) -> dict[int, str]:
        """Rows in schema order (n × features, shape already checked) that check_matrix would refuse: {row index:
        the message that row alone is refused with}. One vectorised pass; Python work only for refused rows."""
        # As check_matrix: with the range check on, NaN and ±inf fail the (finite) bounds too.
        ok = (matrix >= self._lo) & (matrix <= self._hi) if self._check_range else np.isfinite(matrix)
        if ok.all():
            return {}
        refused = {}
        for row in np.flatnonzero(~ok.all(axis=1)).tolist():
            col = int(np.argmin(ok[row]))  # the first offending feature, as check_matrix names it
            refused[row] = str(self._bad_value(col, float(matrix[row, col]), ""))
        return refused

    def check_rows(self, rows: Sequence[Sequence[float]]) -> None:
        """check_matrix for rows given as lists of floats in schema order (each of the schema's length): plain
        comparisons for a few rows (cheaper than numpy's per-call overhead), check_matrix for many."""
        if len(rows) > _PYTHON_CHECK_ROWS:
            self.check_matrix(np.asarray(rows, dtype=np.float64))
            return
        for i, row in enumerate(rows):
            for col, (value, (lo, hi)) in enumerate(zip(row, self._limits)):
                if not lo <= value <= hi:  # NaN fails every comparison
                    raise self._bad_value(col, value, f"row {i}: " if len(rows) > 1 else "")

    def _bad_value(self, col: int, value: float, where: str) -> InvalidFeatures:
        if not math.isfinite(value):
            return InvalidFeatures(f"{where}feature {self.names[col]!r} is {value}; send a finite number")
        lo, hi = self._bounds[col]
        return InvalidFeatures(f"{where}feature {self.names[col]!r}={value:g} is outside the plausible range "
                               f"[{lo:g}, {hi:g}] for this model")

    def vector(self, features: Mapping[str, float], row: int | None = None) -> list[float]:
        """Features by name → values in model order; raises InvalidFeatures naming the offending field."""
        where = "" if row is None else f"row {row}: "
        if len(features) != len(self.names) or any(k not in self._index for k in features):
            extra = sorted(k for k in features if k not in self._index)
            if extra:
                raise InvalidFeatures(f"{where}unknown feature {shown(extra[0])}; expected {', '.join(self.names)}")
            missing = [n for n in self.names if n not in features]
            raise InvalidFeatures(f"{where}feature {missing[0]!r} is missing; expected {', '.join(self.names)}")
        values = [features[n] for n in self.names]
        for col, (value, (lo, hi)) in enumerate(zip(values, self._limits)):
            if not lo <= value <= hi:  # NaN fails every comparison
                raise self._bad_value(col, value, where)
        return values

    def score(self, rows: Sequence[Sequence[float]] | np.ndarray, timeout: float | None = None, finish=None,
              commit=None):
        """Class probabilities for validated rows (lists of floats, or a matrix), through the batcher
        (finish/commit: see Batcher.score), which builds one matrix per batch."""
        return self.batcher.score(rows, timeout, finish, commit)

    def label_of(self, probabilities: np.ndarray) -> str:
        return self.classes[int(probabilities.argmax())]
