"""predmesh.faults: PREDMESH_FAULTS arms named points; unarmed they do nothing."""
from __future__ import annotations

import os
import signal
import time

import pytest

from predmesh import faults
from predmesh.env import ConfigError
from predmesh.faults import fault_point


@pytest.fixture(autouse=True)
def disarmed():
    faults.configure("")
    yield
    faults.configure("")


@pytest.fixture
def kills(monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append(sig))  # the os module predmesh.faults calls
    return sent


def test_unarmed_points_do_nothing(kills):
    for name in faults.POINTS:
        assert fault_point(name, wait=lambda s: pytest.fail("waited")) is False
    assert kills == []


def test_a_kill_point_kills_the_nth_time_only_that_point(kills):
    faults.configure("consumer.answered:3")
    fault_point("consumer.confirmed")
    fault_point("consumer.answered")
    fault_point("consumer.answered")
    assert kills == []
    fault_point("consumer.answered")
    assert kills == [signal.SIGKILL]


def test_a_kill_point_without_a_count_kills_the_first_time(kills):
    faults.configure(" consumer.confirmed ")
    fault_point("consumer.confirmed")
    assert kills == [signal.SIGKILL]


def test_a_delay_point_waits_its_milliseconds_through_the_callers_wait():
    faults.configure("batch.chunk_delay_ms:50,inference.predict_delay_ms:1500")
    waits: list[float] = []

    def cut_short(seconds: float) -> bool:
        waits.append(seconds)
        return True

    def waited_out(seconds: float) -> bool:
        waits.append(seconds)
        return False
    assert fault_point("inference.predict_delay_ms", wait=cut_short) is True
    assert fault_point("batch.chunk_delay_ms", wait=waited_out) is False
    assert waits == [1.5, 0.05]


def test_a_delay_point_sleeps_without_a_wait(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the time module predmesh.faults calls
    faults.configure("batch.chunk_delay_ms:250")
    fault_point("batch.chunk_delay_ms")
    assert slept == [0.25]


def test_configure_replaces_what_was_armed(kills):
    faults.configure("consumer.answered:1")
    faults.configure("batch.chunk_delay_ms:1")
    fault_point("consumer.answered")
    assert kills == []


@pytest.mark.parametrize(("spec", "error"), [
    ("consumer.anwsered:3", "unknown fault point 'consumer.anwsered'"),
    ("consumer.answered:x", "must be a number"),
    ("consumer.answered:0", "a count >= 1"),
    ("consumer.answered:1.5", "a count >= 1"),
    ("batch.chunk_delay_ms:-1", "milliseconds >= 0"),
])
def test_a_bad_spec_is_a_config_error_naming_the_variable(spec, error):
    with pytest.raises(ConfigError, match="PREDMESH_FAULTS") as info:
        faults.configure(spec)
    assert error in str(info.value)
