"""predmesh client SDK: the generated contract (predmesh.v1), typed results and the clients that open channels.

Imports are lazy (PEP 562): `import predmesh.env` or `predmesh.logs` loads neither grpc nor any stub, so the
server-side packages can share those helpers; `from predmesh import Client` loads the client on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from predmesh._version import __version__

_ERRORS = ("PredmeshError", "InvalidArgument", "BadArgument", "NotFound", "AlreadyExists", "FailedPrecondition",
           "Unauthenticated", "PermissionDenied", "ResourceExhausted", "Unavailable", "DeadlineExceeded",
           "Internal")
_TYPES = ("Prediction", "ModelInfo", "FeatureSpec", "ClassProfile", "StoredPrediction", "StreamResult", "Page",
          "Stats", "StatsBucket", "LatencySummary", "VersionQuality", "ReloadResult", "Feedback", "FeedbackBatch",
          "BatchRun", "RecordedRun", "ScoredMatrix", "CallLimits",
          "DesiredState", "CanaryCriteria", "CanaryRun", "CanarySide")
_WHERE = {
    "Client": "predmesh.client", "TlsConfig": "predmesh.channel",
    "AsyncClient": "predmesh.aio",
    **dict.fromkeys(_ERRORS, "predmesh.errors"),
    **dict.fromkeys(_TYPES, "predmesh.types"),
}

# Spelled out (not built from _ERRORS/_TYPES) so type checkers and linters can read the public names;
# tests/unit/test_sdk_exports.py checks it is exactly _WHERE's names plus __version__.
__all__ = [
    "__version__", "Client", "AsyncClient", "TlsConfig",
    # errors
    "PredmeshError", "InvalidArgument", "BadArgument", "NotFound", "AlreadyExists", "FailedPrecondition",
    "Unauthenticated", "PermissionDenied", "ResourceExhausted", "Unavailable", "DeadlineExceeded", "Internal",
    # typed results
    "Prediction", "ModelInfo", "FeatureSpec", "ClassProfile", "StoredPrediction", "StreamResult", "Page", "Stats",
    "StatsBucket", "LatencySummary", "VersionQuality", "ReloadResult", "Feedback", "FeedbackBatch", "BatchRun",
    "RecordedRun", "ScoredMatrix", "CallLimits", "DesiredState", "CanaryCriteria", "CanaryRun", "CanarySide",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from predmesh.aio import AsyncClient
    from predmesh.channel import TlsConfig
    from predmesh.client import Client
    from predmesh.errors import (
        AlreadyExists,
        BadArgument,
        DeadlineExceeded,
        FailedPrecondition,
        Internal,
        InvalidArgument,
        NotFound,
        PermissionDenied,
        PredmeshError,
        ResourceExhausted,
        Unauthenticated,
        Unavailable,
    )
    from predmesh.types import (
        BatchRun,
        CallLimits,
        CanaryCriteria,
        CanaryRun,
        CanarySide,
        ClassProfile,
        DesiredState,
        FeatureSpec,
        Feedback,
        FeedbackBatch,
        LatencySummary,
        ModelInfo,
        Page,
        Prediction,
        RecordedRun,
        ReloadResult,
        ScoredMatrix,
        Stats,
        StatsBucket,
        StoredPrediction,
        StreamResult,
        VersionQuality,
    )


def __getattr__(name: str) -> Any:
    try:
        module = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module 'predmesh' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
