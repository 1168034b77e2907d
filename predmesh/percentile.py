"""The one percentile of predmesh: linear interpolation between the closest ranks, NaN for no values."""
from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (q in 0..1) of already sorted values, interpolated linearly between the two closest ranks
    (as PostgreSQL's percentile_cont and numpy.percentile's default).

    No values give NaN: there is no percentile of nothing, so a caller shows a gap or chooses its own figure
    (database.repo.stats answers 0 for an empty window) instead of a 0 ms latency that looks measured.
    """
    n = len(sorted_values)
    if not n:
        return math.nan
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
