"""Plain records passed between the server and the database layer (no peewee here)."""
from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import final

import numpy as np

# prediction_id = prediction_id_of(request_id) (inference.scoring.convert makes it; true of every stored row): a
# retried request gets the same prediction_id, and PostgreSQL finds a request_id's row by it (m0012)
PREDICTION_NAMESPACE = uuid.UUID("4c1d3c57-9a4e-4f0e-9a43-5b0f7c8e0d11")
PREDICTION_NAMESPACE_BYTES = PREDICTION_NAMESPACE.bytes  # what SHA-1 hashes before the request id
DIGITS = "0123456789"  # ASCII only: a request id's number is its run of these at the end
MAX_ORDERED_DIGITS = 15  # 10**15 - 1 < 16**13: a number fits an ordered id's last 13 hex digits at most

FeatureValue = float | str | bool | None
"""A feature's plain value: a number (float), a category (str), a boolean, or missing (None)."""


@final  # the hot paths test `type(x) is PredictionBatch`; final lets type checkers narrow that
@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One answered prediction, as it must be stored. A feature's value is plain (FeatureValue); a NaN number
    is stored as missing (null), like None."""

    prediction_id: str
    request_id: str
    model: str
    model_version: str
    features: dict[str, FeatureValue]
    label: str
    probabilities: dict[str, float]
    transport: str
    latency_ms: float
    created_at: float  # Unix epoch seconds, UTC
    # the request's fingerprint (database/fingerprint.py) when the client sent the request_id (its idempotency
    # key); None for a fresh id (nothing to check a retry against)
    request_hash: str | None = None


@final
@dataclass(frozen=True, slots=True, eq=False)
class PredictionBatch:
    """The answered predictions of one bulk call in columns (one object for many rows instead of one record
    each; the server's columnar PredictBatch). Row r is what PredictionRecord r of rows() holds.

    features is a float64 matrix (models that take numbers: NaN is a missing value) or an object matrix of plain
    values (FeatureValue; models that take a frame: categories, booleans, None for missing)."""

    prediction_ids: list[str]
    request_ids: list[str]
    model: str
    model_version: str
    feature_names: tuple[str, ...]
    features: np.ndarray  # rows × feature_names: float64, or object holding plain values
    classes: tuple[str, ...]
    labels: np.ndarray  # per row, the index of its label in classes
    probabilities: np.ndarray  # rows × classes, float64
    transport: str
    latency_ms: float
    created_at: float  # Unix epoch seconds, UTC
    request_hashes: list[str] | None = None  # per row, its fingerprint (client-sent ids only; None: fresh ids)

    def __len__(self) -> int:
        return len(self.prediction_ids)

    def rows(self) -> list[PredictionRecord]:
        """One PredictionRecord per row (the slow path: isolating a row the database refuses)."""
        names, classes = self.feature_names, self.classes
        hashes: list[str | None] = list(self.request_hashes) if self.request_hashes else [None] * len(self)
        return [PredictionRecord(
            prediction_id=pid, request_id=rid, model=self.model, model_version=self.model_version,
            features=dict(zip(names, values)), label=classes[label], probabilities=dict(zip(classes, probs)),
            transport=self.transport, latency_ms=self.latency_ms, created_at=self.created_at, request_hash=h)
            for pid, rid, values, label, probs, h in zip(self.prediction_ids, self.request_ids,
                                                         self.features.tolist(), self.labels.tolist(),
                                                         self.probabilities.tolist(), hashes)]

    def answer(self, i: int) -> PredictionRecord:
        """Row i as a record without its features (an answer to give again)."""
        classes = self.classes
        return PredictionRecord(
            prediction_id=self.prediction_ids[i], request_id=self.request_ids[i], model=self.model,
            model_version=self.model_version, features={}, label=classes[int(self.labels[i])],
            probabilities=dict(zip(classes, self.probabilities[i].tolist())), transport=self.transport,
            latency_ms=self.latency_ms, created_at=self.created_at,
            request_hash=self.request_hashes[i] if self.request_hashes else None)


def plain(value: object, name: str) -> FeatureValue:
    """A feature value as it is stored: a number (float), a string, a boolean, or None (missing; so is NaN, a
    missing number). Integers and numpy scalars become those; ±inf, or anything else, is a ValueError naming the
    feature (where the database would refuse it: the row is quarantined alone)."""
    if value is None or type(value) is bool or type(value) is str:
        return value
    if isinstance(value, str):  # a subclass, e.g. numpy.str_
        return str(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        if number != number:
            return None
        if number - number != 0.0:
            raise ValueError(f"feature {name!r} is {number!r}; a stored number is finite (or NaN, missing)")
        return number
    raise ValueError(f"feature {name!r} holds a {type(value).__name__}; a stored feature is a number, a string, "
                     "a boolean or null")


Stored = PredictionRecord | PredictionBatch  # what the prediction log stores: single records and bulk batches


def row_count(items: Iterable[Stored]) -> int:
    """How many rows these records and batches hold."""
    return sum(len(i) if type(i) is PredictionBatch else 1 for i in items)


def as_rows(items: Iterable[Stored]) -> list[PredictionRecord]:
    """The items as one PredictionRecord per row."""
    out: list[PredictionRecord] = []
    for i in items:
        if type(i) is PredictionBatch:
            out.extend(i.rows())
        else:
            out.append(i)
    return out


def prediction_id_of(request_id: str) -> str:
    """The prediction_id of a request_id (its idempotency key; docs/persistence.md "Prediction ids"):
    - a request id ending in a number of 1 to 15 ASCII digits, <stem><number> (a batch row's <prefix><row>, an
      "order-1234"): an RFC 9562 version-8 UUID whose last hex digits are the number (as many as its digit count
      needs, NUMBER_HEX) and whose other 122 - 4 x NUMBER_HEX bits (70 to 118) are a SHA-1 of (namespace, digit count,
      stem), so the ids of one stem's request ids follow each other in order: a batch's keys land side by side in
      prediction_keys' btree instead of at a random place each (a page read and written per row once the index
      outgrows the cache);
    - any other request id: uuid5(PREDICTION_NAMESPACE, request_id) (uuid5_id), the one scheme before.
    Computed without uuid objects (1-2 µs against uuid.uuid5's 6.7, once per key looked up or answered)."""
    stem = request_id.rstrip(DIGITS)
    width = len(request_id) - len(stem)
    if not 0 < width <= MAX_ORDERED_DIGITS:
        return uuid5_id(request_id)
    x = ordered_head(stem, width) + f"{int(request_id[len(stem):]):0{NUMBER_HEX[width]}x}"
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def ordered(request_id: str) -> bool:
    """True when prediction_id_of gives this request id an ordered (version 8) id, not its uuid5_id."""
    return 0 < len(request_id) - len(request_id.rstrip(DIGITS)) <= MAX_ORDERED_DIGITS


def uuid5_id(request_id: str) -> str:
    """uuid5(PREDICTION_NAMESPACE, request_id) (RFC 4122: the SHA-1's first 16 bytes, version nibble 5, variant bits
    10): the prediction_id of a request id without a number at its end, and of every request id stored before
    ordered ids (m0013: partitions.legacy_ids looks those up by it too)."""
    h = hashlib.sha1(PREDICTION_NAMESPACE_BYTES + request_id.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


# the hex digits a number of w decimal digits needs (w = 1..15): 1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10, 10, 11, 12, 13
NUMBER_HEX = (0, *(len(f"{10 ** w - 1:x}") for w in range(1, MAX_ORDERED_DIGITS + 1)))


@functools.lru_cache(maxsize=4096)
def ordered_head(stem: str, width: int) -> str:
    """The first 32 - NUMBER_HEX[width] hex digits (no dashes) of the ordered ids of a stem's numbers of this many
    digits: a SHA-1 of (namespace, width, stem) (the width keeps "a1" and "a01" apart) with the version nibble 8 and
    the variant bits 10. A stem's hash keeps at least 70 bits (118 for a number of 1-3 digits, as a uuid's last
    hex digits often are): two request ids share an id only if their hashes do too."""
    h = hashlib.sha1(PREDICTION_NAMESPACE_BYTES + bytes((width,)) + stem.encode()).hexdigest()
    x = f"{h[:12]}8{h[13:16]}{'89ab'[int(h[16], 16) & 3]}{h[17:32]}"
    return x[:32 - NUMBER_HEX[width]]
