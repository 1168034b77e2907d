"""Bearer-token checks: the admin plane (admin, read-only tokens) and writes of monitoring data (writer or admin
token). Tokens are compared in constant time and never logged."""
from __future__ import annotations

import hmac
import logging

from inference.errors import PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

WRITE_METHODS = ("SubmitFeedback", "SubmitFeedbackBatch", "RecordBatchRun")
_HOW = ("set PREDMESH_WRITER_TOKEN (or PREDMESH_ADMIN_TOKEN) on the server and send 'authorization: Bearer "
        "<token>', or set PREDMESH_OPEN_WRITES=1 to accept anonymous writes")


def _presented(metadata) -> bytes:
    header = next((v for k, v in metadata if k == "authorization"), None)
    if header is None:
        raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
    scheme, _, token = header.partition(" ")
    presented = token.strip().encode()
    if scheme.lower() != "bearer" or not presented:
        raise Unauthenticated("authorization must be 'Bearer <token>'")
    return presented


def _is(presented: bytes, token: bytes | None) -> bool:
    return token is not None and hmac.compare_digest(presented, token)


class TokenAuth:
    """Roles, lowest first: read-only (list versions), writer (also write monitoring data: feedback, batch runs),
    admin (everything, reload too). No admin token configured: the admin API is off. No writer and no admin token:
    writes are refused, unless open_writes (PREDMESH_OPEN_WRITES) lets anyone write."""

    def __init__(self, admin_token: str | None, readonly_token: str | None = None, writer_token: str | None = None,
                 open_writes: bool = False):
        self._admin = admin_token.encode() if admin_token else None
        self._readonly = readonly_token.encode() if readonly_token else None
        self._writer = writer_token.encode() if writer_token else None
        self.open_writes = open_writes

    def require(self, metadata, *, write: bool, action: str = "reload") -> None:
        """The admin plane: Unauthenticated/PermissionDenied unless the metadata carries the admin token (write:
        reload, roll out, pin, roll back: action names it in the refusal) or, to read (list versions, the
        desired state), the read-only or writer token."""
        if self._admin is None:
            raise Unauthenticated("the admin API is disabled: the server has no PREDMESH_ADMIN_TOKEN")
        presented = _presented(metadata)
        if _is(presented, self._admin):
            return
        if _is(presented, self._writer) or _is(presented, self._readonly):
            if write:
                raise PermissionDenied(f"this token may not {action}; that needs the admin token")
            return
        raise Unauthenticated("invalid token")

    def require_writer(self, metadata) -> None:
        """Writes of monitoring data (WRITE_METHODS): the writer or the admin token (anyone with open_writes)."""
        if self.open_writes:
            return
        if self._writer is None and self._admin is None:
            raise Unauthenticated(f"writes of monitoring data are disabled on this server: {_HOW}")
        presented = _presented(metadata)
        if _is(presented, self._writer) or _is(presented, self._admin):
            return
        if _is(presented, self._readonly):
            raise PermissionDenied("this token is read-only; feedback and batch runs need the writer (or admin) "
                                   "token")
        raise Unauthenticated("invalid token; feedback and batch runs need the writer (or admin) token")

    def announce(self) -> None:
        """Say at start who may write monitoring data (a warning when anyone may)."""
        methods = ", ".join(WRITE_METHODS)
        if self.open_writes:
            log.warning("PREDMESH_OPEN_WRITES is on: %s accept calls without a token; anyone who reaches this "
                        "server can change recorded feedback (and so the reported accuracy) and batch runs", methods)
        elif self._writer is None and self._admin is None:
            log.warning("writes of monitoring data are refused (%s): %s", methods, _HOW)
        else:
            log.info("writes of monitoring data (%s) need the %s token", methods,
                     "writer or admin" if self._writer else "admin")
