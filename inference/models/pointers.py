"""Serving pointers: how a reload done by one server process reaches every process of a multi-process group.

The admin reload swaps the version in the process that received it, then writes `<store>/<model>/.serving`
(the version, written atomically). Every process polls the pointers and reloads (verified, like any reload) when
a pointer names a version it is not serving; a process that starts later applies them before it serves.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading

from inference.bounds import check_name
from inference.errors import PredmeshError
from inference.models.loader import contained
from inference.models.registry import ModelRegistry

log = logging.getLogger(__name__)
POINTER = ".serving"


class ServingPointers:
    """Reads and writes the serving-version pointer of each model in the store."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry
        self.root = registry.store.root
        self._refused: dict[str, str] = {}  # model -> pointer version that failed here (warned once)

    def publish(self, model: str, version: str) -> None:
        """Point every process at version (atomic rename; readers never see a partial file)."""
        model_dir = contained(self.root, check_name("model", model))
        fd, tmp = tempfile.mkstemp(prefix=".serving-", dir=model_dir)
        with os.fdopen(fd, "w") as fh:
            fh.write(version)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, model_dir / POINTER)
        log.info("model %s: serving pointer set to version %s", model, version)

    def read(self, model: str) -> str | None:
        try:
            return (self.root / model / POINTER).read_text().strip() or None
        except OSError:
            return None

    def apply(self, counted: bool = True) -> None:
        """Reload every model whose pointer names a version other than the one this process serves (counted:
        in predmesh_reload_total; not while the process starts)."""
        for model in self.registry.store.models():
            version = self.read(model)
            if not version:
                continue
            try:
                serving = self.registry.get(model).version
            except PredmeshError:
                serving = ""
            if version == serving:
                continue
            try:
                self.registry.converge(model, version, counted=counted)
            except PredmeshError as exc:  # keep serving what we have; retry next poll, warn once per version
                if self._refused.get(model) != version:
                    log.warning("model %s: pointer names version %s but it cannot be loaded here: %s",
                                model, version, exc)
                self._refused[model] = version
            else:
                self._refused.pop(model, None)


class PointerWatcher:
    """A daemon thread applying the pointers every interval seconds until stopped."""

    def __init__(self, pointers: ServingPointers, interval: float):
        self.pointers = pointers
        self.interval = max(0.05, interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-pointers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.pointers.apply()
            except Exception:  # never let the watcher die: a later poll may succeed
                log.exception("applying serving pointers failed")
