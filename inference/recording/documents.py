"""Spool documents: a prediction record, or a whole PredictionBatch, as one JSON-able dict and back."""
from __future__ import annotations

import base64

import numpy as np

from database.records import PredictionBatch, PredictionRecord, Stored


def to_doc(r: Stored) -> dict:
    """The spool document of a record, or of a whole PredictionBatch (one document for its rows: its number
    columns as base64 of little-endian float64, exact and cheap)."""
    if type(r) is PredictionBatch:
        return {"prediction_ids": r.prediction_ids, "request_ids": r.request_ids, "model": r.model,
                "model_version": r.model_version, "feature_names": r.feature_names,
                "features": _pack(r.features), "classes": r.classes, "labels": r.labels.tolist(),
                "probabilities": _pack(r.probabilities), "transport": r.transport, "latency_ms": r.latency_ms,
                "created_at": r.created_at}
    # by hand: dataclasses.asdict deep-copies recursively and is several times slower on this hot path
    return {"prediction_id": r.prediction_id, "request_id": r.request_id, "model": r.model,
            "model_version": r.model_version, "features": r.features, "label": r.label,
            "probabilities": r.probabilities, "transport": r.transport, "latency_ms": r.latency_ms,
            "created_at": r.created_at}


def from_doc(doc: dict) -> Stored:
    """The record (or batch) of a spool document; TypeError/ValueError when the document is neither."""
    if "feature_names" not in doc:
        return PredictionRecord(**doc)
    n, names, classes = len(doc["prediction_ids"]), tuple(doc["feature_names"]), tuple(doc["classes"])
    features = _unpack(doc["features"], n, len(names))
    probabilities = _unpack(doc["probabilities"], n, len(classes))
    labels = np.array(doc["labels"], dtype=np.int64)
    if len(doc["request_ids"]) != n or labels.shape != (n,):
        raise ValueError(f"a batch of {n} prediction ids with {len(doc['request_ids'])} request ids and "
                         f"{len(labels)} labels")
    return PredictionBatch(
        prediction_ids=doc["prediction_ids"], request_ids=doc["request_ids"], model=doc["model"],
        model_version=doc["model_version"], feature_names=names, features=features, classes=classes, labels=labels,
        probabilities=probabilities, transport=doc["transport"], latency_ms=doc["latency_ms"],
        created_at=doc["created_at"])


def _pack(matrix: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(matrix, dtype="<f8").tobytes()).decode()


def _unpack(text: str, rows: int, columns: int) -> np.ndarray:
    values = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f8")
    if values.size != rows * columns:
        raise ValueError(f"{values.size} values for {rows} rows of {columns}")
    return values.astype(np.float64).reshape(rows, columns)
