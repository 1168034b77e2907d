"""Latency histograms of the aggregates: fixed logarithmic bins, their stored form, and percentiles of many
histograms at once (a series' buckets × transports as one matrix).

Bin i holds latencies in (GAMMA**(i-1), GAMMA**i] ms; stored as an array of counts by index (index 0: latency 0;
index k: bin BIN_MIN + k - 1), trailing zeros left out, mergeable by adding counts.

A percentile is estimated from the histogram: each rank's latency is taken as its bin's value (2 * GAMMA**i /
(GAMMA + 1), within ALPHA = 5% of anything the bin holds) and the percentile interpolated linearly between the
two closest ranks (as percentile_cont does), so the estimate is within 5% of the exact percentile, for latencies
from 1 µs to 11 days (beyond, the end bins hold them).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

ALPHA = 0.05  # relative accuracy of a latency percentile
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LOG_GAMMA = math.log(GAMMA)
BIN_MIN, BIN_MAX = math.floor(math.log(1e-3) / LOG_GAMMA), math.ceil(math.log(1e9) / LOG_GAMMA)  # 1 µs .. 11 d
ZERO_BIN = BIN_MIN - 1  # latencies of 0 (or less): reported as 0
HIST_LEN = BIN_MAX - BIN_MIN + 2  # index 0: latency 0; index k: bin BIN_MIN + k - 1
PERCENTILES = (0.5, 0.95, 0.99)


def latency_bins(ms: Sequence[float] | np.ndarray) -> np.ndarray:
    """The histogram bins of latencies in milliseconds (every writer bins through here, so they agree)."""
    ms = np.asarray(ms, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        index = np.clip(np.ceil(np.log(ms) / LOG_GAMMA), BIN_MIN, BIN_MAX)
    index = np.where(ms > 0, index, np.where(np.isnan(ms), BIN_MAX, ZERO_BIN))  # NaN: the last bin
    return index.astype(np.int64)


def latency_bin(ms: float) -> int:
    """The histogram bin of a latency in milliseconds."""
    return int(latency_bins(np.array([ms]))[0])


def bin_value(index: int) -> float:
    """The latency a bin stands for: within ALPHA of every latency it holds."""
    return 0.0 if index == ZERO_BIN else 2 * GAMMA ** index / (GAMMA + 1)


def bin_of(index: int) -> int:
    """The bin counted at an index of the stored array."""
    return ZERO_BIN if index == 0 else BIN_MIN + index - 1


VALUES = np.array([bin_value(bin_of(i)) for i in range(HIST_LEN)])  # by array index, as bin_value gives them


def hist_array(bins: Counter) -> list[int]:
    """A histogram {bin: count} as stored: counts by index, trailing zeros left out."""
    at = {(0 if b == ZERO_BIN else b - BIN_MIN + 1): n for b, n in bins.items() if n}
    out = [0] * (max(at) + 1 if at else 0)
    for index, n in at.items():
        out[index] = n
    return out


def hist_bins(array: Sequence[int]) -> dict[int, int]:
    return {bin_of(i): int(n) for i, n in enumerate(array) if n}


def add_up(texts: Sequence[str], lengths: Sequence[int], groups: Sequence[int] | np.ndarray,
           size: int) -> tuple[int, np.ndarray]:
    """Stored histograms added up by group: (first, sums), sums a (size, width) matrix whose row g sums the
    histograms i with groups[i] == g, its column j counting array index first + j; the columns span every index
    any of them occupies. texts are the arrays as the database hands them as text (PostgreSQL's '{0,3,1}',
    SQLite's JSON '[0, 3, 1]'), lengths their numbers of elements. Their leading zeros (most of an array: the
    bins below the fastest latency) are cut by str.lstrip, the rest parsed at once by numpy and summed by
    np.bincount, so the Python work is per row, not per element (the sums pass through float64: exact below
    2**53 predictions a cell)."""
    tails = [s.lstrip("{[0, ") for s in texts]  # "{0,0,3,0,1}" -> "3,0,1}"; all zeros or empty -> "}"
    kept = np.fromiter((t.count(",") + 1 if len(t) > 1 else 0 for t in tails), dtype=np.int64, count=len(texts))
    full = np.asarray(lengths, dtype=np.int64)
    starts = full - kept  # the array index of each tail's first element
    occupied = kept > 0
    if not occupied.any():
        return 0, np.zeros((size, 0), dtype=np.int64)
    first, width = int(starts[occupied].min()), int(full[occupied].max() - starts[occupied].min())
    body = ",".join([t[:-1] for t in tails if len(t) > 1])
    values = np.fromstring(body, dtype=np.int64, sep=",")  # ValueError if a text is not a list of integers
    # element j of tail i goes to cell groups[i] * width + starts[i] - first + j: its position in values shifted
    shift = np.asarray(groups, dtype=np.int64) * width + starts - first - (np.cumsum(kept) - kept)
    at = np.arange(values.size) + np.repeat(shift, kept)
    summed = np.bincount(at, weights=values, minlength=size * width)
    return first, summed.astype(np.int64).reshape(size, width)


def percentiles_of(counts: np.ndarray, first: int = 0) -> np.ndarray:
    """p50, p95 and p99 of each row of a (rows, width) matrix of counts whose column j counts array index
    first + j, as a (rows, 3) array (zeros for an empty row). The same arithmetic as one histogram at a time: a
    rank's bin is the first whose cumulative count exceeds the rank; its value is VALUES' (bin_value's);
    low + (high - low) * (pos - lo) in float64."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.zeros((len(counts), len(PERCENTILES)))
    used = np.flatnonzero(counts.any(axis=0))  # the columns any row occupies: the rest cannot hold a rank
    if not used.size:
        return out
    low_column, stop = int(used[0]), int(used[-1]) + 1
    cumulative = np.cumsum(counts[:, low_column:stop], axis=1)
    values = VALUES[first + low_column:first + stop]
    total = cumulative[:, -1]
    empty = total <= 0
    last = np.where(empty, 0, total - 1)
    for k, q in enumerate(PERCENTILES):
        pos = q * last
        lo = np.floor(pos).astype(np.int64)
        ranks = np.stack([lo, np.minimum(lo + 1, last)])  # (2, rows)
        index = (cumulative[None, :, :] <= ranks[:, :, None]).sum(axis=2)  # the first column past each rank
        low, high = values[np.minimum(index, stop - low_column - 1)]
        out[:, k] = low + (high - low) * (pos - lo)
    out[empty] = 0.0
    return out
