"""The fingerprint of a request row: what an idempotency key is checked against (issue #23).

A short stable hash (blake2b, 16 bytes, hex) of the model name and the row's plain feature values in SORTED
feature-name order, so that the per-row path (values in schema order, or a stored features mapping) and the
columnar path (a float64 or object matrix) give the same value for the same row. Transport and model version are
not part of it: a retry through another transport, or after a reload, is the same request.

Encoding, per feature in sorted name order: a missing value (None, NaN) is b"n" + 8 zero bytes; a number or a
boolean (True = 1.0) is b"d" + its float64 little-endian (-0.0 as 0.0); a string is b"s" + its utf-8 length
(uint32 little-endian) + its utf-8 bytes. The header (model name and feature names, each length-prefixed) comes
first. Fixed-width numbers let a float64 matrix be encoded in one vectorised pass.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence

import numpy as np

_MISSING = b"n" + bytes(8)
_NUMBER = struct.Struct("<cd")
_LENGTH = struct.Struct("<I")


def _header(model: str, names: Sequence[str]) -> hashlib.blake2b:
    h = hashlib.blake2b(digest_size=16)
    for text in (model, *names):
        raw = text.encode()
        h.update(_LENGTH.pack(len(raw)) + raw)
    return h


def _value(value: object) -> bytes:
    if value is None:
        return _MISSING
    if isinstance(value, str):
        raw = value.encode()
        return b"s" + _LENGTH.pack(len(raw)) + raw
    number = float(value)  # type: ignore[arg-type]  # a number or a boolean (the stored plain values)
    if number != number:
        return _MISSING
    return _NUMBER.pack(b"d", number + 0.0)


def _order(names: Sequence[str]) -> list[int]:
    return sorted(range(len(names)), key=names.__getitem__)


def row_hash(model: str, names: Sequence[str], values: Sequence[object]) -> str:
    """The fingerprint of one row: values in the order of names (e.g. a model's schema order)."""
    order = _order(names)
    h = _header(model, [names[i] for i in order])
    h.update(b"".join(_value(values[i]) for i in order))
    return h.hexdigest()


def row_hashes(model: str, names: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """row_hash of each row (values in the order of names), the header hashed once."""
    order = _order(names)
    base = _header(model, [names[i] for i in order])
    out = []
    for values in rows:
        h = base.copy()
        h.update(b"".join(_value(values[i]) for i in order))
        out.append(h.hexdigest())
    return out


def stored_hash(model: str, features: Mapping[str, object]) -> str:
    """The fingerprint of a stored row (its features by name), for rows stored before the hash was."""
    names = list(features)
    return row_hash(model, names, [features[n] for n in names])


def matrix_hashes(model: str, names: Sequence[str], matrix: np.ndarray) -> list[str]:
    """row_hash of each row of a matrix whose columns are in the order of names: a float64 matrix (NaN missing)
    encoded in one vectorised pass, an object matrix of plain values row by row."""
    if matrix.dtype == object:
        return row_hashes(model, names, matrix.tolist())
    order = _order(names)
    n, k = len(matrix), len(order)
    if not n:
        return []
    x = np.asarray(matrix, dtype=np.float64)[:, order]
    missing = np.isnan(x)
    packed = np.zeros(n, dtype=np.dtype([(f"f{j}", [("t", "u1"), ("v", "<f8")]) for j in range(k)]))
    for j in range(k):
        field = packed[f"f{j}"]
        field["t"] = np.where(missing[:, j], ord("n"), ord("d"))
        field["v"] = np.where(missing[:, j], 0.0, x[:, j]) + 0.0
    raw = packed.tobytes()
    width = packed.dtype.itemsize
    base = _header(model, [names[i] for i in order])
    out = []
    for start in range(0, n * width, width):
        h = base.copy()
        h.update(raw[start:start + width])
        out.append(h.hexdigest())
    return out
