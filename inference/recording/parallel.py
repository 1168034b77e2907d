"""Parallel writers: a backlog stored as up to `writers` batches at once, each on its own thread and so on its own
database connection (the database's work per row is the larger part, and it runs in parallel)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from database.records import Stored, row_count
from inference.recording.writer import DatabaseWriter


class ParallelWriters:
    """The first group is stored in the calling thread, the others in a pool made on first use."""

    def __init__(self, writer: DatabaseWriter, writers: int, batch_size: int):
        self._writer = writer
        self.count = max(1, writers)
        self._batch_size = batch_size
        self._pool: ThreadPoolExecutor | None = None

    def split(self, records: list[Stored]) -> list[list[Stored]]:
        """records in up to `writers` consecutive groups of about equal row counts."""
        if self.count == 1:
            return [records]
        total = row_count(records)
        share = max(self._batch_size, -(-total // self.count))
        groups: list[list[Stored]] = [[]]
        rows = 0
        for r in records:
            if rows >= share and len(groups) < self.count:
                groups.append([])
                rows = 0
            groups[-1].append(r)
            rows += row_count((r,))
        return groups

    def store_all(self, groups: list[list[Stored]]) -> bool:
        """Store groups of records at once; True when all were stored. One that fails leaves the others stored:
        the caller offers them again (duplicates are ignored)."""
        if self._writer.preparing and len(groups) > 1:  # the schema first, once
            groups = [[r for g in groups for r in g]]
        others = [self._executor().submit(self._writer.store, g) for g in groups[1:]]
        stored = [self._writer.store(groups[0])] + [f.result() for f in others]
        return all(stored)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.count - 1, thread_name_prefix="prediction-log-writer")
        return self._pool

    def shutdown(self) -> None:
        """Wait for stores in flight and end the pool's threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
