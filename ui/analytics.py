"""Pure computations behind the dashboard's charts: time buckets, rates, percentiles, form defaults."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from predmesh.percentile import percentile
from predmesh.types import TRANSPORTS

# label shown in the window selector -> (window length, bucket width); "all" plots the last 24 h
WINDOWS: dict[str, tuple[timedelta | None, timedelta]] = {
    "15 min": (timedelta(minutes=15), timedelta(minutes=1)),
    "1 h": (timedelta(hours=1), timedelta(minutes=5)),
    "6 h": (timedelta(hours=6), timedelta(minutes=30)),
    "24 h": (timedelta(hours=24), timedelta(hours=2)),
    "all": (None, timedelta(hours=2)),
}
SERIES_SPAN_ALL = timedelta(hours=24)


@dataclass(frozen=True)
class Bucket:
    start: datetime
    end: datetime

    @property
    def minutes(self) -> float:
        return (self.end - self.start).total_seconds() / 60.0

    @property
    def middle(self) -> datetime:
        return self.start + (self.end - self.start) / 2


def window_start(window: str, now: datetime) -> datetime | None:
    """Start of the filter window ending now; None for "all"."""
    length, _ = WINDOWS[window]
    return None if length is None else now - length


def buckets(window: str, now: datetime) -> list[Bucket]:
    """Equal buckets covering the window, oldest first; the last one ends at now."""
    length, width = WINDOWS[window]
    span = length or SERIES_SPAN_ALL
    count = max(1, round(span / width))
    return [Bucket(now - (count - i) * width, now - (count - i - 1) * width) for i in range(count)]


@dataclass(frozen=True)
class BucketRead:
    """What one page of a bucket's newest stored rows says about the bucket."""

    counts: dict[str, int]              # rows read, by transport
    minutes: float                      # the span those rows cover: the whole bucket when complete
    complete: bool                      # the rows are the whole bucket (no further page)
    sample: list[tuple[str, float]]     # (transport, latency_ms) of the rows read


def read_bucket(bucket: Bucket, rows: Sequence[tuple[str, float, datetime | None]], complete: bool) -> BucketRead:
    """A bucket's rows (transport, latency_ms, created_at), newest first: all of it when `complete`, else every
    row from the oldest one read to the bucket's end."""
    counts: dict[str, int] = {}
    for transport, _, _ in rows:
        counts[transport] = counts.get(transport, 0) + 1
    minutes = bucket.minutes
    oldest = rows[-1][2] if rows else None
    if not complete and oldest is not None and bucket.start < oldest < bucket.end:
        minutes = (bucket.end - oldest).total_seconds() / 60.0
    return BucketRead(counts, minutes, complete, [(transport, latency) for transport, latency, _ in rows])


def bucket_counts(bucket_list: Sequence[Bucket], reads: Sequence[BucketRead],
                  totals: Mapping[str, int]) -> list[dict[str, float]]:
    """Counts by transport per bucket, from each bucket's read and the exact totals by transport over all the
    buckets (one GetStats over their span).

    A complete bucket counts exactly. What the totals hold beyond the complete buckets belongs to the buckets read
    in part: all of it when there is one (exact again); shared in proportion to each one's count extrapolated from
    the span its rows cover when there are several. A bucket never counts fewer rows than were read in it."""
    result: list[dict[str, float]] = [dict(r.counts) for r in reads]
    partial = [i for i, r in enumerate(reads) if not r.complete]
    for transport in set(totals) | {t for i in partial for t in reads[i].counts}:
        remainder = totals.get(transport, 0) - sum(r.counts.get(transport, 0) for r in reads if r.complete)
        estimate = {i: reads[i].counts.get(transport, 0) * bucket_list[i].minutes / reads[i].minutes
                    for i in partial}
        weight = sum(estimate.values())
        for i in partial:
            share = remainder * estimate[i] / weight if weight else remainder / len(partial)
            result[i][transport] = max(reads[i].counts.get(transport, 0), share)
    return result


def rate_series(bucket_list: Sequence[Bucket], counts: Sequence[Mapping[str, float]]) -> dict[str, list]:
    """Requests per minute by transport, one value per bucket (columns "t" and one per transport)."""
    data: dict[str, list] = {"t": [b.middle for b in bucket_list]}
    for transport in TRANSPORTS:
        data[transport] = [c.get(transport, 0) / b.minutes for b, c in zip(bucket_list, counts)]
    return data


def latency_series(bucket_list: Sequence[Bucket],
                   samples: Sequence[Iterable[tuple[str, float]]]) -> dict[str, list]:
    """p50 and p95 latency by transport per bucket from (transport, latency_ms) samples; NaN = no data."""
    data: dict[str, list] = {"t": [b.middle for b in bucket_list]}
    for transport in TRANSPORTS:
        data[f"{transport}_p50"], data[f"{transport}_p95"] = [], []
    for sample in samples:
        by: dict[str, list[float]] = {}
        for transport, latency in sample:
            by.setdefault(transport, []).append(latency)
        for transport in TRANSPORTS:
            values = sorted(by.get(transport, ()))
            data[f"{transport}_p50"].append(percentile(values, 0.50))
            data[f"{transport}_p95"].append(percentile(values, 0.95))
    return data


def latency_table(samples: Iterable[Iterable[tuple[str, float]]]) -> list[dict]:
    """Per transport seen: sampled count and p50/p95/p99 latency over all the samples."""
    by: dict[str, list[float]] = {}
    for sample in samples:
        for transport, latency in sample:
            by.setdefault(transport, []).append(latency)
    rows = []
    for transport in sorted(by, key=lambda t: TRANSPORTS.index(t) if t in TRANSPORTS else len(TRANSPORTS)):
        values = sorted(by[transport])
        rows.append({"transport": transport, "sampled": len(values),
                     "p50_ms": percentile(values, 0.50), "p95_ms": percentile(values, 0.95),
                     "p99_ms": percentile(values, 0.99)})
    return rows


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
