"""Conversions between domain objects and predmesh.v1 messages."""
from __future__ import annotations

import uuid

from google.protobuf.timestamp_pb2 import Timestamp

from inference.manifest import Manifest
from predmesh.v1 import model_pb2

# prediction_id = uuid5(namespace, request_id): a retried request gets the same prediction_id.
PREDICTION_NAMESPACE = uuid.UUID("4c1d3c57-9a4e-4f0e-9a43-5b0f7c8e0d11")
TRANSPORTS = frozenset({"grpc", "rest", "queue", "batch", "ui"})


def model_info(manifest: Manifest, serving: bool) -> model_pb2.ModelInfo:
    created = Timestamp()
    created.FromDatetime(manifest.created_at)
    return model_pb2.ModelInfo(
        name=manifest.name, version=manifest.version,
        features=[model_pb2.FeatureSpec(name=f.name, min=f.min, max=f.max) for f in manifest.features],
        classes=list(manifest.classes), sha256=manifest.sha256, metrics=manifest.metrics, created_at=created,
        sklearn_version=manifest.sklearn_version, estimator=manifest.estimator, serving=serving)


def ids(request_id: str) -> tuple[str, str]:
    """(request_id, prediction_id): a fresh request_id when the client sent none."""
    request_id = request_id or uuid.uuid4().hex
    return request_id, str(uuid.uuid5(PREDICTION_NAMESPACE, request_id))


def transport_of(metadata) -> str:
    """The caller's transport from x-predmesh-transport metadata; grpc when absent or unknown."""
    for key, value in metadata:
        if key == "x-predmesh-transport":
            return value if value in TRANSPORTS else "grpc"
    return "grpc"
