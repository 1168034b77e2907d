"""Async mode's memory: records queued for the database writer, and a batch held back that neither the
database nor the full spool took."""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from database.records import Stored, row_count


class RecordQueue:
    """Bounded by max_rows (a PredictionBatch counts its rows). Call every method with `cv` held: the prediction
    log's one lock, on which its writer thread waits for this queue, the synced tail and a stop at once."""

    def __init__(self, cv: threading.Condition, max_rows: int, batch_size: int):
        self._cv = cv
        self._max_rows = max_rows
        self._batch_size = batch_size
        self._items: deque[Stored] = deque()
        self.rows = 0  # rows in _items
        self.held: list[Stored] = []  # a batch neither the database nor the full spool took; it goes first

    def offer(self, records: Sequence[Stored], rows: int) -> bool:
        """Queue records (`rows` rows) and wake the writer once a batch is ready; False, queuing nothing, when they
        do not fit or a batch is held (the database is behind: the caller spools them instead)."""
        if self.rows + rows > self._max_rows or self.held:
            return False
        self._items.extend(records)
        self.rows += rows
        if self.rows >= self._batch_size:
            self._cv.notify()
        return True

    def ready(self) -> bool:
        """Whether the writer has work here: a held batch, or a batch's worth of rows."""
        return bool(self.held) or self.rows >= self._batch_size

    def take(self) -> list[Stored]:
        """The held batch if there is one, else up to about batch_size rows from the queue (maybe none)."""
        if self.held:
            batch, self.held = self.held, []
            return batch
        batch, rows = [], 0
        while self._items and rows < self._batch_size:
            item = self._items.popleft()
            batch.append(item)
            rows += row_count((item,))
        self.rows -= rows
        return batch

    def hold(self, batch: list[Stored]) -> None:
        """Keep a batch the writer could not place, ahead of any batch held already."""
        self.held = batch + self.held

    def empty(self) -> bool:
        return not self._items and not self.held

    def queued(self) -> bool:
        """Whether records wait in the queue (read without the lock by a replay, as a hint to yield to them)."""
        return bool(self._items)

    def drain(self) -> list[Stored]:
        """Everything held and queued (held first), leaving both empty."""
        rest = self.held + list(self._items)
        self.held, self._items, self.rows = [], deque(), 0
        return rest
