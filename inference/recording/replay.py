"""Replay: records the spool holds (spilled while the database was down, or synced but not kept in memory) read
back in bounded slices and stored; a document that is not a record goes to quarantine and never blocks."""
from __future__ import annotations

from collections.abc import Callable

from inference.recording.documents import from_doc
from inference.recording.parallel import ParallelWriters
from inference.recording.spool import Spool

REPLAY_BYTES = 8 * 1024 * 1024  # a replay reads at most about this much of the spool at a time (bulk documents)


def replay_some(spool: Spool, writers: ParallelWriters, batch_size: int, yield_now: Callable[[], bool]) -> None:
    """Store up to 20 slices of the spool (batch_size records each), consuming each once stored; stops early when
    the database fails (the slice stays in the spool), the spool is empty, or yield_now() says fresh records wait."""
    for _ in range(20):  # bounded, so fresh records are not starved
        cursor, docs = spool.read(batch_size, REPLAY_BYTES)
        if not docs:
            spool.consume(cursor)
            return
        records = []
        for doc in docs:
            try:
                records.append(from_doc(doc))
            except (TypeError, ValueError, KeyError) as exc:  # checks out but is not a record: never block on it
                spool.quarantine_record(doc, f"not a prediction record: {exc}")
        if records and not writers.store_all(writers.split(records)):
            return
        spool.consume(cursor)
        if yield_now():
            return
