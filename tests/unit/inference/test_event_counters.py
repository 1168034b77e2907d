"""The event counters the alerts take `increase()` of are exported at 0 from a model's first load.

Prometheus reads a series that first appears at 1 as no increase at all, so a counter created by its first event
never fires `increase(...) > 0`: live, the first canary rolled back (PredmeshCanaryRolledBack) and the first reload
refused (PredmeshReloadFailed) of each server process stayed silent, while alerts_test.yml (whose series start at
0) passed."""
from __future__ import annotations

from prometheus_client import CollectorRegistry

from inference.metrics import ServerMetrics


def test_event_counters_exist_at_zero_once_a_model_serves():
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)
    assert registry.get_sample_value("predmesh_reload_total", {"model": "iris", "result": "failure"}) is None
    metrics.serving("iris", "1", "a" * 64)
    for name, labels in (("predmesh_reload_total", {"result": "failure"}),
                         ("predmesh_reload_total", {"result": "success"}),
                         ("predmesh_canary_decisions_total", {"decision": "rollback"}),
                         ("predmesh_canary_decisions_total", {"decision": "promote"}),
                         ("predmesh_desired_state_failures_total", {})):
        assert registry.get_sample_value(name, {"model": "iris", **labels}) == 0.0, (name, labels)


def test_a_new_version_keeps_the_counts():
    registry = CollectorRegistry()
    metrics = ServerMetrics(registry)
    metrics.serving("iris", "1", "a" * 64)
    metrics.canary_decisions.labels("iris", "rollback").inc()
    metrics.serving("iris", "2", "b" * 64)
    assert registry.get_sample_value("predmesh_canary_decisions_total", {"model": "iris", "decision": "rollback"}) == 1
