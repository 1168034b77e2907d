"""Pure computations behind the dashboard's charts: windows, time buckets, rates, form defaults."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from predmesh.types import TRANSPORTS

__all__ = ["LATENCIES", "TRANSPORTS", "WINDOWS", "bucket_width", "class_counts", "default_value", "series_columns",
           "step", "window_start"]

# label shown in the window selector -> (window length, chart bucket width); "all" has no start
WINDOWS: dict[str, tuple[timedelta | None, timedelta]] = {
    "15 min": (timedelta(minutes=15), timedelta(minutes=1)),
    "1 h": (timedelta(hours=1), timedelta(minutes=5)),
    "6 h": (timedelta(hours=6), timedelta(minutes=30)),
    "24 h": (timedelta(hours=24), timedelta(hours=2)),
    "all": (None, timedelta(days=1)),
}
LATENCIES = ("p50", "p95", "p99")


def window_start(window: str, now: datetime) -> datetime | None:
    """Start of the filter window ending now; None for "all"."""
    length, _ = WINDOWS[window]
    return None if length is None else now - length


def bucket_width(window: str) -> timedelta:
    """The width of the window's chart buckets (GetStats bucket_seconds)."""
    return WINDOWS[window][1]


def series_columns(window: str, stats, now: datetime) -> dict[str, list]:
    """Chart columns from GetStats' series (every bucket of the window, empty ones too), oldest first.

    "t" (bucket middles), "rate" (predictions per minute, every transport), "rate:<transport>" per transport
    seen, "p50", "p95", "p99" (ms; NaN where a bucket has no prediction). A rate is over the part of its bucket
    inside the window: the first bucket may start before the window, the last one is still running. Nothing to
    draw (no prediction in the window): {}."""
    series = [b for b in getattr(stats, "series", ()) if b.start is not None]
    if not any(b.total for b in series):
        return {}
    width = bucket_width(window)
    since = getattr(stats, "window_start", None)
    until = getattr(stats, "window_end", None) or now
    seen = {t for b in series for t in b.by_transport}
    transports = [t for t in TRANSPORTS if t in seen] + sorted(seen - set(TRANSPORTS))
    columns: dict[str, list] = {"t": [], "rate": [], **{f"rate:{t}": [] for t in transports},
                                **{p: [] for p in LATENCIES}}
    for b in series:
        begin = max(b.start, since) if since else b.start
        minutes = (min(b.start + width, until) - begin).total_seconds() / 60.0
        minutes = minutes if minutes > 0 else width.total_seconds() / 60.0
        columns["t"].append(b.start + width / 2)
        columns["rate"].append(b.total / minutes)
        for t in transports:
            columns[f"rate:{t}"].append(b.by_transport.get(t, 0) / minutes)
        for p in LATENCIES:
            columns[p].append(getattr(b.latency, f"{p}_ms") if b.total else math.nan)
    return columns


def class_counts(classes: Sequence[str], by_label: Mapping[str, int]) -> tuple[list[str], list[int]]:
    """Counts per class in model order (zero for unseen classes), then any other labels seen."""
    labels = list(classes) + sorted(set(by_label) - set(classes))
    return labels, [int(by_label.get(label, 0)) for label in labels]


def default_value(minimum: float, maximum: float, mean: float, std: float) -> float:
    """A form field's starting value: the training mean when known (older manifests have std 0) and inside the
    range, else the midpoint of the training range."""
    if std > 0 and math.isfinite(mean) and minimum <= mean <= maximum:
        return mean
    return (minimum + maximum) / 2.0


def step(minimum: float, maximum: float) -> float:
    """A round input step of about a hundredth of the training range."""
    span = maximum - minimum
    if not math.isfinite(span) or span <= 0:
        return 0.1
    return 10.0 ** math.floor(math.log10(span / 100.0))
