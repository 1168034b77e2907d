"""The canary decision rule (inference/models/canary.py evaluate) and routing: each check rolls back as soon as its
sample shows a failure, promotion only at the end of the window with every check passed, not enough evidence at
the end is a rollback, and a request_id routes the same way every time."""
from __future__ import annotations

import pytest

from inference.models.canary import Criteria, evaluate, routed_to_candidate


def figures(elapsed=5.0, *, s_acc=0.96, s_fb=100, c_acc=0.95, c_fb=40, c_calls=50, c_err=0, s_p99=2.0, c_p99=2.2,
            requests=50, compared=50, agreed=48):
    def side(version, acc, fb, calls, errors, p99):
        return {"version": version, "requests": requests, "calls": calls, "errors": errors,
                "error_rate": errors / calls if calls else 0.0, "feedback": fb, "accuracy": acc if fb else None,
                "p50_ms": p99 / 2, "p99_ms": p99}
    return {"elapsed_s": elapsed, "serving": side("1", s_acc, s_fb, 200, 0, s_p99),
            "candidate": side("3", c_acc, c_fb, c_calls, c_err, c_p99),
            "agreement": {"compared": compared, "agreed": agreed, "rate": agreed / compared if compared else None}}


ALL = Criteria(window_s=10, min_feedback=30, min_requests=20, max_accuracy_drop=0.05, max_error_rate=0.01,
               max_p99_ratio=3.0, min_agreement=0.8)


def test_a_good_candidate_keeps_observing_then_is_promoted_at_the_end_of_the_window():
    assert evaluate(ALL, figures(elapsed=5))[0] is None
    decision, summary = evaluate(ALL, figures(elapsed=10.2))
    assert decision == "promote"
    assert summary.startswith("promoted after 10 s")
    assert "accuracy 0.950 over 40 feedback vs serving 0.960 over 100" in summary
    assert "agreement 0.960 over 50 rows" in summary


@pytest.mark.parametrize("bad, seen", [
    ({"c_acc": 0.35}, "accuracy 0.350 over 40 feedback vs serving 0.960 over 100 (drop 0.610, at most 0.05)"),
    ({"c_err": 2}, "error rate 0.0400 over 50 calls (at most 0.01)"),
    ({"c_p99": 9.0}, "p99 9.0 ms vs serving 2.0 ms (ratio 4.50, at most 3)"),
    ({"agreed": 20}, "agreement 0.400 over 50 rows (at least 0.8)"),
])
def test_each_failing_check_rolls_back_at_once_before_the_window_ends(bad, seen):
    decision, summary = evaluate(ALL, figures(elapsed=1.0, **bad))
    assert decision == "rollback"
    assert summary == f"rolled back: {seen}"


def test_a_check_without_its_sample_waits_and_is_a_rollback_at_the_end_of_the_window():
    thin = figures(c_acc=0.2, c_fb=29)  # a bad accuracy over too little feedback is not evidence yet
    assert evaluate(ALL, {**thin, "elapsed_s": 3})[0] is None
    decision, summary = evaluate(ALL, {**thin, "elapsed_s": 10})
    assert decision == "rollback"
    assert summary == ("rolled back: not enough evidence after 10 s: feedback 29 candidate / 100 serving, 30 needed "
                       "each")
    few_calls = Criteria(window_s=10, min_requests=100, max_error_rate=0.5)
    assert evaluate(few_calls, figures(elapsed=11, c_err=20))[0] == "rollback"  # 50 calls < 100: no verdict
    assert evaluate(few_calls, figures(elapsed=1, c_err=20))[0] is None


def test_no_window_is_decided_by_hand_and_no_checks_promote_at_the_end():
    assert evaluate(Criteria(max_accuracy_drop=0.0), figures(elapsed=1e6, c_acc=0.1)) == (
        None, "no window: decided by hand")
    assert evaluate(Criteria(window_s=5), figures(elapsed=4))[0] is None
    assert evaluate(Criteria(window_s=5), figures(elapsed=5)) == ("promote", "promoted after 5 s (no checks set)")


def test_the_criteria_are_checked_and_round_trip():
    ALL.check()
    for bad in (Criteria(window_s=-1), Criteria(min_feedback=0), Criteria(max_accuracy_drop=1.5),
                Criteria(min_agreement=-0.1), Criteria(max_p99_ratio=0)):
        with pytest.raises(ValueError):
            bad.check()
    assert Criteria.from_dict(ALL.to_dict()) == ALL
    assert Criteria.from_dict({"window_s": 3, "unknown": 1}) == Criteria(window_s=3)


def test_routing_by_request_id_is_deterministic_and_splits_by_share():
    keys = [f"req-{i}" for i in range(20000)]
    first = [routed_to_candidate("iris", k, 0.2) for k in keys]
    assert first == [routed_to_candidate("iris", k, 0.2) for k in keys]  # a retry lands on the same version
    assert 0.18 < sum(first) / len(keys) < 0.22
    # a larger share keeps every key the smaller one sent to the candidate (raising the share moves calls one way)
    wider = [routed_to_candidate("iris", k, 0.5) for k in keys]
    assert all(w for f, w in zip(first, wider) if f)
    assert not any(routed_to_candidate("iris", k, 0.0) for k in keys[:100])
    assert all(routed_to_candidate("iris", k, 1.0) for k in keys[:100])
    unkeyed = sum(routed_to_candidate("iris", "", 0.3) for _ in range(20000)) / 20000
    assert 0.27 < unkeyed < 0.33


@pytest.mark.parametrize("bad", [
    {"window_s": float("nan")}, {"window_s": float("inf")}, {"window_s": -1.0}, {"window_s": 8 * 86400.0},
    {"min_feedback": 0}, {"min_requests": -5},
    {"max_accuracy_drop": float("nan")}, {"max_error_rate": 1.5}, {"min_agreement": -0.1},
    {"max_p99_ratio": float("nan")}, {"max_p99_ratio": 0.0}, {"max_p99_ratio": -2.0},
])
def test_criteria_out_of_range_or_not_a_number_are_refused(bad):
    """What an admin client sends as criteria is checked before anything is recorded (INVALID_ARGUMENT)."""
    with pytest.raises(ValueError) as refused:
        Criteria(**bad).check()
    field = next(iter(bad))
    assert (field.removesuffix("_s") if field == "window_s" else field) in str(refused.value)
