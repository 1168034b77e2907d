"""Database settings (PREDMESH_DATABASE_URL), read once by an entry point and passed down."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

from predmesh.env import ConfigError, Env, redact
from predmesh.logs import LEVELS

DEFAULT_URL = "sqlite:///var/predmesh.db"


class DatabaseConfigError(ConfigError):
    """The database URL cannot be used."""


def check_url(url: str) -> str:
    """The URL if predmesh can open it (postgresql://…/name, sqlite:///path); DatabaseConfigError otherwise."""
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise DatabaseConfigError(f"database URL {redact(url)}: {exc}") from None
    if parsed.scheme in ("postgres", "postgresql"):
        if not parsed.path.lstrip("/"):
            raise DatabaseConfigError(f"database URL {redact(url)} names no database")
        return url
    if parsed.scheme == "sqlite":
        if not url.startswith("sqlite:///") or not url[len("sqlite:///"):]:
            raise DatabaseConfigError(f"database URL {url!r}: use sqlite:///relative/path or sqlite:////abs/path")
        return url
    raise DatabaseConfigError(f"database URL {redact(url)}: scheme must be postgresql:// or sqlite:///")


@dataclass(frozen=True)
class DatabaseSettings:
    """Where predictions are stored; see the README's configuration table."""

    url: str = DEFAULT_URL
    log_level: str = "INFO"
    retention_days: int = 0  # predictions older than this many days are removed (`predmesh retention`); 0: kept

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> DatabaseSettings:
        env = Env(environ)
        return cls(url=check_url(env.secret("DATABASE_URL") or cls.url),
                   log_level=env.choice("LOG_LEVEL", cls.log_level, LEVELS),
                   retention_days=env.int("RETENTION_DAYS", cls.retention_days, minimum=0))
