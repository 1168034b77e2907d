"""Adaptive batching: correct rows back to each caller, merging under concurrency, none when idle."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from inference.errors import DeadlineExceeded
from inference.models.batcher import Batcher
from tests.support.procs import wait_for


class Recording:
    """score_fn that returns each row's own values (so mix-ups show), records calls and their threads. Gated, its
    calls wait for `release` (`entered` is set once the first has begun)."""

    def __init__(self, delay: float = 0.0, gated: bool = False):
        self.calls: list[int] = []
        self.threads: list[str] = []
        self.delay = delay
        self.lock = threading.Lock()
        self.entered, self.release = threading.Event(), threading.Event()
        if not gated:
            self.release.set()

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        with self.lock:
            self.calls.append(len(matrix))
            self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(10), "never released"
        if self.delay:
            time.sleep(self.delay)
        return matrix * 2


def test_idle_call_is_scored_inline_in_the_callers_thread():
    fn = Recording()
    batcher = Batcher(fn, max_rows=8)
    out = batcher.score(np.array([[1.0, 2.0]]))
    assert out.tolist() == [[2.0, 4.0]]
    assert fn.calls == [1]
    assert fn.threads == [threading.current_thread().name]


def test_concurrent_callers_share_calls_and_get_their_own_rows():
    fn = Recording(delay=0.005)
    batcher = Batcher(fn, max_rows=16)
    n = 200

    def call(i):
        return i, batcher.score(np.array([[float(i), float(-i)]]), timeout=10)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, range(n)))
    for i, out in results:
        assert out.tolist() == [[2.0 * i, -2.0 * i]]
    assert sum(fn.calls) == n
    assert len(fn.calls) < n / 3, f"expected merged batches, got {len(fn.calls)} calls for {n} rows"
    assert max(fn.calls) <= 16


def test_multi_row_requests_stay_contiguous_and_oversized_ones_run_alone():
    fn = Recording()
    batcher = Batcher(fn, max_rows=4)
    rows = np.arange(20, dtype=float).reshape(10, 2)
    assert batcher.score(rows).tolist() == (rows * 2).tolist()
    assert fn.calls == [10]


def test_an_error_reaches_every_caller_of_the_batch_and_the_batcher_recovers():
    state = {"fail": True}
    calls, entered, release = [], threading.Event(), threading.Event()

    def fn(matrix):
        calls.append(len(matrix))
        entered.set()
        release.wait(10)
        if state["fail"]:
            raise ValueError("boom")
        return matrix

    batcher = Batcher(fn, max_rows=64)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(batcher.score, np.ones((1, 2)), 5)]
        assert entered.wait(10)
        futures += [pool.submit(batcher.score, np.ones((1, 2)), 5) for _ in range(7)]
        wait_for(lambda: batcher.queued_rows() == 7, 10, what="seven callers queued behind the first")
        release.set()
        errors = [f.exception(timeout=10) for f in futures]
    # the batch of 7 raised, so each of its callers was scored alone: each raised on its own
    assert all(isinstance(e, ValueError) for e in errors) and calls == [1, 7] + [1] * 7
    state["fail"] = False
    assert batcher.score(np.ones((1, 2))).tolist() == [[1.0, 1.0]]


def test_a_waiter_that_times_out_does_not_wedge_the_batcher():
    entered, release = threading.Event(), threading.Event()

    def fn(matrix):
        entered.set()
        release.wait(5)
        return matrix

    batcher = Batcher(fn, max_rows=64)
    with ThreadPoolExecutor(4) as pool:
        leader = pool.submit(batcher.score, np.ones((1, 1)), 10)
        assert entered.wait(5), "the leader is scoring"
        waiter = pool.submit(batcher.score, np.ones((1, 1)), 0.05)
        with pytest.raises(DeadlineExceeded):
            waiter.result(timeout=5)
        release.set()
        assert leader.result(timeout=5).tolist() == [[1.0]]
    # Leadership was released: a new call completes.
    assert batcher.score(np.full((1, 1), 3.0), timeout=2).tolist() == [[3.0]]


def test_max_delay_waits_only_under_load():
    fn = Recording()
    batcher = Batcher(fn, max_rows=64, max_delay_s=0.2)
    started = time.perf_counter()
    batcher.score(np.ones((1, 1)))
    batcher.score(np.ones((1, 1)))
    assert time.perf_counter() - started < 0.15, "an idle batcher must not wait for the delay"


def test_finish_runs_per_caller_and_one_commit_per_batch_before_anyone_is_answered():
    fn = Recording(gated=True)
    batcher = Batcher(fn, max_rows=64)
    commits: list[list] = []
    answered: list[int] = []
    lock = threading.Lock()

    def commit(items):
        with lock:
            assert not any(i in answered for i in items)  # nobody of this batch has been answered yet
            commits.append(list(items))

    def call(i):
        probabilities, items = batcher.score(np.array([[float(i)]]), 5, finish=lambda p: [int(p[0, 0]) // 2],
                                             commit=commit)
        with lock:
            answered.append(i)
        return i, probabilities.tolist(), items

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(call, 0)
        assert fn.entered.wait(10)  # the first call is being scored: the others queue into one batch
        rest = [pool.submit(call, i) for i in range(1, 8)]
        wait_for(lambda: batcher.queued_rows() == 7, 10, what="seven callers queued behind the first")
        fn.release.set()
        results = [f.result(10) for f in [first, *rest]]
    for i, probabilities, items in results:
        assert probabilities == [[2.0 * i]] and items == [i]
    assert sorted(x for c in commits for x in c) == list(range(8))  # every item committed exactly once
    assert fn.calls == [1, 7] and len(commits) == 2  # one commit per scored batch, and the queued ones merged


def test_a_failed_commit_fails_every_caller_of_its_batch_and_the_batcher_recovers():
    fn = Recording()
    batcher = Batcher(fn, max_rows=64)

    def refuse(items):
        raise OSError("disk full")

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.score, np.ones((1, 1)), 5, lambda p: [1], refuse) for _ in range(4)]
        errors = [f.exception(5) for f in futures]
    assert all(isinstance(e, OSError) for e in errors)
    _probabilities, items = batcher.score(np.ones((1, 1)), 5, lambda p: ["ok"], lambda items: None)
    assert items == ["ok"]


def test_no_commit_when_scoring_fails():
    def fail(m: np.ndarray) -> np.ndarray:
        raise ZeroDivisionError

    batcher = Batcher(fail, max_rows=8)
    commits: list[object] = []
    with pytest.raises(ZeroDivisionError):
        batcher.score(np.ones((1, 1)), 5, lambda p: [1], commits.append)
    assert commits == []


def test_rows_that_raise_fail_only_their_caller_not_the_others_batched_with_them():
    """A model that raises on some value (a user's pipeline) used to fail every caller batched with the row that
    raised it: one client's input made other clients' concurrent requests fail. The batch is now scored apart."""
    calls, entered, release = [], threading.Event(), threading.Event()

    def fn(matrix):
        calls.append(len(matrix))
        entered.set()
        release.wait(10)
        if (matrix == 666).any():
            raise ValueError("the model cannot take 666")
        return matrix * 2

    batcher = Batcher(fn, max_rows=64)
    commits: list[list] = []
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(batcher.score, np.ones((1, 2)), 5)
        assert entered.wait(10)
        values = [1.0, 2.0, 666.0, 3.0]
        futures = [pool.submit(batcher.score, np.full((2, 2), v), 5, lambda p: [p.tolist()], commits.append)
                   for v in values]
        wait_for(lambda: batcher.queued_rows() == 8, 10, what="four callers queued behind the first")
        release.set()
        assert first.result(10).tolist() == [[2.0, 2.0]]
        outcomes: list = [f.exception(10) or f.result(10) for f in futures]
    assert isinstance(outcomes[2], ValueError) and "666" in str(outcomes[2])
    for v, outcome in zip(values, outcomes):
        if v != 666.0:
            probabilities, items = outcome
            assert probabilities.tolist() == [[2 * v] * 2] * 2 and items == [probabilities.tolist()]
    assert calls == [1, 8, 2, 2, 2, 2]
    # one commit for the batch, with the items of the callers that were scored (the failed one has none)
    assert commits == [[[[2 * v] * 2] * 2 for v in values if v != 666.0]]
