"""The RPC edge every servicer shares: domain errors → gRPC status (one table), the `rpc` handler wrapper that sets
the request's log context, and the interceptor that answers undecodable request bytes INVALID_ARGUMENT."""
from __future__ import annotations

import functools
import logging

import grpc

from inference import errors
from inference.bounds import clip
from inference.rpc import logcontext

log = logging.getLogger(__name__)

# Families first-match; every PredmeshError subclass belongs to one (see inference/errors.py).
STATUS = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ReloadFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
)


def status_of(exc: BaseException, what: str) -> tuple[grpc.StatusCode, str]:
    """The status for an exception, its message bounded; unexpected ones become INTERNAL with a generic message,
    logged once with the traceback."""
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code, clip(str(exc))
    log.error("%s failed unexpectedly", what, exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error; the server log has the details"


def rpc(method):
    """Wrap a unary handler: the request becomes the log context, and any exception a proper status (never
    UNKNOWN)."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self, request, context):
        token = logcontext.enter(name, request)
        try:
            try:
                return method(self, request, context)
            except Exception as exc:  # context.abort below raises; keep it outside this try
                code, message = status_of(exc, name)
            context.abort(code, message)
        finally:
            logcontext.leave(token)
    return wrapper


# -- undecodable requests ------------------------------------------------------------------------------------------
# grpcio answers a request its deserializer cannot parse with INTERNAL ("Exception deserializing request!"), and on
# a stream it leaves the handler waiting. The guard's deserializer never raises: it returns an _Undecoded marker,
# and the guarded behaviour turns the marker into INVALID_ARGUMENT before the servicer sees it.
class _Undecoded:
    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message


class Refused:
    """A request that decoded but that a check refused (problem: the INVALID_ARGUMENT message). Unary calls are
    answered INVALID_ARGUMENT; on a request stream it is passed to the handler in place of the request, so a
    handler that answers per message (PredictStream) can answer it and go on. A check may instead refuse rows of
    the request (rows: {row index: problem}, e.g. PredictBatch with partial_success): then the unary handler gets
    it in place of the request too, and answers those rows."""

    __slots__ = ("request", "problem", "rows")

    def __init__(self, request, problem: str, rows: dict[int, str] | None = None):
        self.request = request
        self.problem = problem
        self.rows = rows or {}


def _decoder(deserialize, method: str, check=None):
    def decode(data: bytes):
        try:
            message = deserialize(data)
        except Exception as exc:
            return _Undecoded(clip(f"the request is not a valid message for {method} ({type(exc).__name__}: "
                                   f"{exc}); check the field types against the API", 300))
        if check is not None:
            try:
                problem = check(data, message)
            except Exception:  # the bytes parsed; a check that cannot walk them finds nothing to refuse
                problem = None
            if isinstance(problem, dict) and problem:
                return Refused(message, "", {row: clip(p, 300) for row, p in problem.items()})
            if problem:
                return Refused(message, clip(problem, 300))
        return message
    return decode


def _checked_stream(requests, context):
    """The request stream with undecodable messages turned into INVALID_ARGUMENT (the stream ends: its framing
    cannot be trusted); Refused ones go to the handler."""
    for request in requests:
        if type(request) is _Undecoded:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        yield request


def _guard(handler: grpc.RpcMethodHandler, method: str, check=None) -> grpc.RpcMethodHandler:
    """The same handler with a deserializer that cannot fail and a behaviour that refuses undecoded input."""
    deserialize = handler.request_deserializer
    if deserialize is None:  # a handler of raw bytes: nothing to decode
        return handler
    decode = _decoder(deserialize, method, check)
    serialize = handler.response_serializer
    if not handler.request_streaming:
        behaviour = handler.unary_unary or handler.unary_stream
        assert behaviour is not None  # a unary-request handler has one of the two

        def unary(request, context):
            kind = type(request)
            if kind is _Undecoded:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            if kind is Refused and not request.rows:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.problem)
            return behaviour(request, context)

        make = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                else grpc.unary_stream_rpc_method_handler)
        return make(unary, request_deserializer=decode, response_serializer=serialize)
    stream_behaviour = handler.stream_stream or handler.stream_unary
    assert stream_behaviour is not None  # a streaming-request handler has one of the two

    def streaming(requests, context):
        return stream_behaviour(_checked_stream(requests, context), context)

    make = grpc.stream_stream_rpc_method_handler if handler.stream_stream else grpc.stream_unary_rpc_method_handler
    return make(streaming, request_deserializer=decode, response_serializer=serialize)


class DecodeGuard(grpc.ServerInterceptor):
    """Undecodable request bytes on any method (ours, health, reflection) → INVALID_ARGUMENT, never INTERNAL.

    checks: method path → check(raw bytes, parsed message) returning a problem (INVALID_ARGUMENT) or None, for
    what the parsed message cannot show. Put the guard last in the interceptor list, so the
    metrics interceptor sees (and counts) the status it gives. Guarded handlers are cached per method (the
    handler grpc resolves for a method does not change).
    """

    def __init__(self, checks=None):
        self._checks = dict(checks or {})
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        guarded = _guard(handler, method, self._checks.get(method))
        self._cache[method] = (handler, guarded)
        return guarded


class MetadataNoise(logging.Filter):
    """grpcio logs a traceback at ERROR ("Invalid encoding on b'…'") for every metadata value that is not UTF-8, which
    any client can send (a Latin-1 Authorization header through the gateway), while the call itself is answered as
    usual. Keep the line, as a warning, without the traceback: a client must not be able to fill the log with them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg and str(record.msg).startswith("Invalid encoding on"):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_metadata_noise() -> None:
    """Install MetadataNoise on grpcio's own logger, once per process."""
    logger = logging.getLogger("grpc._cython.cygrpc")
    if not any(isinstance(f, MetadataNoise) for f in logger.filters):
        logger.addFilter(MetadataNoise())
