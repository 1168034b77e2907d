"""Bearer-token checks for the admin plane; tokens are compared in constant time and never logged."""
from __future__ import annotations

import hmac

from inference.errors import PermissionDenied, Unauthenticated


class AdminAuth:
    """An admin token may reload; a read-only token may only list. No admin token configured: admin is off."""

    def __init__(self, admin_token: str | None, readonly_token: str | None = None):
        self._admin = admin_token.encode() if admin_token else None
        self._readonly = readonly_token.encode() if readonly_token else None

    def require(self, metadata, *, write: bool) -> None:
        """Raise Unauthenticated/PermissionDenied unless the call's metadata carries a sufficient token."""
        if self._admin is None:
            raise Unauthenticated("the admin API is disabled: the server has no PREDMESH_ADMIN_TOKEN")
        header = next((v for k, v in metadata if k == "authorization"), None)
        if header is None:
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode()
        if scheme.lower() != "bearer" or not presented:
            raise Unauthenticated("authorization must be 'Bearer <token>'")
        if hmac.compare_digest(presented, self._admin):
            return
        if self._readonly is not None and hmac.compare_digest(presented, self._readonly):
            if write:
                raise PermissionDenied("this token is read-only; reloading needs the admin token")
            return
        raise Unauthenticated("invalid token")
