"""The fleet's desired versions as this replica last read them, applied through the registry's verified reload.

A model with a desired version is reloaded to it when this replica serves another one; one that cannot be loaded
here (missing from this replica's store, or refused by verification) keeps serving what it serves, is logged once
per version and counted in predmesh_desired_state_failures_total on every attempt (each poll retries it). A model
without a desired version keeps the present behaviour: the newest version in the store.
"""
from __future__ import annotations

import logging
import threading

from database.desired import Desired
from inference.errors import PredmeshError
from inference.models.registry import ModelRegistry

log = logging.getLogger(__name__)


class DesiredVersions:
    """model -> Desired, last read; apply() converges the registry on it."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry
        self._desired: dict[str, Desired] = {}
        self._refused: dict[str, str] = {}  # model -> desired version that failed here (logged once)
        self._lock = threading.Lock()  # one apply at a time (the poller and an admin call)

    def get(self, model: str) -> Desired | None:
        return self._desired.get(model)

    def versions(self) -> dict[str, str]:
        return {model: d.version for model, d in self._desired.items()}

    def apply(self, desired: dict[str, Desired], counted: bool = True) -> None:
        """Remember desired (every model's) and reload each model whose serving version differs from it."""
        with self._lock:
            self._desired = dict(desired)
            for model, wanted in sorted(desired.items()):
                self.registry.metrics.desired(model, wanted.version)
                self._converge(model, wanted.version, counted)

    def set(self, wanted: Desired) -> None:
        """One model's new desired state (after this replica recorded it); applied like a polled one."""
        with self._lock:
            self._desired[wanted.model] = wanted
            self.registry.metrics.desired(wanted.model, wanted.version)
            self._converge(wanted.model, wanted.version, True)

    def _converge(self, model: str, version: str, counted: bool) -> None:
        try:
            serving = self.registry.get(model).version
        except PredmeshError:
            serving = ""
        if serving == version:
            self._refused.pop(model, None)
            return
        try:
            if not self.registry.converge(model, version, counted=counted):
                return  # another follower (the serving pointers) got there first
        except PredmeshError as exc:
            self.registry.metrics.desired_failures.labels(model).inc()
            if self._refused.get(model) != version:
                log.error("model %s: the desired version %s cannot serve on this replica, still serving %s: %s",
                          model, version, serving or "nothing", exc)
            self._refused[model] = version
        else:
            self._refused.pop(model, None)
            log.info("model %s: applied the desired version %s (was %s)", model, version, serving or "none")
