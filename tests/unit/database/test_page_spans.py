"""partitions.page_spans and partitions.gaps: the time ranges a page of ListPredictions reads on the partitioned
table, newest first, each covered by adjacent daily partitions only (so the planner prunes DEFAULT and reads them in
order), growing 1, 2, 4, ... partitions, never across a missing day; and the ranges DEFAULT holds rows of."""
from __future__ import annotations

from datetime import datetime, timedelta

from database.partitions import gaps, page_spans

D0 = datetime(2026, 11, 1)  # noqa: DTZ001 - the columns hold UTC without zone (database.models)


def days(*offsets: int) -> list[tuple[datetime, datetime]]:
    return [(D0 + timedelta(days=k), D0 + timedelta(days=k + 1)) for k in offsets]


def at(day: float) -> datetime:
    return D0 + timedelta(days=day)


def test_the_first_range_runs_from_tops_partition_up_then_ranges_double_going_back():
    bounds = days(*range(20))  # days 0..19, contiguous
    assert page_spans(bounds, at(12.5)) == [
        (at(12), at(20)),  # top's partition and every newer one (pruned by the token, or empty days ahead)
        (at(10), at(12)), (at(6), at(10)), (at(0), at(6))]  # then 2, 4, 8 (only 6 left) partitions


def test_a_missing_day_splits_a_range_and_none_covers_it():
    bounds = days(0, 1, 2, 3, 5, 6, 7)  # day 4 has no partition: its rows are in DEFAULT
    spans = page_spans(bounds, at(7.2))
    assert spans == [(at(7), at(8)), (at(5), at(7)), (at(0), at(4))]
    assert not any(lower < at(5) and upper > at(4) for lower, upper in spans)
    assert gaps(bounds) == [(None, at(0)), (at(4), at(5)), (at(8), None)]


def test_the_windows_start_drops_older_partitions_and_a_top_before_every_partition_reads_none():
    bounds = days(*range(10))
    assert page_spans(bounds, at(9.5), bottom=at(6.5)) == [(at(9), at(10)), (at(7), at(9)), (at(6), at(7))]
    bounds = days(0, 1, 3, 4, 5, 6)  # a missing day within one range of 4: two ranges
    assert page_spans(bounds, at(6.1)) == [(at(6), at(7)), (at(4), at(6)), (at(3), at(4)), (at(0), at(2))]
    assert page_spans(bounds, at(-0.5)) == []
    assert page_spans([], at(3)) == []
    assert gaps([]) == [(None, None)]


def test_a_top_past_every_partition_starts_at_the_newest():
    bounds = days(*range(4))
    assert page_spans(bounds, at(40)) == [(at(3), at(4)), (at(1), at(3)), (at(0), at(1))]
