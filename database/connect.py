"""Open the database named by a URL (postgresql://… or sqlite:///…) and bind the models' proxy to it."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlparse

import peewee
from peewee import Database, SqliteDatabase
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

from database.models import db

log = logging.getLogger(__name__)
DEFAULT_URL = "sqlite:///var/predmesh.db"


class DatabaseConfigError(ValueError):
    """The database URL cannot be used."""


def make_database(url: str, *, max_connections: int = 8, connect_timeout: float = 3.0,
                  statement_timeout_ms: int = 10_000) -> Database:
    """A peewee Database for the URL (not yet connected).

    postgresql://user:pass@host:port/name[?options=-c%20search_path%3Dschema] → a small connection pool with
    bounded connect and statement timeouts (a slow or dead server must not hang the caller);
    sqlite:///relative/path or sqlite:////absolute/path → WAL mode, synchronous=NORMAL, busy timeout.
    """
    parsed = urlparse(url)
    params = dict(parse_qsl(parsed.query))
    if parsed.scheme in ("postgres", "postgresql"):
        name = parsed.path.lstrip("/")
        if not name:
            raise DatabaseConfigError(f"database URL {redact(url)} names no database")
        options = " ".join(filter(None, [f"-c statement_timeout={statement_timeout_ms}", params.pop("options", "")]))
        return PooledPostgresqlDatabase(
            name, user=unquote(parsed.username or "") or None, password=unquote(parsed.password or "") or None,
            host=parsed.hostname or None, port=parsed.port or None, connect_timeout=int(max(1, connect_timeout)),
            options=options, max_connections=max_connections, stale_timeout=300, timeout=connect_timeout,
            **params)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
        if not path:
            raise DatabaseConfigError(f"database URL {url!r}: use sqlite:///relative/path or sqlite:////abs/path")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return SqliteDatabase(path, timeout=connect_timeout, pragmas={
            "journal_mode": "wal", "synchronous": "normal", "foreign_keys": 1, "busy_timeout": 5000})
    raise DatabaseConfigError(f"database URL {redact(url)}: scheme must be postgresql:// or sqlite:///")


def open_database(url: str, **options) -> Database:
    """Make the database for the URL and bind the models to it (the entry point calls this once)."""
    database = make_database(url, **options)
    db.initialize(database)
    log.info("database: %s", redact(url))
    return database


def is_postgres(database: Database | None = None) -> bool:
    from peewee import PostgresqlDatabase
    target = database or db.obj
    return isinstance(target, PostgresqlDatabase)


def redact(url: str) -> str:
    """The URL without its password, for logs and errors."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or refused the operation for a reason that may pass (retry later)."""


class RejectedData(ValueError):
    """The database rejected the data itself (constraint, type, size): retrying the same rows cannot succeed."""


@contextmanager
def session():
    """A connection for the block (returned to the pool after); peewee errors become the two errors above."""
    opened = False
    try:
        if db.is_closed():
            db.connect()
            opened = True
        yield
    except MaxConnectionsExceeded as exc:  # a ValueError, but it means "busy", not "bad data"
        raise DatabaseUnavailable(f"connection pool exhausted: {exc}") from exc
    except (peewee.IntegrityError, peewee.DataError) as exc:
        raise RejectedData(str(exc).strip()) from exc
    except ValueError as exc:  # e.g. psycopg2: "A string literal cannot contain NUL (0x00) characters."
        raise RejectedData(str(exc).strip()) from exc
    except (peewee.PeeweeException, peewee.DatabaseError, OSError) as exc:
        _discard_connection()
        opened = False
        raise DatabaseUnavailable(f"{type(exc).__name__}: {str(exc).strip()}") from exc
    finally:
        if opened and not db.is_closed():
            db.close()


def _discard_connection() -> None:
    """Drop this thread's (possibly broken) connection rather than returning it to the pool."""
    try:
        target = db.obj
        if hasattr(target, "manual_close"):
            target.manual_close()
        else:
            target.close()
    except Exception:  # the connection is already unusable; nothing more to do
        pass
