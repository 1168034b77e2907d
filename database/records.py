"""Plain records passed between the server and the database layer (no peewee here)."""
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One answered prediction, as it must be stored."""

    prediction_id: str
    request_id: str
    model: str
    model_version: str
    features: dict[str, float]
    label: str
    probabilities: dict[str, float]
    transport: str
    latency_ms: float
    created_at: float  # Unix epoch seconds, UTC
