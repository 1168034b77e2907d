"""Helpers for the tests of `predmesh train --data` / `predmesh import`: the command as a process, a stored
version loaded as the server loads it, and the same artifact loaded straight with skops."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import skops.io as sio

ROOT = Path(__file__).resolve().parents[2]


def run(*args: object, store: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`predmesh ARGS…` (python -m cli) with PREDMESH_MODEL_STORE=store (and env on top of this process's)."""
    env = {**os.environ, **(env or {}), "PREDMESH_MODEL_STORE": str(store)}
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def served(store: Path, model: str):
    """The newest version of `model` loaded as the server loads it (ModelRegistry: trust checks, smoke test)."""
    from prometheus_client import CollectorRegistry

    from inference.metrics import ServerMetrics
    from inference.models.registry import ModelRegistry
    from inference.models.store import ModelStore

    loaded, _ = ModelRegistry(ModelStore(store), ServerMetrics(CollectorRegistry())).reload(model)
    return loaded


def own_pipeline(store: Path, model: str, version: str):
    """The stored artifact loaded in process straight with skops (not through the server's loader)."""
    path = store / model / version / "model.skops"
    return sio.load(path, trusted=sio.get_untrusted_types(file=path))
