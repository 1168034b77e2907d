"""The aggregates' vectorised read path (database.histogram: stored histograms parsed and added up by numpy,
percentiles of many at once) against the path it replaced, kept here as the reference: the percentiles one
histogram at a time in Python, and the series and totals summed by SQL (labels and histograms unnested) then by
Python per bucket. The answers must be identical, not close: same floats, same counts per bucket."""
from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict

import numpy as np
import pytest

from database import aggregates, histogram, repo
from database.connect import open_database, session
from database.migrate import migrate
from database.records import PredictionRecord

HOUR = 3600


def old_percentiles(counts: dict[int, int]) -> tuple[float, float, float]:
    """The previous aggregates.percentiles, as it was."""
    total = sum(counts.values())
    if not total:
        return 0.0, 0.0, 0.0
    bins = sorted(b for b, n in counts.items() if n)
    cumulative = np.cumsum([counts[b] for b in bins])

    def at_rank(rank: int) -> float:
        return histogram.bin_value(bins[int(np.searchsorted(cumulative, rank, side="right"))])

    out = []
    for q in histogram.PERCENTILES:
        pos = q * (total - 1)
        lo = math.floor(pos)
        low, high = at_rank(lo), at_rank(min(lo + 1, total - 1))
        out.append(low + (high - low) * (pos - lo))
    p50, p95, p99 = out
    return p50, p95, p99


def random_histogram(rng: random.Random) -> list[int]:
    """A stored array: empty, one count, a few bins, or many bins of counts up to a billion, anywhere from the zero
    bin (index 0) to the last."""
    shape = rng.randrange(6)
    if shape == 0:
        return []
    row = [0] * histogram.HIST_LEN
    if shape == 1:
        row[rng.choice((0, rng.randrange(histogram.HIST_LEN), histogram.HIST_LEN - 1))] = 1
    else:
        centre, spread = rng.randrange(histogram.HIST_LEN), rng.choice((1, 3, 10, 40))
        for _ in range(rng.choice((2, 5, 30, 300))):
            index = min(histogram.HIST_LEN - 1, max(0, round(rng.gauss(centre, spread))))
            row[index] += rng.choice((1, 1, 2, 17, 1000, 10**9))
    return histogram.hist_array(Counter(histogram.hist_bins(row)))


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_of_many_equal_the_one_at_a_time_estimate(seed):
    rng = random.Random(seed)
    arrays = [random_histogram(rng) for _ in range(400)]
    matrix = np.zeros((len(arrays), histogram.HIST_LEN), dtype=np.int64)
    for i, a in enumerate(arrays):
        matrix[i, :len(a)] = a
    expected = [old_percentiles(histogram.hist_bins(a)) for a in arrays]
    assert [tuple(p) for p in histogram.percentiles_of(matrix).tolist()] == expected
    band = matrix[:, 40:]  # a band of columns starting at index 40 (rows occupying only 0..39 read as empty)
    in_band = [old_percentiles(histogram.hist_bins([0] * 40 + row.tolist())) for row in band]
    assert [tuple(p) for p in histogram.percentiles_of(band, first=40).tolist()] == in_band
    assert sum(p != (0.0, 0.0, 0.0) for p in expected) > 250  # mostly non-empty histograms


@pytest.mark.parametrize("database_text", ["postgresql", "sqlite"])
def test_add_up_sums_the_stored_text_by_group(database_text):
    rng = random.Random(3)
    arrays = [random_histogram(rng) for _ in range(500)]
    texts = [("{" + ",".join(map(str, a)) + "}") if database_text == "postgresql" else json.dumps(a)
             for a in arrays]
    groups = [rng.randrange(37) for _ in arrays]
    expected = np.zeros((37, histogram.HIST_LEN), dtype=np.int64)
    for g, a in zip(groups, arrays, strict=True):
        expected[g, :len(a)] += np.asarray(a, dtype=np.int64)
    first, summed = histogram.add_up(texts, [len(a) for a in arrays], groups, 37)
    occupied = np.flatnonzero(expected.any(axis=0))
    assert (first, summed.shape[1]) == (occupied[0], occupied[-1] + 1 - occupied[0])  # the occupied columns
    assert (summed == expected[:, first:first + summed.shape[1]]).all()
    assert histogram.add_up([], [], [], 2)[1].shape == histogram.add_up(["{}", "{0,0}"], [0, 2], [0, 1], 2)[1].shape
    assert histogram.add_up([], [], [], 2)[1].shape == (2, 0)
    assert (histogram.percentiles_of(histogram.add_up(["{0,0}"], [2], [0], 1)[1]) == 0).all()
    with pytest.raises(ValueError):  # not misread
        histogram.add_up(["{1,,2}"], [3], [0], 1)


