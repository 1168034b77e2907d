"""Live data drift per model version: the scored rows against the training distribution in the manifest.

Hot path: each scored batch hands (matrix, probabilities) to its version's tracker with one deque append (bounded:
when the summariser falls behind, the oldest batches are dropped, i.e. sampled). The matrix is a float64 ndarray
(array models) or an object ndarray of plain values (frame models: float, str, bool, None = missing), schema
order. Off the hot path a monitor thread, once per tick, bins every pending batch with numpy / pandas, keeps
per-tick counts over a sliding window and exports per model version:

- `predmesh_feature_drift_psi{model,version,feature}`: population stability index of the window against the
  training distribution (Σ (live − train) · ln(live / train), shares floored at 1e-4), over one set of bins per
  feature: a number's 10 training decile bins, a category's (or boolean's) training categories plus an "unseen"
  bin, and for every feature a "missing" bin (training share: Feature.missing_share). One statistic for every
  kind, so one alert covers a shifted range, a shifted category share, unseen categories and a change in the
  share of missing values. Rules of thumb: < 0.1 stable, 0.1–0.25 moderate, > 0.25 a shift.
- `predmesh_feature_out_of_range_ratio{model,version,feature}` (number features): share of the window's values
  outside the training [min, max].
- `predmesh_feature_missing_ratio{model,version,feature}` (features that may be missing: nullable, or missing in
  training): share of the window's rows in which the feature was missing.
- `predmesh_feature_category_share{model,version,feature,category,source}` (category and boolean features):
  share of the rows with a value that had each training category, `source="live"` (the window) and
  `source="training"`; the 10 most common training categories by name, the rest as "(other)", and "(unseen)".
  Category names come from the manifest only (bounded); a value never seen in training is never a label.
- `predmesh_feature_unseen_categories_total{model,feature}`: scored values of a category feature that training
  never saw (counted as the summariser folds batches in; batches dropped when it falls behind are not counted).
- `predmesh_class_drift{model,version}`: total variation distance between the predicted class shares and the
  training class balance (0: same, 1: disjoint).
- `predmesh_drift_window_rows{model,version}`: rows in the window (with several processes their sum), and
  `predmesh_drift_window_rows_min{model,version}`: the smallest process window (the alerts need it above a minimum).

With several processes each computes over its own traffic (the kernel spreads connections evenly) and the
supervisor exports the highest value per series (multiprocess mode "livemax").
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from inference.models.frame import rows_matrix
from inference.models.manifest import Feature, Manifest

log = logging.getLogger(__name__)
MAX_PENDING_BATCHES = 8192
FLOOR = 1e-4  # empty bins: PSI stays finite
NAMED_CATEGORIES = 10  # category share series per feature: the most common training categories, then "(other)"
OTHER, UNSEEN = "(other)", "(unseen)"


def psi(live: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Population stability index per row of two share matrices (rows sum to 1)."""
    a, e = np.maximum(live, FLOOR), np.maximum(expected, FLOOR)
    return ((a - e) * np.log(a / e)).sum(axis=-1)


@dataclass(frozen=True)
class _Categorical:
    """A category or boolean feature: its column, training categories (the index the live values are looked up in)
    and expected bin shares (categories, unseen, missing)."""

    column: int
    name: str
    kind: str
    names: tuple[str, ...]
    lookup: pd.Index
    shares: np.ndarray     # of the rows with a value, one per category (sum 1)
    expected: np.ndarray   # PSI bins: categories × (1 − missing), unseen 0, missing

    @classmethod
    def of(cls, column: int, f: Feature) -> _Categorical:
        names = f.category_names
        keys: list[object] = ([v == "true" for v in names] if f.kind == "boolean" else list(names))
        shares = np.array([s for _, s in f.categories], dtype=np.float64)
        shares = shares / shares.sum() if shares.sum() > 0 else np.full(len(names), 1.0 / max(1, len(names)))
        m = min(max(f.missing_share, 0.0), 1.0)
        expected = np.concatenate([shares * (1.0 - m), [0.0, m]])
        return cls(column, f.name, f.kind, names, pd.Index(keys, dtype=object), shares, expected)

    def count(self, x: np.ndarray) -> np.ndarray:
        """Counts per bin (categories…, unseen, missing) of one column of plain values."""
        column = x[:, self.column]
        missing = pd.isna(column)
        codes = self.lookup.get_indexer(pd.Index(column, dtype=object))
        k = len(self.names)
        codes[(codes < 0) & ~missing] = k
        codes[missing] = k + 1
        return np.bincount(codes, minlength=k + 2)


