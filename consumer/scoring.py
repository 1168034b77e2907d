"""The handler's Scorer on top of the SDK client (the only way the consumer reaches the server)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from predmesh import Client
from predmesh.errors import InvalidArgument
from predmesh.types import CallLimits, StreamResult
from predmesh.v1 import inference_pb2
from predmesh.values import Features


class SdkScorer:
    """PredictBatch (each row answered on its own) through predmesh.Client connections opened with transport
    "queue", each call on the next one pick() gives (a predmesh.spread.Spread's: the windows in flight go to
    different server processes); the server's published limits per model (GetModel), re-read after limits_ttl_s and
    after a call was refused."""

    def __init__(self, pick: Callable[[], Client], timeout: float, *, limits_ttl_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.pick = pick
        self.timeout = timeout
        self.limits_ttl_s = limits_ttl_s
        self._clock = clock
        self._limits: dict[str, tuple[float, CallLimits]] = {}
        self._lock = threading.Lock()

    def limits(self, model: str) -> CallLimits:
        now = self._clock()
        with self._lock:
            cached = self._limits.get(model)
        if cached is not None and now - cached[0] < self.limits_ttl_s:
            return cached[1]
        limits = self.pick().get_model(model, timeout=self.timeout).limits
        with self._lock:
            self._limits[model] = (now, limits)
        return limits

    def predict_each(self, model: str, rows: Sequence[tuple[Features, str]]) -> list[StreamResult]:
        try:
            return self.pick().predict_each(model, rows, timeout=self.timeout)
        except InvalidArgument:  # the call itself was refused: the limits may have changed, read them again
            self._forget(model)
            raise

    def predict_matrix(self, model: str, matrix: inference_pb2.FeatureMatrix) -> inference_pb2.PredictionMatrix:
        try:
            return self.pick().predict_matrix(
                model, matrix.feature_names, matrix.values, string_columns=_string_columns(matrix),
                request_id_prefix=matrix.request_id_prefix,
                row_numbers=matrix.row_numbers, partial_success=True, timeout=self.timeout).raw
        except InvalidArgument:
            self._forget(model)
            raise

    def _forget(self, model: str) -> None:
        with self._lock:
            self._limits.pop(model, None)


def _string_columns(matrix: inference_pb2.FeatureMatrix) -> dict[str, list[str | None]]:
    """A FeatureMatrix's categorical columns as predict_matrix takes them (None in a missing row)."""
    out: dict[str, list[str | None]] = {}
    for column in matrix.string_columns:
        values: list[str | None] = list(column.values)
        for row in column.missing_rows:  # within the rows: jobs.matrix_of checked them
            values[row] = None
        out[column.name] = values
    return out
