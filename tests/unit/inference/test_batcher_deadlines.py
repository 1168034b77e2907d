"""Batcher edge cases met by raw gRPC clients: no deadline at all, and merged batches under concurrency."""
from __future__ import annotations

import threading

import numpy as np

from inference.models.batcher import Batcher
from tests.support.procs import wait_for


def test_followers_without_deadline_get_their_rows():
    """gRPC reports "no deadline" as a huge time_remaining(); a waiting caller must treat it as no timeout."""
    started, release = threading.Event(), threading.Event()
    sizes = []

    def gated_double(matrix):
        sizes.append(len(matrix))
        started.set()
        release.wait(10)  # the leader's call lasts until every follower has queued behind it
        return matrix * 2

    batcher = Batcher(gated_double, max_rows=64)
    results, errors = {}, []

    def call(i):
        try:
            results[i] = batcher.score(np.array([[float(i)]]), timeout=1.8e308)
        except Exception as exc:  # collected: the assertion below names it
            errors.append(exc)

    leader = threading.Thread(target=call, args=(0,))
    leader.start()
    assert started.wait(10)
    followers = [threading.Thread(target=call, args=(i,)) for i in range(1, 9)]
    for t in followers:
        t.start()
    wait_for(lambda: batcher.queued_rows() == 8, 10, what="eight followers queued behind the leader")
    release.set()
    for t in [leader, *followers]:
        t.join(10)
    assert errors == []
    assert {i: float(r[0, 0]) for i, r in results.items()} == {i: 2.0 * i for i in range(9)}
    assert sizes == [1, 8], "the followers were merged into one batch"
