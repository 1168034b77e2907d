"""predmesh client SDK: the generated contract (predmesh.v1) and the typed client that opens channels."""
from predmesh.client import PredmeshClient
from predmesh.errors import (
    AlreadyExists, DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, NotFound,
    PermissionDenied, PredmeshError, ResourceExhausted, Unauthenticated, Unavailable,
)

__all__ = [
    "PredmeshClient", "PredmeshError", "InvalidArgument", "NotFound", "AlreadyExists", "FailedPrecondition",
    "Unauthenticated", "PermissionDenied", "ResourceExhausted", "Unavailable", "DeadlineExceeded", "Internal",
]
