"""PlannerStatistics: when the writer's stored rows lead to a look at the table's statistics (pure unit; the SQL
side is tests/integration/postgres/test_planner_statistics.py)."""
from __future__ import annotations

import threading
import time

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


def test_analyze_keeps_to_its_share_of_the_time_and_a_held_look_still_runs():
    """After an ANALYZE of d seconds the next look waits (1/time_share - 1)·d; it runs then without another store
    (the last rows of a load are analyzed too)."""
    starts: list[float] = []

    def analyze(share: float) -> bool:
        starts.append(time.monotonic())
        time.sleep(0.2)
        return True

    stats = PlannerStatistics(0.1, check_rows=1, check_interval_s=0.0, analyze=analyze, time_share=0.25)
    stats.stored(1)
    stats.join()
    stats.stored(1)  # due at once, but the last ANALYZE took >= 0.2 s: this look starts >= 0.6 s after it ended
    stats.join()
    assert len(starts) == 2 and stats.analyzed == 2
    assert starts[1] - starts[0] >= 0.2 + 0.6
