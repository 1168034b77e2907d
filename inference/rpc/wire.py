"""Checks on raw request bytes for what the parsed message cannot show: a feature map entry without a value.

Envoy's JSON transcoder turns `{"features": {"petal_width": null}}` into a map entry that holds only its key;
protobuf parses that as petal_width = 0.0, so a missing value would be scored (and stored) as 0.0. The parsed
message looks exactly like one that sent 0.0, so the check reads the bytes: cheaply first (a message whose bytes
are as long as its canonical encoding has no entry without a value, because the encoder always writes both key
and value of a map entry), and only on a mismatch with a small wire-format walk that names the feature.
"""
from __future__ import annotations

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, payload) of each top-level field; payload is the bytes of length-delimited
    fields, None otherwise. Raises IndexError/ValueError on malformed input (the caller parsed it already)."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, i = _varint(buf, i)
            yield number, wire, None
        elif wire == _FIXED64:
            i += 8
            yield number, wire, None
        elif wire == _LEN:
            size, i = _varint(buf, i)
            yield number, wire, buf[i:i + size]
            i += size
        elif wire == _FIXED32:
            i += 4
            yield number, wire, None
        else:  # groups: not in these messages
            raise ValueError(f"unexpected wire type {wire}")


def _valueless_key(features_field: int, buf: bytes) -> str | None:
    """The key of the first features map entry (field features_field of buf) that has no value, or None."""
    for number, wire, payload in _fields(buf):
        if number != features_field or wire != _LEN:
            continue
        key, has_value = "", False
        for entry_number, entry_wire, entry_payload in _fields(payload):
            if entry_number == 1 and entry_wire == _LEN:
                key = entry_payload.decode("utf-8", "replace")
            elif entry_number == 2:
                has_value = True
        if not has_value:
            return key
    return None


def _problem(key: str, where: str = "") -> str:
    shown = key if len(key) <= 64 else key[:64] + "…"
    return (f"{where}feature {shown!r} has no value (null in JSON?); send a number for every feature: a missing "
            "value is not 0")


def check_features(data: bytes, message) -> str | None:
    """PredictRequest / PredictStreamRequest (features = field 2)."""
    if len(data) == message.ByteSize():
        return None
    key = _valueless_key(2, data)
    return None if key is None else _problem(key)


def check_rows(data: bytes, message) -> str | dict[int, str] | None:
    """PredictBatchRequest (rows = field 2, each FeatureRow's features = field 1). With partial_success the
    problems are per row ({row index: problem}, for the handler to answer per row), else the first one is the
    call's."""
    if len(data) == message.ByteSize():
        return None
    problems: dict[int, str] = {}
    row = 0
    for number, wire, payload in _fields(data):
        if number == 2 and wire == _LEN:
            key = _valueless_key(1, payload)
            if key is not None:
                if not message.partial_success:
                    return _problem(key, f"rows[{row}]: ")
                problems[row] = _problem(key)
            row += 1
    return problems or None


# method path → check(raw bytes, parsed message) → problem, {row: problem} or None; used by edge.DecodeGuard
CHECKS = {
    "/predmesh.v1.InferenceService/Predict": check_features,
    "/predmesh.v1.InferenceService/PredictStream": check_features,
    "/predmesh.v1.InferenceService/PredictBatch": check_rows,
}
