"""A bounded share of the handler threads for long-lived calls (streams), and an idle timeout per stream.

The sync gRPC server runs every call on one thread of its pool for as long as the call lasts, and a stream lasts
as long as its client keeps it open: with nothing else in the way, a client holding as many idle streams as there
are threads leaves none for unary calls (they queue until their deadline). StreamGate gives streaming methods
(PredictStream, reflection, health Watch: any handler with a request or response stream) at most `limit` threads
together; a stream over it is answered RESOURCE_EXHAUSTED at once, before any message is read, so the other
threads always stay free for unary calls. A stream with no message in either direction for `idle_seconds` is
ended by the server with DEADLINE_EXCEEDED and a message naming the limit, which frees its thread.
"""
from __future__ import annotations

import logging
import threading
import time

import grpc

log = logging.getLogger(__name__)

LIMIT_HINT = "PREDMESH_MAX_STREAMS"
IDLE_HINT = "PREDMESH_STREAM_IDLE_SECONDS"
REFUSE_WAIT_S = 0.5  # how long a refused stream's first message is waited for (see StreamGate._admit)


class _Open:
    """One admitted stream: when it last moved a message, and whether the reaper ended it."""

    __slots__ = ("context", "last", "ended")

    def __init__(self, context):
        self.context = context
        self.last = time.monotonic()
        self.ended = False


def _end(context, code: grpc.StatusCode, message: str) -> None:
    """End a call from another thread with a status and message the client sees. The sync server's public
    context.cancel() would tell the client only CANCELLED; the call object underneath cancels with a status."""
    context.set_code(code)
    context.set_details(message)
    call = getattr(getattr(context, "_rpc_event", None), "call", None)
    try:
        call.cancel(code.value[0], message)  # type: ignore[union-attr]
    except Exception:  # another grpcio: the public cancel (the client sees CANCELLED)
        context.cancel()


class StreamGate(grpc.ServerInterceptor):
    """At most `limit` streaming calls at once (RESOURCE_EXHAUSTED at once over it), each ended after
    `idle_seconds` without a message (0: no idle timeout). `ended_idle` counts streams the timeout ended."""

    def __init__(self, limit: int, idle_seconds: float):
        if limit < 1:
            raise ValueError("the stream limit must be at least 1")
        self.limit = limit
        self.idle_seconds = idle_seconds
        self._slots = threading.BoundedSemaphore(limit)
        self._open: set[_Open] = set()
        self._refusing: dict[_Open, str] = {}  # refused streams whose first message is awaited -> their message
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()
        self.refused = 0
        self.ended_idle = 0

    # -- admission ------------------------------------------------------------------------------------------------
    def _admit(self, context, method: str, requests=None) -> _Open:
        """Take a slot, or refuse the call RESOURCE_EXHAUSTED. A request stream's first message is read before
        the refusal (for at most REFUSE_WAIT_S): a grpc.aio client still writing it when the status arrives
        reports INTERNAL instead of the status (grpc/grpc#36066)."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.refused += 1
            message = (f"too many open streams on this server ({self.limit}, {LIMIT_HINT}); {method} was refused "
                       "so that unary calls keep their threads: close idle streams, or retry later with backoff")
            if requests is not None:
                self._first_then_refuse(requests, context, message)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        entry = _Open(context)
        with self._lock:
            self._open.add(entry)
        self._start_reaper()
        return entry

    def _first_then_refuse(self, requests, context, message: str) -> None:
        entry = _Open(context)
        entry.last = time.monotonic() + REFUSE_WAIT_S  # the reaper ends it then, if no message came
        with self._lock:
            self._refusing[entry] = message
        self._start_reaper()
        try:
            next(iter(requests), None)
        except Exception:  # the client went away, or the reaper ended the call: the refusal stands either way
            pass
        finally:
            with self._lock:
                self._refusing.pop(entry, None)

    def _release(self, entry: _Open) -> None:
        with self._lock:
            self._open.discard(entry)
        self._slots.release()

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._open)

    # -- idle timeout ---------------------------------------------------------------------------------------------
    def _start_reaper(self) -> None:
        if self._reaper is not None:
            return
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="stream-reaper", daemon=True)
                self._reaper.start()

    def _reap(self) -> None:
        """Every tick: end the admitted streams idle for idle_seconds (DEADLINE_EXCEEDED), and the refused ones
        whose first message did not come within REFUSE_WAIT_S (RESOURCE_EXHAUSTED)."""
        tick = min(0.1, self.idle_seconds / 4) if self.idle_seconds > 0 else 0.1
        message = (f"stream idle for {self.idle_seconds:g} s (no message either way; {IDLE_HINT}): ended by the "
                   "server to free its thread; open a new stream when there is more to send")
        while not self._stop.wait(tick):
            now = time.monotonic()
            with self._lock:
                idle = ([e for e in self._open if not e.ended and now - e.last >= self.idle_seconds]
                        if self.idle_seconds > 0 else [])
                for e in idle:
                    e.ended = True
                    self.ended_idle += 1
                late = [(e, m) for e, m in self._refusing.items() if not e.ended and now >= e.last]
                for e, _ in late:
                    e.ended = True
            for e in idle:
                log.info("ending a stream idle for %.0f s (peer %s)", now - e.last, e.context.peer())
                _end(e.context, grpc.StatusCode.DEADLINE_EXCEEDED, message)
            for e, m in late:
                _end(e.context, grpc.StatusCode.RESOURCE_EXHAUSTED, m)

    def close(self) -> None:
        self._stop.set()

    # -- wrapping -------------------------------------------------------------------------------------------------
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        gated = self._gate(handler, method.rsplit("/", 1)[-1])
        self._cache[method] = (handler, gated)
        return gated

    def _gate(self, handler: grpc.RpcMethodHandler, name: str) -> grpc.RpcMethodHandler:
        gate = self

        def touched(entry: _Open, messages):
            for message in messages:
                entry.last = time.monotonic()
                yield message
                entry.last = time.monotonic()

        if handler.response_streaming:
            behaviour = handler.stream_stream or handler.unary_stream
            assert behaviour is not None  # a response-streaming handler has one of the two

            def streaming(request, context):
                entry = gate._admit(context, name, request if handler.request_streaming else None)
                try:
                    if handler.request_streaming:
                        request = touched(entry, request)
                    for response in behaviour(request, context):
                        entry.last = time.monotonic()
                        yield response
                        entry.last = time.monotonic()
                finally:
                    gate._release(entry)

            make = (grpc.stream_stream_rpc_method_handler if handler.request_streaming
                    else grpc.unary_stream_rpc_method_handler)
            return make(streaming, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)

        unary_answer = handler.stream_unary
        assert unary_answer is not None  # request streaming, unary response

        def collecting(requests, context):
            entry = gate._admit(context, name, requests)
            try:
                return unary_answer(touched(entry, requests), context)
            finally:
                gate._release(entry)

        return grpc.stream_unary_rpc_method_handler(collecting, request_deserializer=handler.request_deserializer,
                                                    response_serializer=handler.response_serializer)
