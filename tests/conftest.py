"""Shared fixtures: a trained model store, and an in-process or subprocess inference server."""
from __future__ import annotations

import compileall
import os
import shutil
from pathlib import Path

import pytest

from tests.support.pg import TempSchema
from tests.support.procs import ADMIN_TOKEN, READONLY_TOKEN, WRITER_TOKEN, ServerProc

IRIS_ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


TESTS = Path(__file__).resolve().parent


# The longest test files (measured 2026-12-07, most seconds first). `scripts/test.sh` runs a file per worker
# (pytest-xdist --dist loadfile) in collection order: with these first, no worker is left running one long file
# alone at the end. The order changes the wall time only, never what runs.
LONGEST_FIRST = (
    "integration/rabbitmq/test_queue_faults.py",
    "integration/luigi/test_batch_ops.py",
    "integration/postgres/test_persistence_faults.py",
    "integration/luigi/test_batch_pipeline.py",
    "integration/server/test_workers.py",
    "integration/tooling/test_lint.py",
    "integration/server/test_persistence_server.py",
    "integration/envoy/test_gateway_fuzz.py",
    "integration/browser/test_ui_feed_browser.py",
    "integration/browser/test_ui_browser.py",
    "integration/server/test_idempotency.py",
    "integration/mesh/test_fleet_state.py",
    "integration/postgres/test_spool_identity.py",
    "integration/mesh/test_up.py",
)


# The project's packages, compiled to bytecode once per run (pytest_configure).
PACKAGES = ("predmesh", "inference", "database", "gateway", "cli", "consumer", "batch", "ui", "tests")


def pytest_configure(config):
    """Write the project's .pyc files before any test starts a process. With PYTHONDONTWRITEBYTECODE=1 (as on these
    machines and in CI) Python never writes them itself, so each of the suite's hundreds of server processes
    compiled ~100 of the project's modules from source again (~0.09 CPU s a start). Up-to-date files are only
    checked (a few ms); Python recompiles any file changed since in memory, as before. Once per run: not in the
    xdist workers."""
    if not hasattr(config, "workerinput"):
        for package in PACKAGES:
            compileall.compile_dir(TESTS.parent / package, quiet=1)


def pytest_collection_modifyitems(config, items):
    """Markers follow the layout: tests/unit/<package>/ are `unit`; tests/integration/<component>/ are
    `integration` and `<component>` (postgres, rabbitmq, envoy, browser, …), so `-m` selects by what a test starts.
    The longest files go first (LONGEST_FIRST), the rest keep their order."""
    soak = os.environ.get("PREDMESH_TEST_SOAK") == "1"
    for item in items:
        if item.get_closest_marker("soak") and not soak:
            item.add_marker(pytest.mark.skip(reason="on demand: PREDMESH_TEST_SOAK=1 (a longer fault drill; its "
                                                    "shorter sibling runs by default)"))
    rank = {TESTS / name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.resolve(), len(rank)))  # stable: order within a file kept
    for item in items:
        try:
            parts = item.path.resolve().relative_to(TESTS).parts
        except ValueError:
            continue
        if parts[0] == "unit":
            item.add_marker(pytest.mark.unit)
        elif parts[0] == "integration":
            item.add_marker(pytest.mark.integration)
            if len(parts) > 2:
                item.add_marker(getattr(pytest.mark, parts[1]))


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory) -> Path:
    """A model store with iris version 1 = RandomForest(100) and version 2 = LogisticRegression (newest)."""
    from inference.models.store import ModelStore
    from inference.models.train import train

    root = tmp_path_factory.mktemp("store")
    store = ModelStore(root)
    train(store, "iris", "rf")
    train(store, "iris", "lr")
    return root


@pytest.fixture
def model_store(trained_store, tmp_path) -> Path:
    """A private copy of the trained store, free to modify."""
    root = tmp_path / "models"
    shutil.copytree(trained_store, root)
    return root


@pytest.fixture
def server_proc(model_store, tmp_path):
    """A running `python -m inference serve` subprocess on free ports."""
    with ServerProc(model_store, tmp_path / "server.log") as proc:
        yield proc


@pytest.fixture
def inproc_server(model_store):
    """An in-process InferenceServer on a free port (unit tests); yields (server, target)."""
    from prometheus_client import CollectorRegistry

    from inference.metrics import ServerMetrics
    from inference.rpc.server import InferenceServer
    from inference.settings import ServerSettings

    settings = ServerSettings(grpc_addr="127.0.0.1:0", metrics_addr="", model_store=model_store,
                              admin_token=ADMIN_TOKEN, readonly_token=READONLY_TOKEN, writer_token=WRITER_TOKEN,
                              drain_seconds=0,
                              grace_seconds=1, max_batch_rows=10, max_message_bytes=64 * 1024)
    server = InferenceServer(settings, metrics=ServerMetrics(CollectorRegistry()))
    port = server.start()
    yield server, f"127.0.0.1:{port}"
    server.stop(grace=0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request, tmp_path):
    """The URL of an empty database: a fresh SQLite file, or a fresh schema on the test PostgreSQL (parity)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        with TempSchema() as schema:
            yield schema.url
