"""PostgreSQL for tests: a unique schema on the shared server, or a private throwaway server to stop and start."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg2
from peewee import Database

from tests.support.procs import free_port, retry_on_port_clash

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DEFAULT_TEST_URL = "postgresql://predmesh:predmesh@127.0.0.1:5432/predmesh_test"


def test_pg_url() -> str:
    return os.environ.get("PREDMESH_TEST_PG_URL", DEFAULT_TEST_URL)


def with_schema(url: str, schema: str) -> str:
    """The URL with search_path set to schema (passed through to libpq `options`)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-c search_path={schema}')}"


class TempSchema:
    """A uniquely named schema on the shared test database, dropped on exit; .url selects it."""

    def __init__(self, base_url: str | None = None):
        self.base_url = base_url or test_pg_url()
        self.name = f"t_{uuid.uuid4().hex[:12]}"
        self.url = with_schema(self.base_url, self.name)

    def __enter__(self) -> TempSchema:
        with psycopg2.connect(self.base_url, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {self.name}")
        return self

    def __exit__(self, *exc) -> None:
        conn = psycopg2.connect(self.base_url, connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
        finally:
            conn.close()


@contextmanager
def schema_database(base_url: str | None = None) -> Iterator[tuple[TempSchema, Database]]:
    """A TempSchema and a database opened on it (database.connect.open_database: the models bound to it), closed and
    dropped on exit; migrating is the caller's (to the current schema or to an earlier release's)."""
    from database.connect import open_database
    with TempSchema(base_url) as schema:
        database = open_database(schema.url)
        try:
            yield schema, database
        finally:
            database.close()


def _as_postgres(*args: str) -> subprocess.CompletedProcess:
    cmd = list(args)
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)


class PrivatePostgres:
    """initdb into a temp dir and run it on a free port (socket in the same dir); stop()/start() at will."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="predmesh-pg-"))
        self.data = self.dir / "data"
        self._pick_port()

    def _pick_port(self) -> None:
        """PostgreSQL cannot bind port 0: a port from free_port() (the first start retries on a clash)."""
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/predmesh"

    def _first_start(self) -> None:
        try:
            self.start()
        except subprocess.CalledProcessError as exc:  # the reason (e.g. the port taken meanwhile) is in pg.log
            log = self.dir / "pg.log"
            raise RuntimeError(f"{exc}\n{log.read_text(errors='replace') if log.exists() else ''}") from None

    def __enter__(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                     "--no-sync", "-E", "UTF8")
        retry_on_port_clash(self._first_start, self._pick_port)
        conn = psycopg2.connect(self.url.replace("/predmesh", "/postgres"), connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE predmesh")
        finally:
            conn.close()
        return self

    def start(self) -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"), "-w",
                     "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def query(self, sql: str, params=()) -> list[tuple]:
        conn = psycopg2.connect(self.url, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()

    def __exit__(self, *exc) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def statements(database, naming: str = '"predictions"') -> Iterator[list[tuple[str, tuple]]]:
    """The statements (sql, params) the block sends through database.execute_sql whose SQL names `naming`."""
    sent: list[tuple[str, tuple]] = []
    run = database.execute_sql

    def recording(sql, params=None, *args, **kwargs):
        if naming in sql:
            sent.append((sql, params))
        return run(sql, params, *args, **kwargs)

    database.execute_sql = recording
    try:
        yield sent
    finally:
        del database.execute_sql  # the class's method again
