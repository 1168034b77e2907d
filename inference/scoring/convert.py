"""Conversions between domain objects and predmesh.v1 messages."""
from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
from google.protobuf.struct_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from database.records import (
    DIGITS,
    MAX_ORDERED_DIGITS,
    NUMBER_HEX,
    PredictionRecord,
    ordered_head,
    prediction_id_of,
)
from inference.bounds import shown
from inference.errors import InvalidFeatures
from inference.models.manifest import Manifest
from predmesh.types import TRANSPORTS
from predmesh.v1 import model_pb2
from predmesh.values import decode, upgrade_message

# prediction_id = database.records.prediction_id_of(request_id) (the database finds a key's row by it)
_TRANSPORTS = frozenset(TRANSPORTS)
_KIND = {"number": model_pb2.FEATURE_KIND_NUMBER, "category": model_pb2.FEATURE_KIND_CATEGORY,
         "boolean": model_pb2.FEATURE_KIND_BOOLEAN}
# Categories a FeatureSpec lists, the most common first. The manifest keeps every one (the edge checks against all
# of them), but a feature of a model imported with its sample's 150,000 product codes made its ModelInfo 7.5 MB:
# over the 4 MiB a gRPC answer may have, so GetModel of that model and ListModels of every model failed.
MAX_LISTED_CATEGORIES = 1000


def plain(name: str, value: Value, where: str = "") -> float | str | bool | None:
    """A feature's google.protobuf.Value as the plain value the runtime checks (number → float, string → str, bool,
    null → None; predmesh.values.decode); InvalidFeatures naming the feature for a Value without a kind (what a
    predmesh 0.2 client's double map entry, or a map entry with no value at all, parses as) or a list / struct."""
    kind = value.WhichOneof("kind")
    if kind is None:
        raise InvalidFeatures(where + upgrade_message(name))
    if kind == "list_value" or kind == "struct_value":
        what = "a list" if kind == "list_value" else "an object"
        raise InvalidFeatures(f"{where}feature {shown(name)} is {what}; send a number, string, boolean or null")
    return decode(value)


def model_info(manifest: Manifest, serving: bool, limits: model_pb2.CallLimits | None = None
               ) -> model_pb2.ModelInfo:
    """The ModelInfo of a manifest; limits: the serving server's CallLimits (unset when not given)."""
    created = Timestamp()
    created.FromDatetime(manifest.created_at)
    return model_pb2.ModelInfo(
        name=manifest.name, version=manifest.version,
        features=[model_pb2.FeatureSpec(
            name=f.name, min=f.min, max=f.max, mean=f.mean, std=f.std, quantiles=f.quantiles, kind=_KIND[f.kind],
            categories=[model_pb2.CategoryShare(value=v, share=s) for v, s in f.categories[:MAX_LISTED_CATEGORIES]],
            missing_share=f.missing_share, nullable=f.nullable, accepts_unknown=f.accepts_unknown)
            for f in manifest.features],
        classes=list(manifest.classes), sha256=manifest.sha256, metrics=manifest.metrics, created_at=created,
        sklearn_version=manifest.sklearn_version, estimator=manifest.estimator, serving=serving,
        class_profiles=[model_pb2.ClassProfile(label=c.label, share=c.share, mean=c.mean, std=c.std)
                        for c in manifest.class_profiles], limits=limits)


def ids(request_id: str) -> tuple[str, str]:
    """(request_id, prediction_id): a fresh request_id when the client sent none.

    Hot path (once per row), so without uuid objects: the fresh id is 128 random bits from `random` (reseeded
    from os.urandom at start and after fork; uuid4 would make a getrandom syscall per row, and with it a GIL
    hand-off), and the prediction_id is database.records.prediction_id_of.
    """
    request_id = request_id or f"{random.getrandbits(128):032x}"
    return request_id, prediction_id_of(request_id)


def fresh_request_ids(n: int) -> list[str]:
    """n fresh request ids, as ids() makes for a row without one."""
    bits = random.getrandbits
    return [f"{bits(128):032x}" for _ in range(n)]


def prediction_ids(request_ids: Sequence[str]) -> list[str]:
    """ids()'s prediction_id of each request id (database.records.prediction_id_of), for many at once; a bulk call
    with request_id_prefix takes row_prediction_ids instead."""
    return list(map(prediction_id_of, request_ids))


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_TENS = 10 ** np.arange(1, MAX_ORDERED_DIGITS, dtype=np.uint64)  # 10 .. 10**14: a number's digit count
# where the 32 hex digits of a UUID go among its 36 characters (and a separator after it: 37 per row)
_HEX_AT = np.array([*range(8), *range(9, 13), *range(14, 18), *range(19, 23), *range(24, 36)])


def row_prediction_ids(prefix: str, numbers: Sequence[int]) -> list[str]:
    """prediction_ids([prefix + str(n) for n in numbers]) (a bulk call's rows: request_id_prefix and row_numbers),
    made without Python per row: one head per digit count (ordered_head), the numbers' hex digits by numpy.
    A prefix ending in a digit (its digits would join the number's) or a number of more than 15 digits takes
    prediction_ids."""
    if not numbers:
        return []
    values = np.asarray(numbers, dtype=np.uint64)
    if prefix[-1:] in DIGITS or int(values.max()) >= 10 ** MAX_ORDERED_DIGITS:
        return prediction_ids([prefix + str(x) for x in numbers])
    widths = np.searchsorted(_TENS, values, side="right") + 1  # digit counts
    hexed = np.empty((len(values), 32), np.uint8)
    for width in np.unique(widths).tolist():
        rows = widths == width
        digits = NUMBER_HEX[width]
        hexed[rows, :32 - digits] = np.frombuffer(ordered_head(prefix, width).encode(), np.uint8)
        shifts = np.arange(4 * (digits - 1), -1, -4, dtype=np.uint64)
        hexed[rows, 32 - digits:] = _HEX[((values[rows, None] >> shifts) & np.uint64(0xF)).astype(np.intp)]
    out = np.full((len(values), 37), ord("-"), np.uint8)
    out[:, _HEX_AT] = hexed
    out[:, 36] = ord("\n")
    return out.tobytes().decode().split("\n")[:-1]


def transport_of(metadata) -> str:
    """The caller's transport from x-predmesh-transport metadata; grpc when absent or unknown."""
    for key, value in metadata:
        if key == "x-predmesh-transport":
            return value if value in _TRANSPORTS else "grpc"
    return "grpc"


def retried(metadata) -> bool:
    """True when this call is a retry of one sent before: gRPC's retry header (grpc-previous-rpc-attempts, which
    a client cannot set itself), or Envoy's attempt count above 1 (when a route asks Envoy to send it)."""
    for key, value in metadata:
        if key == "grpc-previous-rpc-attempts" or (key == "x-envoy-attempt-count" and value != "1"):
            return True
    return False


def prediction_message(r: PredictionRecord) -> model_pb2.Prediction:
    """The Prediction message of a recorded (or stored) prediction: the one conversion Predict* and
    ListPredictions share."""
    return model_pb2.Prediction(
        prediction_id=r.prediction_id, request_id=r.request_id, model=r.model, model_version=r.model_version,
        label=r.label, probabilities=r.probabilities, latency_ms=r.latency_ms)
