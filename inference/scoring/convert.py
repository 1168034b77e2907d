"""Conversions between domain objects and predmesh.v1 messages."""
from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from operator import methodcaller

import numpy as np
from google.protobuf.struct_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from database.records import PREDICTION_NAMESPACE_BYTES, PredictionRecord, prediction_id_of
from inference.bounds import shown
from inference.errors import InvalidFeatures
from inference.models.manifest import Manifest
from predmesh.types import TRANSPORTS
from predmesh.v1 import model_pb2
from predmesh.values import decode, upgrade_message

# prediction_id = uuid5(PREDICTION_NAMESPACE, request_id) (database.records: the database finds a key's row by it)
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
    hand-off), and the prediction_id is database.records.prediction_id_of (uuid5 computed directly, RFC 4122).
    """
    request_id = request_id or f"{random.getrandbits(128):032x}"
    return request_id, prediction_id_of(request_id)


_DIGEST = methodcaller("digest")
# where the 32 hex digits of a UUID go among its 36 characters (and a separator after it: 37 per row)
_HEX_AT = np.array([*range(8), *range(9, 13), *range(14, 18), *range(19, 23), *range(24, 36)])


def fresh_request_ids(n: int) -> list[str]:
    """n fresh request ids, as ids() makes for a row without one."""
    bits = random.getrandbits
    return [f"{bits(128):032x}" for _ in range(n)]


def prediction_ids(request_ids: Sequence[str]) -> list[str]:
    """ids()'s prediction_id of each request id (uuid5(PREDICTION_NAMESPACE, request_id)), for many at once: one
    SHA-1 per row, the bit-twiddling and formatting vectorised (the bulk path)."""
    n = len(request_ids)
    if not n:
        return []
    keyed = map(PREDICTION_NAMESPACE_BYTES.__add__, map(str.encode, request_ids))
    digests = b"".join(map(_DIGEST, map(hashlib.sha1, keyed)))
    raw = np.frombuffer(digests, np.uint8).reshape(n, 20)[:, :16].copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hexed = np.frombuffer(raw.tobytes().hex().encode(), np.uint8).reshape(n, 32)
    text = np.full((n, 37), ord("-"), np.uint8)
    text[:, _HEX_AT] = hexed
    text[:, 36] = ord("\n")
    return text.tobytes().decode().split("\n")[:n]


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