class DriftTracker:
    """The scored rows of one model version, summarised over a sliding window of window_s seconds."""

    def __init__(self, manifest: Manifest, window_s: float = 600.0):
        self.model, self.version = manifest.name, manifest.version
        self.features = manifest.feature_names
        self.window_s = window_s
        self.pending: deque = deque(maxlen=MAX_PENDING_BATCHES)
        self.observe = self.pending.append  # the hot path: observe((matrix, probabilities))
        feats = manifest.features
        self._typed = manifest.input == "frame" or any(f.kind != "number" for f in feats)
        # Number features get the out-of-range share; those with training deciles also get PSI.
        self._numbers = [i for i, f in enumerate(feats) if f.kind == "number"]
        self._binned = [i for i in self._numbers if len(feats[i].quantiles) == 9]
        self._binned_at = [self._numbers.index(i) for i in self._binned]  # their positions among the numbers
        self._edges = np.array([feats[i].quantiles for i in self._binned], dtype=np.float64).reshape(-1, 9)
        deciles = np.array([feats[i].shares if len(feats[i].shares) == 10 else (0.1,) * 10 for i in self._binned],
                           dtype=np.float64).reshape(-1, 10)
        missing = np.array([min(max(feats[i].missing_share, 0.0), 1.0) for i in self._binned], dtype=np.float64)
        # bins 0..9: the deciles of the rows with a value; bin 10: missing
        self._expected = np.concatenate([deciles * (1.0 - missing)[:, None], missing[:, None]], axis=1)
        self._lo = np.array([feats[i].min for i in self._numbers], dtype=np.float64)
        self._hi = np.array([feats[i].max for i in self._numbers], dtype=np.float64)
        self._categorical = [_Categorical.of(i, f) for i, f in enumerate(feats)
                             if f.kind != "number" and f.categories]
        # The missing share is exported for the features that can be missing.
        self._nullable = [i for i, f in enumerate(feats) if f.nullable or f.missing_share > 0]
        shares = {p.label: p.share for p in manifest.class_profiles}
        self._class_expected = (np.array([shares.get(c, 0.0) for c in manifest.classes], dtype=np.float64)
                                if shares else None)
        self._n_classes = len(manifest.classes)
        # (time, rows, decile bin counts, out-of-range counts, class counts, category bin counts, missing counts)
        self._ticks: deque = deque()

    def _drain(self) -> tuple[np.ndarray, np.ndarray] | None:
        batches = []
        for _ in range(len(self.pending)):
            try:
                batches.append(self.pending.popleft())
            except IndexError:
                break
        if not batches:
            return None
        n = len(self.features)
        if self._typed:
            x = np.concatenate([rows_matrix(m, n) if not isinstance(m, np.ndarray) or m.dtype == object
                                else np.asarray(m, dtype=np.float64).reshape(-1, n).astype(object)
                                for m, _ in batches])
        else:
            x = np.concatenate([np.asarray(m, dtype=np.float64).reshape(-1, n) for m, _ in batches])
        p = np.concatenate([np.asarray(q).reshape(-1, self._n_classes) for _, q in batches])
        return x, p

    def _count(self, x: np.ndarray, p: np.ndarray) -> tuple:
        numbers = x[:, self._numbers].astype(np.float64)  # an object column: None → NaN
        absent = np.isnan(numbers)
        cols = numbers[:, self._binned_at]
        bins = (cols[:, :, None] > self._edges[None, :, :]).sum(axis=2)  # = searchsorted(side="left")
        bins[np.isnan(cols)] = 10  # the missing bin
        k = len(self._binned)
        counts = np.bincount((bins + 11 * np.arange(k)).ravel(), minlength=11 * k).reshape(k, 11)
        out = ((numbers < self._lo) | (numbers > self._hi)).sum(axis=0)
        classes = np.bincount(p.argmax(axis=1), minlength=self._n_classes)
        categorical = [c.count(x) for c in self._categorical]
        missing = np.zeros(len(self.features), dtype=np.int64)
        missing[self._numbers] = absent.sum(axis=0)
        for c, n in zip(self._categorical, categorical):
            missing[c.column] = n[-1]
        if self._typed:  # category / boolean features without a training profile
            profiled = {c.column for c in self._categorical}
            for i in self._nullable:
                if i not in self._numbers and i not in profiled:
                    missing[i] = int(pd.isna(x[:, i]).sum())
        return counts, out, classes, categorical, missing

    def tick(self, now: float | None = None) -> dict | None:
        """Fold the pending batches into the window; the window's summary, or None while it holds no rows.
        The summary's "unseen" holds the unseen category values of the batches folded in by this tick."""
        now = time.monotonic() if now is None else now
        drained = self._drain()
        unseen: dict[str, int] = {}
        if drained is not None:
            x, p = drained
            counts, out, classes, categorical, missing = self._count(x, p)
            self._ticks.append((now, len(x), counts, out, classes, categorical, missing))
            unseen = {c.name: int(n[-2]) for c, n in zip(self._categorical, categorical)
                      if c.kind == "category" and n[-2]}
        while self._ticks and self._ticks[0][0] < now - self.window_s:
            self._ticks.popleft()
        if not self._ticks:
            return None
        rows = sum(t[1] for t in self._ticks)
        counts = sum(t[2] for t in self._ticks)
        out = sum(t[3] for t in self._ticks)
        classes = sum(t[4] for t in self._ticks)
        categorical = [sum(t[5][j] for t in self._ticks) for j in range(len(self._categorical))]
        missing = sum(t[6] for t in self._ticks)
        drift = dict(zip((self.features[i] for i in self._binned), psi(counts / rows, self._expected).tolist()))
        shares: dict[str, dict[str, tuple[float, float]]] = {}
        for c, n in zip(self._categorical, categorical):
            drift[c.name] = float(psi(n / rows, c.expected))
            shares[c.name] = _category_shares(c, n)
        return {
            "rows": rows,
            "psi": {name: drift[name] for name in self.features if name in drift},  # schema order
            "out_of_range": dict(zip((self.features[i] for i in self._numbers), (out / rows).tolist())),
            "missing": {self.features[i]: float(missing[i] / rows) for i in self._nullable},
            "categories": shares,
            "unseen": unseen,
            "class_drift": (float(0.5 * np.abs(classes / rows - self._class_expected).sum())
                            if self._class_expected is not None else None),
        }


def _category_shares(c: _Categorical, counts: np.ndarray) -> dict[str, tuple[float, float]]:
    """{category: (live share, training share)} among the rows with a value: the most common training
    categories by name, the others together as "(other)", and "(unseen)" for a category feature."""
    k = len(c.names)
    present = counts[:k + 1].sum()
    live = counts[:k + 1] / present if present else np.zeros(k + 1)
    out = {name: (float(live[j]), float(c.shares[j])) for j, name in enumerate(c.names[:NAMED_CATEGORIES])}
    if k > NAMED_CATEGORIES:
        out[OTHER] = (float(live[NAMED_CATEGORIES:k].sum()), float(c.shares[NAMED_CATEGORIES:].sum()))
    if c.kind == "category":
        out[UNSEEN] = (float(live[k]), 0.0)
    return out


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