# -- the previous series and totals: SQL sums (SQLite's), then Python per bucket ------------------------------
def old_sums(ranges, model, bucket_width=0):
    where, params = aggregates._ranges(ranges, model, "")
    w = int(bucket_width)
    group = f"bucket_start - ((bucket_start % {w}) + {w}) % {w}, " if w else ""
    counts = aggregates._query(f"SELECT {group}model, model_version, transport, SUM(n) FROM stats_rollup WHERE "
                               f"{where} GROUP BY {group}model, model_version, transport", params)
    per_label = aggregates._query(f"SELECT {group}e.key, SUM(e.value) FROM stats_rollup, json_each("
                                  f"stats_rollup.labels) AS e WHERE {where} GROUP BY {group}e.key", params)
    per_bin = aggregates._query(f"SELECT {group}transport, e.key, SUM(e.value) FROM stats_rollup, json_each("
                                f"stats_rollup.hist) AS e WHERE {where} AND e.value <> 0 GROUP BY {group}transport, "
                                "e.key", params)
    return counts, per_label, per_bin


def old_totals(start, end, model=""):
    counts, per_label, per_bin = old_sums(aggregates.cover(start or 0, end), model)
    by_version: Counter = Counter()
    by_transport: Counter = Counter()
    for m, v, transport, n in counts:
        by_version[f"{m}@{v}"] += int(n)
        by_transport[transport] += int(n)
    merged: Counter = Counter()
    for _, index, n in per_bin:
        merged[histogram.bin_of(int(index))] += int(n)
    return aggregates.Totals(sum(by_version.values()), {label: int(n) for label, n in per_label if n},
                             {k: n for k, n in by_version.items() if n}, {k: n for k, n in by_transport.items() if n},
                             old_percentiles(merged))


def old_series(starts, width, start, end, model=""):
    lo, hi = max(starts[0], start or 0), min(starts[-1] + width, end)
    widths = [w for w in aggregates.WIDTHS if width % w == 0]
    labels: dict = defaultdict(Counter)
    transports: dict = defaultdict(Counter)
    histograms: dict = defaultdict(lambda: defaultdict(Counter))
    counts, per_label, per_bin = old_sums(aggregates.cover(lo, hi, widths), model, bucket_width=width)
    for bucket, _, _, transport, n in counts:
        transports[int(bucket) // width * width][transport] += int(n)
    for bucket, label, n in per_label:
        labels[int(bucket) // width * width][label] += int(n)
    for bucket, transport, index, n in per_bin:
        histograms[int(bucket) // width * width][transport][histogram.bin_of(int(index))] += int(n)
    out = []
    for s in starts:
        per_transport = histograms.get(s, {})
        merged: Counter = Counter()
        for h in per_transport.values():
            merged.update(h)
        out.append(aggregates.Bucket(
            start=s, total=sum(transports[s].values()) if s in transports else 0,
            by_label={k: n for k, n in labels.get(s, Counter()).items() if n},
            by_transport={k: n for k, n in transports.get(s, Counter()).items() if n},
            latency_ms=old_percentiles(merged),
            latency_by_transport={t: old_percentiles(h) for t, h in per_transport.items() if sum(h.values())}))
    return out


def test_series_and_totals_equal_the_previous_sql_path(tmp_path):
    """Random predictions (latencies spread over many bins, a latency of 0, transports and labels absent from some
    buckets) over 14 hours in a SQLite file: every series shape and window gives the buckets and totals the
    previous code gave, to the last bit."""
    rng = random.Random(26)
    base = 1_790_000_000 // 86400 * 86400 + 5 * HOUR
    records = [PredictionRecord(
        prediction_id=f"p{i}", request_id=f"r{i}", model=rng.choice(("iris", "iris", "wine")),
        model_version=rng.choice(("1", "2")), features={}, label=rng.choice(("a", "b", "c")), probabilities={},
        transport=rng.choice(("grpc", "grpc", "rest", "batch", "queue")),
        latency_ms=0.0 if i % 97 == 0 else rng.lognormvariate(0.5, 2.0), created_at=base + rng.uniform(0, 14 * HOUR))
        for i in range(4000)]
    database = open_database(f"sqlite:///{tmp_path / 'series.db'}")
    try:
        with session():
            migrate(database)
            repo.insert_predictions(records)
            for width, start, end in ((60, base + 7 * HOUR + 30, base + 7 * HOUR + 1800),
                                      (300, base - HOUR, base + 15 * HOUR), (300, base + 61, base + 9 * HOUR - 61),
                                      (1800, base + 600, base + 14 * HOUR), (7200, base - 3 * HOUR, base + 20 * HOUR),
                                      (86400, None, base + 2 * 86400)):
                lo, hi = aggregates.window(start, end)
                first = aggregates.first_minute() if lo is None else lo
                starts = repo.series_starts(lo, hi, first, width)
                for model in ("", "wine"):
                    new = aggregates.series(starts, width, lo, hi, model)
                    assert new == old_series(starts, width, lo, hi, model)
                    assert sum(b.total for b in new) == aggregates.totals(lo, hi, model).total > 0
                    assert aggregates.totals(lo, hi, model) == old_totals(lo, hi, model)
            assert aggregates.totals(base, base + 14 * HOUR).total == len(records)
    finally:
        database.close()
