"""Live data drift per model version: the scored rows against the training distribution in the manifest.

Hot path: each scored batch hands (matrix, probabilities) to its version's tracker with one deque append (bounded:
when the summariser falls behind, the oldest batches are dropped, i.e. sampled). Off the hot path a monitor
thread, once per tick, bins every pending batch with numpy (one comparison per feature and decile edge), keeps
per-tick counts over a sliding window and exports per model version:

- `predmesh_feature_drift_psi{model,version,feature}`: population stability index of the window over the 10
  training decile bins (Σ (live − train) · ln(live / train), shares floored at 1e-4). Rules of thumb: < 0.1
  stable, 0.1–0.25 moderate, > 0.25 a shift.
- `predmesh_feature_out_of_range_ratio{model,version,feature}`: share of the window's values outside the training
  [min, max].
- `predmesh_class_drift{model,version}`: total variation distance between the predicted class shares and the
  training class balance (0: same, 1: disjoint).
- `predmesh_drift_window_rows{model,version}`: rows in the window (alert only above a minimum).

With several processes each computes over its own traffic (the kernel spreads connections evenly) and the
supervisor exports the highest value per series (multiprocess mode "livemax").
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np

from inference.models.manifest import Manifest

log = logging.getLogger(__name__)
MAX_PENDING_BATCHES = 8192
FLOOR = 1e-4  # empty bins: PSI stays finite


def psi(live: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Population stability index per row of two share matrices (rows sum to 1)."""
    a, e = np.maximum(live, FLOOR), np.maximum(expected, FLOOR)
    return ((a - e) * np.log(a / e)).sum(axis=-1)


class DriftTracker:
    """The scored rows of one model version, summarised over a sliding window of window_s seconds."""

    def __init__(self, manifest: Manifest, window_s: float = 600.0):
        self.model, self.version = manifest.name, manifest.version
        self.features = manifest.feature_names
        self.window_s = window_s
        self.pending: deque = deque(maxlen=MAX_PENDING_BATCHES)
        self.observe = self.pending.append  # the hot path: observe((matrix, probabilities))
        feats = manifest.features
        # Features with training deciles get PSI; every feature gets the out-of-range share.
        self._binned = [i for i, f in enumerate(feats) if len(f.quantiles) == 9]
        self._edges = np.array([feats[i].quantiles for i in self._binned], dtype=np.float64).reshape(-1, 9)
        self._expected = np.array([f.shares if len(f.shares) == 10 else (0.1,) * 10
                                   for f in (feats[i] for i in self._binned)], dtype=np.float64).reshape(-1, 10)
        self._lo = np.array([f.min for f in feats], dtype=np.float64)
        self._hi = np.array([f.max for f in feats], dtype=np.float64)
        shares = {p.label: p.share for p in manifest.class_profiles}
        self._class_expected = (np.array([shares.get(c, 0.0) for c in manifest.classes], dtype=np.float64)
                                if shares else None)
        self._n_classes = len(manifest.classes)
        self._ticks: deque = deque()  # (time, rows, bin counts, out-of-range counts, class counts)

    def _drain(self) -> tuple[np.ndarray, np.ndarray] | None:
        batches = []
        for _ in range(len(self.pending)):
            try:
                batches.append(self.pending.popleft())
            except IndexError:
                break
        if not batches:
            return None
        x = np.concatenate([np.asarray(m, dtype=np.float64).reshape(-1, len(self.features)) for m, _ in batches])
        p = np.concatenate([np.asarray(q).reshape(-1, self._n_classes) for _, q in batches])
        return x, p

    def tick(self, now: float | None = None) -> dict | None:
        """Fold the pending batches into the window; the window's summary, or None while it holds no rows."""
        now = time.monotonic() if now is None else now
        drained = self._drain()
        if drained is not None:
            x, p = drained
            cols = x[:, self._binned]
            bins = (cols[:, :, None] > self._edges[None, :, :]).sum(axis=2)  # = searchsorted(side="left")
            k = len(self._binned)
            counts = np.bincount((bins + 10 * np.arange(k)).ravel(), minlength=10 * k).reshape(k, 10)
            out = ((x < self._lo) | (x > self._hi)).sum(axis=0)
            classes = np.bincount(p.argmax(axis=1), minlength=self._n_classes)
            self._ticks.append((now, len(x), counts, out, classes))
        while self._ticks and self._ticks[0][0] < now - self.window_s:
            self._ticks.popleft()
        if not self._ticks:
            return None
        rows = sum(t[1] for t in self._ticks)
        counts = sum(t[2] for t in self._ticks)
        out = sum(t[3] for t in self._ticks)
        classes = sum(t[4] for t in self._ticks)
        summary = {
            "rows": rows,
            "psi": dict(zip((self.features[i] for i in self._binned), psi(counts / rows, self._expected).tolist())),
            "out_of_range": dict(zip(self.features, (out / rows).tolist())),
            "class_drift": (float(0.5 * np.abs(classes / rows - self._class_expected).sum())
                            if self._class_expected is not None else None),
        }
        return summary


class DriftMonitor:
    """A daemon thread that ticks the serving versions' trackers and sets the drift gauges."""

    def __init__(self, registry, metrics, tick_s: float = 1.0):
        self.registry = registry
        self.metrics = metrics
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drift", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception:  # never let the monitor die: the next tick may succeed
                log.exception("drift summary failed")

    def tick(self) -> None:
        summaries = {}
        for model in self.registry.serving():
            tracker = model.drift
            if tracker is not None:
                summaries[(model.name, model.version)] = tracker.tick()
        self.metrics.drift(summaries)
