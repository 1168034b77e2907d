"""The model registry: which version of each model serves, and verified atomic swaps between versions."""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

import numpy as np

from inference.bounds import check_name, shown
from inference.errors import InvalidArgument, InvalidFeatures, ModelNotFound, ModelNotReady, PredmeshError, ReloadFailed
from inference.metrics import ServerMetrics
from inference.models import kernels
from inference.models.canary import Canaries
from inference.models.drift import DriftTracker
from inference.models.loader import load_estimator, read_manifest, version_dir
from inference.models.runtime import LoadedModel
from inference.models.store import ModelStore

log = logging.getLogger(__name__)
SMOKE_TOLERANCE = 1e-6


class ModelRegistry:
    """Holds one serving LoadedModel per name; reload = load → verify → smoke test → warm up → swap."""

    def __init__(self, store: ModelStore, metrics: ServerMetrics, *, max_batch_rows: int = 64,
                 max_delay_s: float = 0.0, range_tolerance: float = 10.0, runtime: str = "sklearn",
                 drift_window_s: float | None = None):
        self.store = store
        # Seconds of traffic each version's drift is computed over (inference/models/drift.py); None: no drift tracking.
        self.drift_window_s = drift_window_s
        self.metrics = metrics
        self.runtime = runtime  # "native": score with a verified kernel when one exists (inference/models/kernels.py)
        # Builds a LoadedModel with this server's batching and range options (each keyword checked by mypy).
        self._new_model = functools.partial(LoadedModel, max_batch_rows=max_batch_rows, max_delay_s=max_delay_s,
                                            range_tolerance=range_tolerance, on_batch=metrics.batch_rows.observe)
        self._serving: dict[str, LoadedModel] = {}
        self._known: set[str] = set()
        self._reload_lock = threading.Lock()
        self._converge_lock = threading.Lock()  # converge(): check and reload as one step
        # Called with the manifest after every successful swap (e.g. persistence records the activation);
        # a failing hook is logged and never undoes the swap.
        self.on_activate = None
        # The fleet's desired state (inference/process/fleet.py FleetState) when the server has a database: read
        # before the start-up load, polled after; None: each model serves its newest stored version.
        self.fleet: Any = None
        # Canary candidates held beside the serving versions and the share of calls routed to them
        # (inference/models/canary.py; set by the fleet's desired state).
        self.canaries = Canaries(self)

    def get(self, name: str) -> LoadedModel:
        """The serving version of a model; NOT_FOUND if no such model, UNAVAILABLE if none is loaded."""
        model = self._serving.get(name)
        if model is None:
            if name in self._known:
                raise ModelNotReady(f"model {name!r} has no loaded version yet")
            check_name("model", name)  # empty, oversized, "../x": INVALID_ARGUMENT rather than NOT_FOUND
            raise ModelNotFound(f"model {shown(name)} not found")
        return model

    def route(self, name: str, key: str = "") -> LoadedModel:
        """The version a call scores on: a canary candidate for its share of the calls (by the call's request_id
        when it has one), else the serving version (get())."""
        return self.canaries.route(self.get(name), key)

    def load_candidate(self, name: str, version: str) -> LoadedModel:
        """A canary candidate loaded and verified like a reload (same schema and classes as the serving version,
        smoke-tested), but not swapped in; ReloadFailed / NotFound when it cannot serve."""
        with self._reload_lock:
            try:
                check_name("model", name)
                return self._candidate(name, version)
            except (ModelNotFound, InvalidArgument, ReloadFailed):
                raise
            except Exception as exc:
                raise ReloadFailed(f"loading candidate {shown(version)} failed: {type(exc).__name__}: {exc}") from None

    def serving(self) -> list[LoadedModel]:
        return [self._serving[n] for n in sorted(self._serving)]

    def load_all(self, preferred: dict[str, str] | None = None) -> None:
        """Load the preferred version of each model (the fleet's desired state), else the newest loadable one.

        A version that fails verification is logged and skipped in favour of the next older one; a model with
        no loadable version stays known but unloaded (UNAVAILABLE).
        """
        preferred = preferred or {}
        for name in self.store.models():
            self._known.add(name)
            stored = self.store.versions(name)
            want = preferred.get(name)
            if want and want not in stored:
                log.error("model %s: the desired version %s is not in the model store %s; serving the newest "
                          "loadable version instead", name, shown(want), self.store.root)
            first = [want] if want in stored else []
            for version in first + [v for v in stored if v != want]:
                try:
                    self.reload(name, version, counted=False)  # a start-up load is not a reload
                    break
                except (PredmeshError, OSError) as exc:
                    log.error("model %s: version %s cannot serve, trying an older one: %s", name, version, exc)
            else:
                log.error("model %s: no loadable version; it answers UNAVAILABLE until a reload succeeds", name)

    def converge(self, name: str, version: str, *, counted: bool = True) -> bool:
        """Reload to version unless it already serves; True when it reloaded. The check and the reload are one
        step, so two followers (the serving pointers and the desired state) never both reload to one version."""
        with self._converge_lock:
            current = self._serving.get(name)
            if current is not None and current.version == version:
                return False
            self.reload(name, version, counted=counted)
            return True

    def reload(self, name: str, version: str = "", *, counted: bool = True) -> tuple[LoadedModel, str]:
        """Swap in a version (newest when empty); returns (new model, previous version or "").

        On any failure raises ReloadFailed and the serving version is untouched. counted=False (a process's
        start-up load) keeps it out of predmesh_reload_total.
        """
        started = time.monotonic()
        with self._reload_lock:
            try:
                check_name("model", name)
                version = version or self.store.newest(name)
                candidate = self._candidate(name, version)
            except (ModelNotFound, InvalidArgument):
                raise
            except ReloadFailed as exc:
                if counted:
                    self.metrics.reloads.labels(name, "failure").inc()
                log.warning("model %s: reload to %s refused: %s", name, shown(version), exc)
                raise
            except Exception as exc:  # anything unexpected while loading is still a refused reload
                if counted:
                    self.metrics.reloads.labels(name, "failure").inc()
                log.exception("model %s: reload to %s failed", name, shown(version))
                raise ReloadFailed(f"loading version {shown(version)} failed: {type(exc).__name__}: {exc}") from None
            previous = self._serving.get(name)
            self._serving[name] = candidate  # the swap: one reference; in-flight calls keep the old object
            self._known.add(name)
            prev_version = previous.version if previous else ""
            if counted:
                self.metrics.reloads.labels(name, "success").inc()
            self.metrics.serving(name, candidate.version, candidate.manifest.sha256)
        log.info("model %s: serving version %s (was %s) after %.0f ms", name, candidate.version,
                 prev_version or "none", (time.monotonic() - started) * 1000)
        if self.on_activate is not None:
            try:
                self.on_activate(candidate.manifest)
            except Exception:
                log.exception("model %s: on_activate hook failed", name)
        return candidate, prev_version

    def _candidate(self, name: str, version: str) -> LoadedModel:
        path = version_dir(self.store.root, name, version)
        manifest = read_manifest(path, self.store.signing_key)
        if manifest.name != name or manifest.version != version:
            raise ReloadFailed(f"manifest names {manifest.name}/{manifest.version}, stored as {name}/{version}")
        estimator = load_estimator(path, manifest)
        if not hasattr(estimator, "predict_proba"):
            raise ReloadFailed(f"{type(estimator).__name__} has no predict_proba")
        expected = getattr(estimator, "n_features_in_", None)
        if expected != len(manifest.features):
            raise ReloadFailed(f"the estimator expects {expected} features, the manifest lists "
                               f"{len(manifest.features)}")
        if len(getattr(estimator, "classes_", ())) != len(manifest.classes):
            raise ReloadFailed(f"the estimator has {len(getattr(estimator, 'classes_', ()))} classes, the manifest "
                               f"lists {len(manifest.classes)}")
        serving = self._serving.get(name)
        if serving and (serving.names != manifest.feature_names or serving.classes != manifest.classes):
            raise ReloadFailed("feature schema or classes differ from the serving version; "
                               "a new schema needs a new model name")
        # Native kernels serve array models whose every value is a finite number; a frame model, or one taking
        # missing values (NaN), runs on scikit-learn.
        native = (self.runtime == "native" and manifest.input == "array"
                  and not any(f.nullable for f in manifest.features))
        kernel = kernels.verified_kernel(estimator, manifest) if native else None
        candidate = self._new_model(manifest, estimator, kernel=kernel)
        self._smoke_test(candidate)
        if self.drift_window_s:
            candidate.track_drift(DriftTracker(manifest, self.drift_window_s))
        return candidate

    @staticmethod
    def _smoke_test(candidate: LoadedModel) -> None:
        """Golden rows must reproduce their recorded labels and probabilities; this also warms the model up."""
        golden = candidate.manifest.golden
        if not golden:
            raise ReloadFailed("the manifest has no golden rows to smoke-test with")
        try:
            # the golden rows as plain values, checked like a request's rows, on the path requests take
            rows = []
            for i, g in enumerate(golden):
                values = list(g["features"])
                if len(values) != len(candidate.names):
                    raise ReloadFailed(f"golden row {i} has {len(values)} values for {len(candidate.names)} "
                                       "features")
                try:
                    rows.append(candidate.check_row(values))
                except InvalidFeatures as exc:
                    raise ReloadFailed(f"golden row {i} is not a valid row for this model: {exc}") from None
            expected = np.asarray([g["probabilities"] for g in golden], dtype=np.float64)
            labels = [g["label"] for g in golden]
            got = candidate.score(rows, timeout=5.0)
        except ReloadFailed:
            raise
        except Exception as exc:
            raise ReloadFailed(f"smoke test could not run: {type(exc).__name__}: {exc}") from None
        got_labels = [candidate.label_of(p) for p in got]
        if got_labels != labels or got.shape != expected.shape or not np.allclose(got, expected,
                                                                                   atol=SMOKE_TOLERANCE):
            bad = next((i for i, (a, b) in enumerate(zip(got_labels, labels)) if a != b), 0)
            raise ReloadFailed(f"smoke test failed on golden row {bad}: expected {labels[bad]!r}, "
                               f"got {got_labels[bad]!r}")
