"""cpu_plan: which CPU each worker process of a group is pinned to (PREDMESH_PIN_WORKERS)."""
from __future__ import annotations

import pytest

from inference.process import workers
from inference.settings import ServerSettings


@pytest.fixture
def allowed(monkeypatch):
    def set_allowed(cpus):
        monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: set(cpus))
    return set_allowed


def test_one_cpu_each_round_robin_over_the_allowed_set(allowed):
    allowed({2, 5, 7})  # e.g. a cpuset: not 0..n-1
    assert workers.cpu_plan(2, True) == [{2}, {5}]
    assert workers.cpu_plan(4, True) == [{2}, {5}, {7}, {2}]


def test_no_pinning_when_switched_off_or_only_one_cpu(allowed):
    allowed({0, 1})
    assert workers.cpu_plan(2, False) == [None, None]
    allowed({3})
    assert workers.cpu_plan(2, True) == [None, None]


def test_setting_is_read_from_the_environment():
    assert ServerSettings.from_env({}).pin_workers is True
    assert ServerSettings.from_env({"PREDMESH_PIN_WORKERS": "0"}).pin_workers is False
