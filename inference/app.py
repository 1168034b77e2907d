"""Wiring of optional parts (persistence) from the environment, for the entry point."""
from __future__ import annotations

from collections.abc import Mapping

from inference.recorder import NullRecorder, Recorder


def build_recorder(environ: Mapping[str, str]) -> Recorder:
    """The prediction recorder configured by PREDMESH_* variables (persistence is added by the database layer)."""
    return NullRecorder()
