"""The handler's Scorer on top of the SDK client (the only way the consumer reaches the server)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from predmesh.errors import PredmeshError, from_status


class SdkScorer:
    """PredictBatch / PredictStream through a predmesh client opened with transport "queue"."""

    def __init__(self, client, timeout: float):
        self.client = client
        self.timeout = timeout

    def predict_batch(self, model: str, rows: Sequence[tuple[Mapping[str, float], str]]) -> list:
        return [_raw(p) for p in self.client.predict_batch(model, rows, timeout=self.timeout)]

    def predict_stream(self, model: str, rows: Sequence[tuple[Mapping[str, float], str]]
                       ) -> list[tuple[object | None, PredmeshError | None]]:
        out = []
        for answer in self.client.predict_stream(model, rows, timeout=self.timeout):
            error = getattr(answer, "error", None)
            if isinstance(error, PredmeshError):           # SDK StreamResult
                out.append((None, error))
            elif error is not None and answer.HasField("error"):  # raw PredictStreamResponse
                out.append((None, from_status(error.code, error.message)))
            else:
                out.append((_raw(answer.prediction), None))
        if len(out) != len(rows):
            raise PredmeshError(f"the stream answered {len(out)} of {len(rows)} rows")
        return out


def _raw(prediction):
    """The predmesh.v1.Prediction message (the SDK's Prediction dataclass keeps it as .raw)."""
    return getattr(prediction, "raw", prediction)
