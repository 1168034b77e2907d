"""Crafted decision-tree artifacts with a valid hash: refused before compiled code follows their indices."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from inference.errors import ReloadFailed, UntrustedArtifact
from inference.metrics import ServerMetrics
from inference.models.loader import load_estimator
from inference.models.manifest import decode
from inference.models.registry import ModelRegistry
from inference.models.store import ModelStore
from inference.models.trees import check_trees
from tests.support import artifacts


def _load(path):
    return load_estimator(path, decode((path / "metadata.json").read_bytes(), None))


def test_genuine_forests_pass_the_structure_checks(model_store):
    estimator = _load(model_store / "iris" / "1")  # RandomForest(100)
    assert check_trees(estimator) == 100


@pytest.mark.parametrize("defect", sorted(artifacts.TREE_DEFECTS))
def test_each_structural_defect_is_refused_and_serving_is_unchanged(model_store, defect):
    bad = artifacts.crafted_forest(model_store, "iris", "1", "3", artifacts.TREE_DEFECTS[defect], trees=3)
    with pytest.raises(UntrustedArtifact, match="tree 0 of DecisionTreeClassifier"):
        _load(bad)
    registry = ModelRegistry(ModelStore(model_store), ServerMetrics(CollectorRegistry()))
    registry.load_all()  # the crafted version 3 is the newest: start-up falls back to version 2
    assert registry.get("iris").version == "2"
    with pytest.raises(ReloadFailed):
        registry.reload("iris", "3")
    assert registry.get("iris").version == "2"
