"""The batch tests' server: a ServerProc storing into a private PostgreSQL schema."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pg import TempSchema
from tests.support.procs import ServerProc


@pytest.fixture
def pg() -> Iterator[TempSchema]:
    with TempSchema() as schema:
        yield schema


@pytest.fixture
def server(model_store: Path, tmp_path: Path, pg: TempSchema) -> Iterator[ServerProc]:
    with ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DATABASE_URL": pg.url}) as proc:
        yield proc
