"""Wiring of optional parts (persistence) from the environment, for the entry point."""
from __future__ import annotations

from collections.abc import Mapping

from inference.recorder import Recorder


def build_persistence(environ: Mapping[str, str]):
    """Database, prediction log and analytics configured by PREDMESH_* variables (inference.persistence)."""
    from inference.persistence import build_persistence as build
    return build(environ)


def build_recorder(environ: Mapping[str, str]) -> Recorder:
    """The prediction recorder configured by PREDMESH_* variables (without the analytics service)."""
    return build_persistence(environ).recorder
