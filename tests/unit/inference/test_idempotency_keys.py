"""Keys (inference/scoring/idempotency.py) alone, without a server or database: what a call's rows are decided
as (stored answer, conflict, this call's to answer), waiting for a key another call holds, and the bounded cache."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from database.records import PredictionBatch
from inference import errors
from inference.scoring.idempotency import Keys


def batch(ids: list[str], hashes: list[str]) -> PredictionBatch:
    n = len(ids)
    return PredictionBatch(
        prediction_ids=[f"p-{rid}" for rid in ids], request_ids=ids, model="iris", model_version="v1",
        feature_names=("a",), features=np.zeros((n, 1)), classes=("x", "y"), labels=np.zeros(n, dtype=np.int64),
        probabilities=np.tile([0.75, 0.25], (n, 1)), transport="grpc", latency_ms=1.0, created_at=0.0,
        request_hashes=hashes)


def test_fresh_keys_are_the_calls_own_then_cached_answers_and_conflicts():
    keys = Keys(100)
    with keys.begin("iris", ["a", "b", "c"], ["ha", "hb", "hc"], None) as claim:
        assert claim.stored == {} and claim.conflicts == {}
        keys.remember([batch(["a", "b", "c"], ["ha", "hb", "hc"])])
    # a retry: row 0 the same request (stored answer), row 1 another request (conflict), row 2 a new key, row 3
    # not keyed (no hash: never looked up)
    with keys.begin("iris", ["a", "b", "d", "e"], ["ha", "other", "hd", None], None) as claim:
        assert sorted(claim.stored) == [0] and claim.stored[0].prediction_id == "p-a"
        assert sorted(claim.conflicts) == [1] and "'b'" in claim.conflicts[1]
        assert keys._pending.keys() == {"d"}  # row 2 is this call's until released
    assert keys._pending == {}


def test_a_key_another_call_answers_is_waited_for_and_the_release_keeps_other_claims():
    keys = Keys(100)
    first = keys.begin("iris", ["a", "b"], ["ha", "hb"], None)
    other = keys.begin("iris", ["z"], ["hz"], None)
    with pytest.raises(errors.DeadlineExceeded):
        keys.begin("iris", ["c", "b"], ["hc", "hb"], 0.05)
    assert keys._pending.keys() == {"a", "b", "z"}  # the refused call claimed nothing
    decided = []

    def second():
        with keys.begin("iris", ["c", "b"], ["hc", "hb"], 5) as claim:
            decided.append(claim)

    waiter = threading.Thread(target=second)
    waiter.start()
    time.sleep(0.05)
    assert not decided  # still waiting for "b"
    keys.remember([batch(["a", "b"], ["ha", "hb"])])
    first.release()
    waiter.join(5)
    assert len(decided) == 1 and sorted(decided[0].stored) == [1]  # "b" answered by the first call
    assert keys._pending.keys() == {"z"}  # both releases left the other claim's key alone
    other.release()
    assert keys._pending == {}


def test_the_cache_keeps_the_newest_capacity_keys():
    keys = Keys(4)
    keys.remember([batch(["a", "b", "c"], ["h"] * 3)])
    keys.remember([batch(["d", "e", "f"], ["h"] * 3)])
    assert list(keys._answers) == ["c", "d", "e", "f"]
    with keys.begin("iris", ["b", "c"], ["h", "h"], None) as claim:
        assert sorted(claim.stored) == [1]  # "b" was evicted: the call's to answer (no database here)


def test_the_callers_prediction_ids_reach_the_lookup_only_when_they_name_every_key_it_asks():
    """The bulk path derives its rows' prediction ids once and hands them to begin: the database lookup gets them
    when it asks for exactly the call's keys in order, and derives them itself (None) otherwise."""
    asked: list[tuple[list[str], object]] = []

    def lookup(request_ids, prediction_ids):
        asked.append((list(request_ids), prediction_ids))
        return {}

    keys = Keys(100, lookup=lookup)
    with keys.begin("iris", ["a", "b"], ["ha", "hb"], None, ["p-a", "p-b"]):
        pass
    keys.remember([batch(["a"], ["ha"])])  # "a" is cached: the lookup asks for "c" alone
    with keys.begin("iris", ["a", "c"], ["ha", "hc"], None, ["p-a", "p-c"]):
        pass
    with keys.begin("iris", ["d", "e", "f"], ["hd", None, "hf"], None, ["p-d", "p-e", "p-f"]):
        pass  # "e" is not keyed
    with keys.begin("iris", ["g"], ["hg"], None):
        pass
    assert asked == [(["a", "b"], ["p-a", "p-b"]), (["c"], None), (["d", "f"], None), (["g"], None)]


def test_keys_the_caller_vouches_new_skip_the_database_but_not_this_processs_answers():
    """FeatureMatrix.new_keys: the database is not asked (counted as vouched); a key this process answered or is
    answering is still decided from its cache and pending map."""
    from prometheus_client import CollectorRegistry

    from inference.metrics import ServerMetrics

    asked: list[list[str]] = []

    def lookup(request_ids, prediction_ids):
        asked.append(list(request_ids))
        return {}

    metrics = ServerMetrics(CollectorRegistry())
    keys = Keys(100, metrics=metrics, lookup=lookup)
    with keys.begin("iris", ["a", "b"], ["ha", "hb"], None, new=True) as claim:
        assert claim.stored == {} and claim.conflicts == {} and keys._pending.keys() == {"a", "b"}
        keys.remember([batch(["a", "b"], ["ha", "hb"])])
    assert asked == [] and metrics.idempotency_vouched._value.get() == 2
    with keys.begin("iris", ["a", "b", "c"], ["ha", "other", "hc"], None, new=True) as claim:
        assert sorted(claim.stored) == [0] and sorted(claim.conflicts) == [1]  # from this process's cache
    assert asked == [] and metrics.idempotency_vouched._value.get() == 3  # "c" alone was vouched for
    with keys.begin("iris", ["d"], ["hd"], None):
        pass
    assert asked == [["d"]]  # not vouched: looked up


def test_a_call_is_a_retry_when_grpc_or_envoy_says_so():
    from inference.scoring.convert import retried

    assert not retried([("user-agent", "grpc-python"), ("x-envoy-attempt-count", "1")])
    assert retried([("grpc-previous-rpc-attempts", "1")])
    assert retried([("x-envoy-attempt-count", "2")])
