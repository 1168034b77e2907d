"""canary_runs (database/canary.py) on PostgreSQL and SQLite: a rollout naming a candidate starts a run and any
other change ends it; replicas' tallies add up; the figures come from the aggregates (answered rows, latency and
accuracy per version since the run started); a decision applies once however many replicas take it at the same
time, with the desired state and its history entry in the same transaction."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from database import canary, desired, repo
from database.connect import open_database, session
from database.migrate import migrate
from database.records import PredictionRecord

CLASSES = ("setosa", "versicolor", "virginica")


@pytest.fixture
def database(empty_db_url):
    database = open_database(empty_db_url)
    migrate(database)
    with session():
        yield database
    database.close()


def rows(version: str, n: int, right: int, at: float, latency_ms: float) -> list[tuple[PredictionRecord, str]]:
    """n predictions of version, the first `right` of them correct: (record, true label)."""
    out = []
    for i in range(n):
        rid = f"{version}-{uuid.uuid4().hex}"
        label = CLASSES[i % 3]
        truth = label if i < right else CLASSES[(i + 1) % 3]
        out.append((PredictionRecord(
            prediction_id=str(uuid.uuid4()), request_id=rid, model="iris", model_version=version,
            features={"x": float(i)}, label=label, probabilities={c: 0.8 if c == label else 0.1 for c in CLASSES},
            transport="grpc", latency_ms=latency_ms, created_at=at), truth))
    return out


def test_a_run_starts_and_ends_with_the_desired_state_and_reads_its_figures(database):
    now = time.time()
    desired.set_desired("iris", "2", "rollout", now - 5)
    recorded = canary.record_change("iris", "2", "rollout", now, candidate="3", candidate_share=0.25, by="ops",
                                    criteria={"window_s": 60, "max_accuracy_drop": 0.05})
    assert (recorded.version, recorded.candidate, recorded.candidate_share) == ("2", "3", 0.25)
    assert desired.history("iris")[0]["action"] == "canary"
    [run] = canary.running()
    assert (run.model, run.baseline, run.candidate, run.share, run.status) == ("iris", "2", "3", 0.25, "running")
    assert run.criteria == {"window_s": 60, "max_accuracy_drop": 0.05}

    canary.tally(run.id, {"candidate_calls": 10, "candidate_errors": 1, "compared": 8, "agreed": 6})
    canary.tally(run.id, {"candidate_calls": 5, "serving_calls": 40})
    with pytest.raises(ValueError):
        canary.tally(run.id, {"bogus": 1})
    serving, candidate = rows("2", 40, 38, now + 1, 2.0), rows("3", 20, 7, now + 1, 8.0)
    repo.insert_predictions([r for r, _ in serving + candidate])
    repo.upsert_feedback_many({r.prediction_id: t for r, t in serving + candidate}, now + 2)
    [run] = canary.running()
    figures = canary.figures(run, now + 3)
    assert figures["serving"]["requests"] == 40 and figures["candidate"]["requests"] == 20
    assert (figures["serving"]["feedback"], figures["serving"]["accuracy"]) == (40, 0.95)
    assert (figures["candidate"]["feedback"], figures["candidate"]["accuracy"]) == (20, 0.35)
    assert (figures["candidate"]["calls"], figures["candidate"]["errors"]) == (15, 1)
    assert figures["candidate"]["error_rate"] == round(1 / 15, 4) and figures["serving"]["calls"] == 40
    assert figures["candidate"]["p99_ms"] == pytest.approx(8.0, rel=0.05)
    assert figures["serving"]["p99_ms"] == pytest.approx(2.0, rel=0.05)
    assert figures["agreement"] == {"compared": 8, "agreed": 6, "rate": 0.75}

    # a plain rollout ends the run; the run keeps its tallies, takes no more
    canary.record_change("iris", "2", "rollout", now + 4, by="ops", reason="stop")
    assert canary.running() == []
    [ended] = canary.runs("iris")
    assert (ended.status, ended.summary) == ("ended", "ended by a rollout to 2 (stop)")
    assert ended.figures["candidate"]["requests"] == 20 and ended.figures["candidate"]["accuracy"] == 0.35
    canary.tally(ended.id, {"candidate_calls": 5})
    assert canary.runs("iris")[0].tallies["candidate_calls"] == 15
    assert canary.decide(ended, "rollback", figures, "late", now + 5, "r1") is None


@pytest.mark.parametrize("decision, version, action", [("promote", "3", "promote"),
                                                        ("rollback", "2", "canary-rollback")])
def test_a_decision_applies_once_when_replicas_decide_at_the_same_time(database, empty_db_url, decision, version,
                                                                      action):
    now = time.time()
    canary.record_change("iris", "2", "rollout", now, candidate="3", candidate_share=0.5,
                         criteria={"window_s": 1})
    [run] = canary.running()
    figures = {"elapsed_s": 1.0, "serving": {"accuracy": 0.9}, "candidate": {"accuracy": 0.95}}
    applied, errors = [], []
    barrier = threading.Barrier(4)

    def replica(name: str) -> None:
        try:
            with session():  # each thread (a replica) on a connection of its own
                barrier.wait(10)
                applied.append(canary.decide(run, decision, figures, f"{decision} by {name}", now + 1, name))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    recorded = [d for d in applied if d is not None]
    assert len(recorded) == 1 and len(applied) == 4
    current = desired.get_desired("iris")
    assert current is not None
    assert (current.version, current.candidate, current.candidate_share) == (version, "", 0.0)
    history = desired.history("iris")
    assert [h["action"] for h in history[:2]] == [action, "canary"]
    assert history[0]["reason"] == recorded[0].reason and history[0]["previous_version"] == "2"
    [done] = canary.runs("iris")
    assert done.status == ("promoted" if decision == "promote" else "rolled_back")
    assert done.figures == figures and done.decided_by in {"r0", "r1", "r2", "r3"}
    if decision == "promote":
        assert desired.rollback_target("iris") == "2"  # a promotion can be rolled back to the baseline
