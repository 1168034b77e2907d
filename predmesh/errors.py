"""Client-side exceptions: one class per gRPC status a caller can act on."""
import grpc


class PredmeshError(Exception):
    """Base of every error the client raises; carries the gRPC status code and the server's message."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(PredmeshError):
    """The request is malformed: bad features, too many rows, bad filter."""
    code = grpc.StatusCode.INVALID_ARGUMENT


class BadArgument(InvalidArgument, ValueError):
    """An argument the client refuses itself, before any call is sent (a transport, status or row number that the
    contract cannot carry). An InvalidArgument like the server's, and a ValueError for callers who catch that."""


class NotFound(PredmeshError):
    """No such model, version or prediction."""
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(PredmeshError):
    """The thing being created exists already (e.g. feedback for a prediction)."""
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(PredmeshError):
    """The server refused a state change, e.g. a reload of an artifact that failed verification."""
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unauthenticated(PredmeshError):
    """Missing or wrong credentials."""
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(PredmeshError):
    """Valid credentials without the right to this call."""
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(PredmeshError):
    """The server is overloaded, the message is too large, or the prediction log is full; retry later."""
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(PredmeshError):
    """The server is unreachable, draining or has no model loaded; retry later."""
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(PredmeshError):
    """The call did not finish within its deadline."""
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(PredmeshError):
    """The server failed unexpectedly; its log has the details."""
    code = grpc.StatusCode.INTERNAL


_BY_CODE = {
    cls.code: cls
    for cls in (InvalidArgument, NotFound, AlreadyExists, FailedPrecondition, Unauthenticated,
                PermissionDenied, ResourceExhausted, Unavailable, DeadlineExceeded, Internal)
}


def from_rpc_error(err: grpc.RpcError) -> PredmeshError:
    """Translate a grpc.RpcError into the matching PredmeshError subclass."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else None) or str(code)
    cls = _BY_CODE.get(code, PredmeshError)
    return cls(message, code)


def from_status(code: int, message: str) -> PredmeshError:
    """Translate a google.rpc.Status (numeric code) into a PredmeshError."""
    status = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return _BY_CODE.get(status, PredmeshError)(message, status)
