"""Spool documents: a prediction record, or a whole PredictionBatch, as one JSON-able dict and back.

A record's features are a JSON object of plain values (numbers, strings, booleans, null). A batch's features are
either its float64 matrix packed (base64 of little-endian float64: exact and cheap; the only form before typed
features, so spool files written by earlier versions read the same) or, for a matrix of plain values (a model
that takes a frame), a JSON list of rows of plain values (null for missing)."""
from __future__ import annotations

import base64

import numpy as np

from database.records import FeatureValue, PredictionBatch, PredictionRecord, Stored, plain

_PLAIN = frozenset((str, float, bool, type(None)))  # the types a typed row holds as they are (NaN aside)
_JSON_PLAIN = (str, float, int, bool, type(None))  # what a typed row read back may hold (int: a whole number)


def to_doc(r: Stored) -> dict:
    """The spool document of a record, or of a whole PredictionBatch (one document for its rows: a float64
    matrix packed, a matrix of plain values as rows; see the module)."""
    if type(r) is PredictionBatch:
        features = r.features
        return {"prediction_ids": r.prediction_ids, "request_ids": r.request_ids, "model": r.model,
                "model_version": r.model_version, "feature_names": r.feature_names,
                "features": _typed_rows(features, r.feature_names) if features.dtype == object else _pack(features),
                "classes": r.classes, "labels": r.labels.tolist(), "probabilities": _pack(r.probabilities),
                "transport": r.transport, "latency_ms": r.latency_ms, "created_at": r.created_at,
                **({"request_hashes": r.request_hashes} if r.request_hashes else {})}
    # by hand: dataclasses.asdict deep-copies recursively and is several times slower on this hot path
    doc = {"prediction_id": r.prediction_id, "request_id": r.request_id, "model": r.model,
           "model_version": r.model_version, "features": r.features, "label": r.label,
           "probabilities": r.probabilities, "transport": r.transport, "latency_ms": r.latency_ms,
           "created_at": r.created_at}
    if r.request_hash is not None:  # a keyed request's fingerprint; absent: unkeyed (and lines from before it)
        doc["request_hash"] = r.request_hash
    return doc


def from_doc(doc: dict) -> Stored:
    """The record (or batch) of a spool document; TypeError/ValueError when the document is neither."""
    if "feature_names" not in doc:
        return PredictionRecord(**doc)
    n, names, classes = len(doc["prediction_ids"]), tuple(doc["feature_names"]), tuple(doc["classes"])
    packed = doc["features"]
    features = _unpack(packed, n, len(names)) if isinstance(packed, str) else _from_rows(packed, n, len(names))
    probabilities = _unpack(doc["probabilities"], n, len(classes))
    labels = np.array(doc["labels"], dtype=np.int64)
    hashes = doc.get("request_hashes")  # absent in documents written before idempotency fingerprints
    if hashes is not None and len(hashes) != n:
        raise ValueError(f"a batch of {n} prediction ids with {len(hashes)} request hashes")
    if len(doc["request_ids"]) != n or labels.shape != (n,):
        raise ValueError(f"a batch of {n} prediction ids with {len(doc['request_ids'])} request ids and "
                         f"{len(labels)} labels")
    return PredictionBatch(
        prediction_ids=doc["prediction_ids"], request_ids=doc["request_ids"], model=doc["model"],
        model_version=doc["model_version"], feature_names=names, features=features, classes=classes, labels=labels,
        probabilities=probabilities, transport=doc["transport"], latency_ms=doc["latency_ms"],
        created_at=doc["created_at"], request_hashes=hashes)


def _pack(matrix: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(matrix, dtype="<f8").tobytes()).decode()


def _unpack(text: str, rows: int, columns: int) -> np.ndarray:
    values = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f8")
    if values.size != rows * columns:
        raise ValueError(f"{values.size} values for {rows} rows of {columns}")
    return values.astype(np.float64).reshape(rows, columns)


def _typed_rows(matrix: np.ndarray, names: tuple[str, ...]) -> list[list[FeatureValue]]:
    """An object matrix's rows as JSON takes them: plain values as they are, NaN as None, numpy scalars as
    Python values (plain; ValueError naming the feature for ±inf or a value that is no feature value)."""
    plain_types = _PLAIN
    return [[v if type(v) in plain_types and v == v else plain(v, name) for v, name in zip(row, names)]
            for row in matrix.tolist()]


def _from_rows(rows: object, n: int, columns: int) -> np.ndarray:
    """The object matrix of a document's typed rows (ValueError unless n rows of `columns` plain values)."""
    if not isinstance(rows, list) or len(rows) != n:
        raise ValueError(f"typed features: expected a list of {n} rows")
    matrix = np.empty((n, columns), dtype=object)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != columns:
            raise ValueError(f"typed features: row {i} is not a list of {columns} values")
        if not all(isinstance(v, _JSON_PLAIN) for v in row):
            raise ValueError(f"typed features: row {i} holds a value that is not a number, string, boolean or null")
        matrix[i] = row
    return matrix


_BULK_IDS = b'"prediction_ids":['


def rows_in_line(line: bytes) -> int:
    """How many prediction rows one spool line holds (a record: 1; a batch: its prediction ids), without decoding
    it: a count at stop must stay cheap for a full spool. Prediction ids are UUIDs (no comma, no bracket)."""
    start = line.find(_BULK_IDS)
    if start < 0:
        return 1
    start += len(_BULK_IDS)
    ids = line[start:line.find(b"]", start)]
    return ids.count(b",") + 1 if ids else 0
