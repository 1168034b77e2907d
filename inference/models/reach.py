"""Every object reachable from a loaded estimator, with the object that holds it: what the structure checks scan.

The walk descends into whatever a skops archive can rebuild: objects with attributes (estimators and the plain
helper classes scikit-learn keeps inside them), lists, tuples, dicts, object arrays and functools.partial. It is
bounded, so an artifact cannot make the scan itself unbounded.
"""
from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import numpy as np

from inference.errors import UntrustedArtifact

MAX_OBJECTS = 2_000_000  # far above any real model (a 1000-stage, 10-class HistGradientBoosting: ~60k)
_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, str, bytes)


@dataclass(frozen=True)
class Reached:
    """An object found in the estimator and the nearest object with attributes that holds it (None: the root)."""

    obj: object
    holder: object


def reachable(root) -> list[Reached]:
    """Every distinct object reachable from root (root first), each with its holder."""
    found: list[Reached] = []
    seen: set[int] = set()
    stack: list[tuple[object, object]] = [(root, None)]
    while stack:
        obj, holder = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, (bool, int, float, complex)):
            continue
        if len(seen) >= MAX_OBJECTS:
            raise UntrustedArtifact("the estimator nests too many objects to check")
        seen.add(id(obj))
        found.append(Reached(obj, holder))
        children: list[object] = []
        inner = holder
        if isinstance(obj, _OPAQUE):
            continue
        if isinstance(obj, functools.partial):
            children = [obj.func, *obj.args, *(obj.keywords or {}).values()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children = list(obj)
        elif isinstance(obj, dict):
            children = [*obj.keys(), *obj.values()]
        elif isinstance(obj, np.ndarray):
            children = list(obj.ravel()) if obj.dtype == object else []
        elif hasattr(obj, "__dict__"):
            children = list(vars(obj).values())
            inner = obj
        stack.extend(reversed([(child, inner) for child in children]))
    return found


def of_type(found: list[Reached], cls) -> list[Reached]:
    """The reached objects that are instances of cls."""
    return [r for r in found if isinstance(r.obj, cls)]
