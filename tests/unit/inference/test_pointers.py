"""Serving pointers: how a reload in one process reaches the others (inference/models/pointers.py)."""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry

from inference.metrics import ServerMetrics
from inference.models.pointers import POINTER, ServingPointers
from inference.models.registry import ModelRegistry
from inference.models.store import ModelStore


def registry_for(root) -> ModelRegistry:
    registry = ModelRegistry(ModelStore(root), ServerMetrics(CollectorRegistry()))
    registry.load_all()
    return registry


def test_a_published_pointer_is_applied_by_another_registry(model_store):
    here, there = registry_for(model_store), registry_for(model_store)
    assert here.get("iris").version == there.get("iris").version == "2"
    here.reload("iris", "1")
    ServingPointers(here).publish("iris", "1")
    assert (model_store / "iris" / POINTER).read_text() == "1"
    assert ModelStore(model_store).versions("iris") == ["2", "1"], "the pointer is not a version"
    ServingPointers(there).apply()
    assert there.get("iris").version == "1"
    assert registry_for(model_store).get("iris").version == "2", "load_all alone still loads the newest"
    fresh = registry_for(model_store)
    ServingPointers(fresh).apply()
    assert fresh.get("iris").version == "1", "a process started later follows the pointer"


def test_an_unloadable_pointer_keeps_the_serving_version_and_warns_once(model_store, caplog):
    registry = registry_for(model_store)
    pointers = ServingPointers(registry)
    (model_store / "iris" / POINTER).write_text("9")
    with caplog.at_level(logging.WARNING, logger="inference.models.pointers"):
        pointers.apply()
        pointers.apply()
    assert registry.get("iris").version == "2"
    assert len([r for r in caplog.records if "cannot be loaded" in r.getMessage()]) == 1
