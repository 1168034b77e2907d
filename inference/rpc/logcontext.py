"""The request a log line belongs to: a context variable set at the RPC edge, and a logging filter that adds the
method, model and request id to every record logged while the request is handled (so one request can be
followed through the server's log).

Setting the context costs one ContextVar.set per call: it holds (method, request message) and the fields are read
from the message only when a line is actually logged.
"""
from __future__ import annotations

import logging
from contextvars import ContextVar

from inference.bounds import MAX_ECHO

_current: ContextVar[tuple[str, object] | None] = ContextVar("predmesh_request", default=None)
FORMAT_SUFFIX = "%(context)s"


def enter(method: str, request: object = None):
    """Make (method, request) the current request of this thread; returns a token for leave()."""
    return _current.set((method, request))


def leave(token) -> None:
    _current.reset(token)


def _field(request: object, *names: str) -> str:
    for name in names:
        value = getattr(request, name, None)
        if isinstance(value, str) and value:
            return value if len(value) <= MAX_ECHO else value[:MAX_ECHO] + "…"
    return ""


def current() -> dict[str, str]:
    """{"method", "model", "request_id"} of the request being handled ("" each when none)."""
    entry = _current.get()
    if entry is None:
        return {"method": "", "model": "", "request_id": ""}
    method, request = entry
    return {"method": method, "model": _field(request, "model", "model_name", "name"),
            "request_id": _field(request, "request_id", "id", "prediction_id")}


class RequestContextFilter(logging.Filter):
    """Adds record.method, record.model, record.request_id and record.context (" [method=… model=…
    request_id=…]", or "" outside a request) to every record it sees; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "context"):
            ctx = current()
            record.method, record.model, record.request_id = ctx["method"], ctx["model"], ctx["request_id"]
            parts = [f"{k}={v}" for k, v in ctx.items() if v]
            record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add the filter to every handler of the (root) logger and append the context to their formats."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if any(isinstance(f, RequestContextFilter) for f in handler.filters):
            continue
        handler.addFilter(RequestContextFilter())
        formatter = handler.formatter or logging.Formatter()
        fmt = getattr(formatter, "_fmt", None) or "%(message)s"
        if FORMAT_SUFFIX not in fmt:
            handler.setFormatter(logging.Formatter(fmt + FORMAT_SUFFIX, formatter.datefmt))
