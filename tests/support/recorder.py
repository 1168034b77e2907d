"""A Recorder that keeps what it is given in a list, for in-process servers in tests."""
from __future__ import annotations

from collections.abc import Sequence

from database.records import PredictionBatch, Stored


class ListRecorder:
    """Records in memory: `records` in the order given; `request_ids()` flattens bulk batches."""

    def __init__(self) -> None:
        self.records: list[Stored] = []

    def record(self, records: Sequence[Stored]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        pass

    def request_ids(self) -> list[str]:
        out: list[str] = []
        for r in self.records:
            out.extend(r.request_ids if isinstance(r, PredictionBatch) else [r.request_id])
        return out
