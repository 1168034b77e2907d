"""The handler's Scorer on top of the SDK client (the only way the consumer reaches the server)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence


class SdkScorer:
    """PredictBatch through a predmesh.Client opened with transport "queue"."""

    def __init__(self, client, timeout: float):
        self.client = client
        self.timeout = timeout

    def predict_batch(self, model: str, rows: Sequence[tuple[Mapping[str, float], str]]) -> list:
        """predmesh.v1.Prediction messages (the SDK dataclasses keep them as .raw), in row order."""
        return [p.raw for p in self.client.predict_batch(model, rows, timeout=self.timeout)]
