"""The SDK's top-level names: `__all__` is exactly what the lazy loader serves, plus the eager `__version__`."""
from __future__ import annotations

import predmesh
from predmesh._version import __version__

EAGER = {"__version__"}


def test_all_names_exactly_the_lazily_loaded_names():
    assert len(predmesh.__all__) == len(set(predmesh.__all__))
    assert set(predmesh.__all__) == set(predmesh._WHERE) | EAGER


def test_every_exported_name_loads_from_its_module():
    for name in set(predmesh.__all__) - EAGER:
        value = getattr(predmesh, name)
        assert value.__name__ == name and value.__module__ == predmesh._WHERE[name]
    assert predmesh.__version__ == __version__
