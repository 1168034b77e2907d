"""Canary routing on one server (in process, no database): with a candidate held, each transport's call goes
whole to one version, by a hash of its request_id (the same every time) or at random without one; the candidate's
rows are scored again by the serving version and counted (agreement); calls are tallied per side; dropping the
candidate sends everything back to the serving version."""
from __future__ import annotations

import time

import pytest

from inference.models.canary import routed_to_candidate
from predmesh import Client
from tests.conftest import IRIS_ROW


@pytest.fixture
def canary(inproc_server):
    """The server with iris 1 held as the canary candidate beside 2, and a client."""
    server, target = inproc_server
    canaries = server.registry.canaries
    canaries.hold("iris", "1", 0.5)
    with Client(target, timeout=5) as client:
        yield canaries, client
    canaries.drop("iris")


def tallies(canaries, wait_for_compared: int = 0) -> dict:
    deadline = time.monotonic() + 10
    seen: dict = {}
    while True:
        for key, counts in canaries.take_tallies().items():
            assert key == ("iris", "1")
            for name, n in counts.items():
                seen[name] = seen.get(name, 0) + n
        if seen.get("compared", 0) >= wait_for_compared or time.monotonic() > deadline:
            return seen
        time.sleep(0.02)


def test_a_request_id_picks_the_version_the_hash_says_every_time(canary):
    canaries, client = canary
    keys = [f"route-{i}" for i in range(40)]
    expected = {k: "1" if routed_to_candidate("iris", k, 0.5) else "2" for k in keys}
    assert set(expected.values()) == {"1", "2"}
    for _ in range(2):  # the second round: retries, answered from the stored answers by the same version
        assert {k: client.predict("iris", IRIS_ROW, request_id=k).model_version for k in keys} == expected
    seen = tallies(canaries, wait_for_compared=sum(v == "1" for v in expected.values()))
    assert seen["candidate_calls"] == 2 * sum(v == "1" for v in expected.values())
    assert seen["serving_calls"] == 2 * sum(v == "2" for v in expected.values())
    # only the first round was scored (the retries are replays); RandomForest and LogisticRegression agree here
    assert seen["compared"] == seen["agreed"] == sum(v == "1" for v in expected.values())


def test_batches_and_matrices_go_to_one_version_whole(canary):
    _, client = canary
    for i in range(20):
        rows = [(IRIS_ROW, f"b{i}-{j}") for j in range(3)]
        answers = client.predict_batch("iris", rows)
        assert len({p.model_version for p in answers}) == 1
        assert answers[0].model_version == ("1" if routed_to_candidate("iris", f"b{i}-0", 0.5) else "2")
        scored = client.predict_matrix("iris", list(IRIS_ROW), list(IRIS_ROW.values()) * 4,
                                       request_id_prefix=f"m{i}-", row_numbers=range(4))
        assert scored.model_version == ("1" if routed_to_candidate("iris", f"m{i}-", 0.5) else "2")
    unkeyed = {client.predict("iris", IRIS_ROW).model_version for _ in range(40)}
    assert unkeyed == {"1", "2"}  # at random: both answer (a chance of 2 * 0.5**40 to fail)


def test_dropping_the_candidate_sends_every_call_to_the_serving_version(canary):
    canaries, client = canary
    canaries.hold("iris", "1", 1.0)
    assert {client.predict("iris", IRIS_ROW).model_version for _ in range(10)} == {"1"}
    canaries.drop("iris")
    assert {client.predict("iris", IRIS_ROW).model_version for _ in range(10)} == {"2"}
    assert canaries.held() == {}


def test_a_failing_candidate_is_counted_and_the_serving_version_answers(canary):
    canaries, client = canary
    canaries.hold("iris", "1", 1.0)
    candidate = canaries._held["iris"][0]

    def broken(matrix):
        raise RuntimeError("estimator exploded")

    candidate._proba = broken
    answers = [client.predict("iris", IRIS_ROW, request_id=f"broken-{i}") for i in range(5)]
    answers += client.predict_batch("iris", [(IRIS_ROW, f"broken-b{j}") for j in range(3)])
    assert {p.model_version for p in answers} == {"2"}  # no client call failed
    seen = tallies(canaries)
    assert seen["candidate_calls"] == 6 and seen["candidate_errors"] == 6
    assert "compared" not in seen  # the serving version's own answers are not compared with themselves
