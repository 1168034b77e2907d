"""A server for a whole test module, for the modules whose tests only read from it or tell their rows apart."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import ServerProc


@pytest.fixture(scope="module")
def server(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One `python -m inference serve` process for the module, on its own copy of the trained store."""
    root = tmp_path_factory.mktemp("module-server")
    shutil.copytree(trained_store, root / "models")
    with ServerProc(root / "models", root / "server.log") as proc:
        yield proc
