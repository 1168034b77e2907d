"""How the servicer hands answered predictions to persistence; the implementations live beside it."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from database.records import Stored


class Recorder(Protocol):
    """Takes records of answered predictions.

    record() returns once the records are accepted (queued, or durable in durable mode) and raises
    inference.errors.Overloaded when they cannot be accepted; the caller must then not answer OK.
    """

    def record(self, records: Sequence[Stored]) -> None: ...

    def close(self) -> None: ...


class NullRecorder:
    """Stores nothing: persistence switched off."""

    def record(self, records: Sequence[Stored]) -> None:
        return None

    def close(self) -> None:
        return None
