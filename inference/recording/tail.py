"""Durable mode's cache of the spool's tail: records already synced to the spool, kept in memory (bounded) with
their spool positions, so the writer inserts them without reading the spool back."""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from database.records import Stored, row_count

Position = tuple[int, int]


class SyncedTail:
    """Bounded by max_rows. Call every method with `cv` held: the prediction log's one lock, on which its writer
    thread waits for this tail, the async queue and a stop at once."""

    def __init__(self, cv: threading.Condition, max_rows: int, batch_size: int):
        self._cv = cv
        self._max_rows = max_rows
        self._batch_size = batch_size
        # (start, end, records, rows) of synced appends, in spool order
        self._entries: deque[tuple[Position, Position, Sequence[Stored], int]] = deque()
        self.rows = 0  # rows in _entries

    def add(self, entries) -> None:
        """The spool flusher's (tag, start, end) entries, on disk now: keep their records for the writer unless
        memory is full (the writer then replays them from the spool), and wake it once a batch is ready."""
        for start, end, records in ((s, e, t) for t, s, e in entries):
            rows = row_count(records)
            if self.rows + rows > self._max_rows:
                break  # the writer replays them from the spool instead
            self._entries.append((start, end, records, rows))
            self.rows += rows
        if self.rows >= self._batch_size:
            self._cv.notify()

    def ready(self) -> bool:
        """Whether a batch's worth of rows waits here."""
        return self.rows >= self._batch_size

    def take(self, cursor: Position, synced: int, groups: int) -> tuple[list[tuple[list[Stored], Position]], bool]:
        """Up to `groups` consecutive batches (about batch_size rows each) that continue exactly at `cursor` (the
        spool's unconsumed start), each with the spool position after it; and whether the spool holds synced
        records before (or instead of) what memory has, so a replay is needed (`synced`: the spool's synced bytes,
        read before `cursor`). Entries the spool has consumed already (replayed) are dropped."""
        taken: list[tuple[list[Stored], Position]] = []
        while self._entries and self._entries[0][1] <= cursor:  # already consumed (replayed)
            self.rows -= self._entries.popleft()[3]
        while len(taken) < groups and self._entries and self._entries[0][0] == cursor:
            batch: list[Stored] = []
            rows = 0
            while self._entries and self._entries[0][0] == cursor and rows < self._batch_size:
                _, cursor, records, n = self._entries.popleft()
                self.rows -= n
                rows += n
                batch.extend(records)
            taken.append((batch, cursor))
        gap = not taken and (bool(self._entries) or synced > 0)
        return taken, gap

    def clear(self) -> None:
        """Forget every entry (the spool has them all)."""
        self._entries.clear()
        self.rows = 0
