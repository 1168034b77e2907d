"""Client-side exceptions: one class per gRPC status a caller can act on."""
import re

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


# gRPC's own words for a message over a size limit (RESOURCE_EXHAUSTED), from the side whose limit it passed:
# "CLIENT: Sent message larger than max (5400006 vs. 4194304)", "SERVER: Received message larger than max (…)".
_TOO_LARGE = re.compile(r"(CLIENT|SERVER): (Sent|Received) message larger than max \((\d+) vs\. (\d+)\)")


def too_large_message(details: str) -> str:
    """gRPC's message for a request or answer over a size limit, said in the caller's terms: which message, whose
    limit and what to do. gRPC's own words stay at the end (callers such as the queue consumer look for them)."""
    found = _TOO_LARGE.search(details)
    if found is None:
        return details
    side, verb, size, limit = found.groups()
    if (side, verb) == ("CLIENT", "Sent"):
        said = (f"the request is {size} bytes, more than this client sends ({limit}, Client(max_message_bytes=)): "
                "send fewer rows per call")
    elif (side, verb) == ("SERVER", "Received"):
        said = (f"the request is {size} bytes, more than the server takes ({limit}, ModelInfo.limits."
                "max_request_bytes, PREDMESH_MAX_MESSAGE_BYTES): send fewer rows per call")
    elif side == "CLIENT":
        said = (f"the answer is {size} bytes, more than this client takes ({limit}, Client(max_message_bytes=)): "
                "raise max_message_bytes or ask for less (fewer rows, a smaller page_size)")
    else:
        said = (f"the answer is {size} bytes, more than the server sends ({limit}): ask for less (fewer rows, a "
                "smaller page_size)")
    return f"{said} ({found.group(0)})"


def deadline_message(details: str, timeout: float, stream: bool) -> str:
    """gRPC's "Deadline Exceeded" for the call's own deadline, said with its timeout and what it bounds."""
    if stream:
        said = (f"the stream did not end within {timeout:g}s: its timeout (timeout=, else the client's) bounds the "
                "whole stream, not each row; give a long stream a longer timeout")
    else:
        said = f"no answer within {timeout:g}s, the call's timeout (timeout=, else the client's): retry, or allow more"
    return f"{said} ({details})"


def from_rpc_error(err: grpc.RpcError, timeout: float | None = None, stream: bool = False) -> PredmeshError:
    """Translate a grpc.RpcError into the matching PredmeshError subclass; timeout (and whether the call is a
    stream) lets an expired deadline say what it was."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = (err.details() if hasattr(err, "details") else None) or str(code)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        message = too_large_message(message)
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED and timeout is not None and "Deadline Exceeded" in message:
        message = deadline_message(message, timeout, stream)  # gRPC's words; the server's own name what was slow
    cls = _BY_CODE.get(code, PredmeshError)
    return cls(message, code)


def from_status(code: int, message: str) -> PredmeshError:
    """Translate a google.rpc.Status (numeric code) into a PredmeshError."""
    status = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    return _BY_CODE.get(status, PredmeshError)(message, status)
