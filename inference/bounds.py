"""Bounds on client-supplied strings: what the server accepts (length, characters) and what it echoes back.

Every string a client sends that is stored, used as a filter or echoed in an error passes one of these checks at
the RPC edge, so nothing the database refuses (NUL bytes, index-sized values) is answered OK and nothing large is
echoed into status messages (metadata limits; an HTTP/2 reset through Envoy).
"""
from __future__ import annotations

import re

from inference.errors import InvalidArgument, InvalidName

MAX_ECHO = 64  # characters of a client value quoted in an error message
MAX_MESSAGE = 512  # characters of any status message
MAX_NAME = 64  # model and version names (as in the model store)
MAX_ID = 128  # request ids and prediction ids
MAX_LABEL = 128  # class labels (feedback, filters)
MAX_TOKEN = 512  # page tokens
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def shown(value: str, limit: int = MAX_ECHO) -> str:
    """value quoted for an error message, cut to limit characters with an ellipsis."""
    if len(value) <= limit:
        return repr(value)
    return repr(value[:limit]) + f"… ({len(value)} characters)"


def clip(message: str, limit: int = MAX_MESSAGE) -> str:
    """A status message cut to limit characters (the last line of defence; values are cut by shown())."""
    return message if len(message) <= limit else message[:limit - 1] + "…"


def check_text(field: str, value: str, max_chars: int, *, required: bool = False) -> str:
    """A free-form client string: at most max_chars printable characters (no NUL or other control characters,
    which PostgreSQL refuses or logs mangle); raises InvalidArgument naming the field."""
    if len(value) > max_chars:
        raise InvalidArgument(f"{field} is {len(value)} characters long; the limit is {max_chars}")
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise InvalidArgument(f"{field} contains the control character U+{ord(bad):04X}; send printable text")
    if required and not value:
        raise InvalidArgument(f"{field} is empty")
    return value


def check_name(kind: str, value: str) -> str:
    """A model or version name: 1-64 of letters, digits, '_', '-', '.', starting with a letter or digit, no '..';
    raises InvalidName (INVALID_ARGUMENT) naming the field otherwise."""
    if _NAME.fullmatch(value) and ".." not in value:
        return value
    if not value:
        raise InvalidName(f"{kind} name is empty; name a {kind}")
    if len(value) > MAX_NAME:
        raise InvalidName(f"{kind} name is {len(value)} characters long; the limit is {MAX_NAME}")
    raise InvalidName(f"{kind} {shown(value)} is not a valid name (letters, digits, '_', '-', '.'; no '..')")


def check_optional_name(kind: str, value: str) -> str:
    """check_name for a filter: empty means no filter."""
    return check_name(kind, value) if value else value
