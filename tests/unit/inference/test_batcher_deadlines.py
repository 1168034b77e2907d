"""Batcher edge cases met by raw gRPC clients: no deadline at all, and merged batches under concurrency."""
from __future__ import annotations

import threading
import time

import numpy as np

from inference.models.batcher import Batcher


def test_followers_without_deadline_get_their_rows():
    """gRPC reports "no deadline" as a huge time_remaining(); a waiting caller must treat it as no timeout."""
    started = threading.Event()
    sizes = []

    def slow_double(matrix):
        sizes.append(len(matrix))
        started.set()
        time.sleep(0.05)
        return matrix * 2

    batcher = Batcher(slow_double, max_rows=64)
    results, errors = {}, []

    def call(i):
        try:
            results[i] = batcher.score(np.array([[float(i)]]), timeout=1.8e308)
        except Exception as exc:  # collected: the assertion below names it
            errors.append(exc)

    leader = threading.Thread(target=call, args=(0,))
    leader.start()
    started.wait(5)
    followers = [threading.Thread(target=call, args=(i,)) for i in range(1, 9)]
    for t in followers:
        t.start()
    for t in [leader, *followers]:
        t.join(10)
    assert errors == []
    assert {i: float(r[0, 0]) for i, r in results.items()} == {i: 2.0 * i for i in range(9)}
    assert sizes[0] == 1 and sum(sizes) == 9 and len(sizes) < 9, "followers were merged into batches"
