"""PlannerStatistics: when the writer's stored rows lead to a look at the table's statistics (pure unit; the SQL
side is tests/integration/postgres/test_planner_statistics.py)."""
from __future__ import annotations

import threading

from inference.recording.statistics import PlannerStatistics


def test_a_look_after_enough_rows_at_most_one_at_a_time_never_when_off():
    looks: list[float] = []
    release = threading.Event()

    def analyze(share: float) -> bool:
        looks.append(share)
        release.wait(5)
        return True

    stats = PlannerStatistics(0.1, check_rows=1000, check_interval_s=0.0, analyze=analyze)
    stats.stored(999)
    assert looks == []  # not enough rows yet
    stats.stored(1)
    stats.stored(5000)  # a look is running: no second one
    release.set()
    stats.join()
    assert looks == [0.1] and stats.analyzed == 1
    stats.stored(1000)
    stats.join()
    assert len(looks) == 2
    off = PlannerStatistics(0.0, check_rows=1, check_interval_s=0.0, analyze=analyze)
    off.stored(10**6)
    off.join()
    assert len(looks) == 2


def test_not_due_is_asked_once_more_after_the_counts_settle():
    answers = iter([False, True])
    stats = PlannerStatistics(0.1, check_rows=1, check_interval_s=0.0, analyze=lambda share: next(answers))
    stats.settle_s = 0.01
    stats.stored(1)
    stats.join()
    assert stats.analyzed == 1
