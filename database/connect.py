"""Open the database named by a URL (postgresql://… or sqlite:///…) and bind the models' proxy to it."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlparse

import peewee
from peewee import Database, SqliteDatabase
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

from database.bounded import GuardedStatements
from database.models import db
from database.settings import DEFAULT_URL, DatabaseConfigError, check_url, redact
from predmesh.startup import make_directory

log = logging.getLogger(__name__)
__all__ = ["DEFAULT_URL", "DatabaseConfigError", "make_database", "open_database", "redact"]


class _Postgres(GuardedStatements, PooledPostgresqlDatabase):
    """The connection pool, with bounded blocks' statements guarded (database.bounded)."""


class _Sqlite(GuardedStatements, SqliteDatabase):
    """SQLite, with bounded blocks' statements guarded (database.bounded)."""


def make_database(url: str, *, max_connections: int = 8, connect_timeout: float = 3.0,
                  statement_timeout_ms: int = 10_000) -> Database:
    """A peewee Database for the URL (not yet connected).

    postgresql://user:pass@host:port/name[?options=-c%20search_path%3Dschema] → a small connection pool with
    bounded connect and statement timeouts (a slow or dead server must not hang the caller);
    sqlite:///relative/path or sqlite:////absolute/path → WAL mode, synchronous=NORMAL, busy timeout.
    """
    parsed = urlparse(check_url(url))
    params = dict(parse_qsl(parsed.query))
    if parsed.scheme in ("postgres", "postgresql"):
        name = parsed.path.lstrip("/")
        # jit off: the JIT compiles for ~0.4 s once a plan's cost is high, as plans over many partitions are (m0008)
        options = " ".join(filter(None, [f"-c statement_timeout={statement_timeout_ms} -c jit=off",
                                         params.pop("options", "")]))
        return _Postgres(
            name, user=unquote(parsed.username or "") or None, password=unquote(parsed.password or "") or None,
            host=parsed.hostname or None, port=parsed.port or None, connect_timeout=int(max(1, connect_timeout)),
            options=options, max_connections=max_connections, stale_timeout=300, timeout=connect_timeout,
            **params)
    path = url[len("sqlite:///"):]  # check_url let only sqlite:///… through otherwise
    if path != ":memory:":
        make_directory(Path(path).parent, f"database URL {url}")
    return _Sqlite(path, timeout=connect_timeout, pragmas={
        "journal_mode": "wal", "synchronous": "normal", "foreign_keys": 1, "busy_timeout": 5000})


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


def write_transaction():
    """A transaction that may read before it writes. SQLite takes the write lock at BEGIN (IMMEDIATE), waiting for
    another writer within the busy timeout: begun deferred, a read pins a snapshot, and when another connection (a
    sibling server process) commits first the write fails at once with "database is locked". PostgreSQL: a plain
    transaction."""
    return db.atomic() if is_postgres() else db.atomic("IMMEDIATE")


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or refused the operation for a reason that may pass (retry later)."""


class RejectedData(ValueError):
    """The database rejected the data itself (constraint, type, size): retrying the same rows cannot succeed."""


# SQLSTATE classes that mean "this data can never be stored": cardinality violation, data exception (e.g. NUL in
# text, \u0000 in jsonb, a value out of range), integrity constraint violation, program limit exceeded (e.g. an
# index row larger than a btree page). Anything else from the server may pass (outage, timeout, missing schema).
REJECTED_SQLSTATE_CLASSES = frozenset({"21", "22", "23", "54"})
_DRIVER_MODULES = ("psycopg2", "sqlite3")


def advisory_lock(database: Database, function: str, key: int) -> bool | None:
    """Call PostgreSQL's advisory-lock `function` (pg_try_advisory_lock, pg_advisory_unlock, pg_advisory_xact_lock,
    ...) on `key` within the current schema: the two-key form (key, hashtext(current_schema())), so predmesh
    installations in different schemas of one database (one per team, or the tests') never wait for each other's
    migrations or maintenance (no schema on the search_path: the key of the empty name, and the statement that
    needs a schema reports it). Returns the function's boolean (None for the void ones)."""
    sql = f"SELECT {function}(%s, hashtext(coalesce(current_schema(), '')))"
    return database.execute_sql(sql, (key,)).fetchone()[0]


def rejects_data(exc: BaseException) -> bool:
    """True when exc says the database refused the data itself (retrying the same rows cannot succeed), whether
    it arrives wrapped by peewee or raw from the driver (cursor-level COPY and execute_values are not wrapped)."""
    for err in (exc, getattr(exc, "orig", None)):
        code = getattr(err, "pgcode", None)
        if code:
            return code[:2] in REJECTED_SQLSTATE_CLASSES
    if isinstance(exc, (peewee.IntegrityError, peewee.DataError)):
        return True
    if type(exc).__module__.partition(".")[0] in _DRIVER_MODULES:
        return type(exc).__name__ in ("IntegrityError", "DataError")
    # e.g. psycopg2: "A string literal cannot contain NUL (0x00) characters."; json: NaN is not JSON
    return isinstance(exc, ValueError) and not isinstance(exc, MaxConnectionsExceeded)


def _is_database_error(exc: BaseException) -> bool:
    return (isinstance(exc, (peewee.PeeweeException, peewee.DatabaseError, OSError))
            or type(exc).__module__.partition(".")[0] in _DRIVER_MODULES)


@contextmanager
def session():
    """A connection for the block (returned to the pool after); database errors become the two errors above:
    RejectedData when the data itself is refused, DatabaseUnavailable for anything that may pass."""
    opened = False
    try:
        if db.is_closed():
            db.connect()
            opened = True
        yield
    except (DatabaseUnavailable, RejectedData):
        raise
    except MaxConnectionsExceeded as exc:  # a ValueError, but it means "busy", not "bad data"
        raise DatabaseUnavailable(f"connection pool exhausted: {exc}") from exc
    except Exception as exc:
        if rejects_data(exc):
            raise RejectedData(str(exc).strip()) from exc
        if not _is_database_error(exc):
            raise
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


def database_identity(database: Database | None = None) -> dict:
    """What makes this database this one and not another with the same data layout (run inside session()):
    PostgreSQL: the cluster's system_identifier (when the role may read it), the database's name and oid and the
    current schema; SQLite: the file's real path and inode."""
    target = database or db.obj
    if is_postgres(target):
        cursor = target.execute_sql("SELECT current_database(), current_schema(), "
                                    "(SELECT oid FROM pg_database WHERE datname = current_database())")
        name, schema, oid = cursor.fetchone()
        try:
            with target.atomic():  # a savepoint: a refused function call leaves the session usable
                system = str(target.execute_sql("SELECT system_identifier FROM pg_control_system()").fetchone()[0])
        except peewee.PeeweeException:
            system = ""
        return {"kind": "postgresql", "system_identifier": system, "database": name, "database_oid": int(oid),
                "schema": schema or ""}
    path = Path(target.database)
    real = path.resolve()
    return {"kind": "sqlite", "path": str(real), "inode": real.stat().st_ino if real.exists() else 0}


def describe_identity(identity: dict) -> str:
    """A database identity for people: which database it is, in one phrase."""
    if identity.get("kind") == "postgresql":
        system = identity.get("system_identifier") or "?"
        return (f"PostgreSQL database {identity.get('database')!r} (oid {identity.get('database_oid')}, schema "
                f"{identity.get('schema')!r}, cluster {system})")
    if identity.get("kind") == "sqlite":
        return f"SQLite file {identity.get('path')} (inode {identity.get('inode')})"
    return repr(identity)
