"""The SDK's top-level names: `__all__` (spelled out for type checkers) is exactly what the lazy loader serves."""
from __future__ import annotations

import predmesh


def test_all_names_exactly_the_lazily_loaded_names():
    assert len(predmesh.__all__) == len(set(predmesh.__all__))
    assert set(predmesh.__all__) == set(predmesh._WHERE)


def test_every_exported_name_loads_from_its_module():
    for name in predmesh.__all__:
        value = getattr(predmesh, name)
        assert value.__name__ == name and value.__module__ == predmesh._WHERE[name]
