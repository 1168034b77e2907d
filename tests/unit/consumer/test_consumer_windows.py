"""When the consumer starts a window: full shares of the prefetch under load, at once when idle, never stuck."""
from __future__ import annotations

from consumer.worker import window_ready

PREFETCH, WINDOWS = 64, 2


def ready(waiting, *, scoring=0, unconfirmed=0, outstanding=None, stopping=False):
    outstanding = waiting if outstanding is None else outstanding
    return window_ready(waiting, scoring=scoring, unconfirmed=unconfirmed, outstanding=outstanding,
                        prefetch=PREFETCH, windows=WINDOWS, stopping=stopping)


def test_nothing_waiting_starts_nothing():
    assert not ready(0)
    assert not ready(0, stopping=True)


def test_an_idle_pipeline_scores_a_single_job_at_once():
    assert ready(1)


def test_beside_a_window_being_scored_a_few_jobs_wait_for_more_while_slots_are_free():
    assert not ready(5, scoring=1, outstanding=40)


def test_a_full_share_of_the_prefetch_starts_beside_another_window():
    assert ready(32, scoring=1, unconfirmed=10, outstanding=64)


def test_jobs_wait_for_confirms_on_their_way_since_their_acks_bring_more_jobs():
    assert not ready(8, unconfirmed=20, outstanding=64)
    assert not ready(8, scoring=1, unconfirmed=20, outstanding=64)


def test_when_no_more_jobs_can_arrive_before_the_scored_window_ends_they_start_anyway():
    # every slot taken by the window being scored and these: waiting would only serialise the two
    assert ready(20, scoring=1, outstanding=64)


def test_stopping_scores_whatever_waits():
    assert ready(3, scoring=1, unconfirmed=5, outstanding=30, stopping=True)


def test_more_windows_than_prefetch_slots_never_wait():
    assert window_ready(1, scoring=1, unconfirmed=3, outstanding=4, prefetch=1, windows=2, stopping=False)
