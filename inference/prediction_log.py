"""The prediction log: a Recorder that stores records off the hot path in batches, spooling to disk while the
database is down or slow, and (durable mode) acknowledging only once a record is fsynced to the spool."""
from __future__ import annotations

import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from database.connect import DatabaseUnavailable, RejectedData
from database.records import PredictionBatch, PredictionRecord, Stored, as_rows, row_count
from inference.errors import Overloaded
from inference.spool import Spool, SpoolFull, encode

log = logging.getLogger(__name__)
MODES = ("off", "async", "durable")
REPLAY_BYTES = 8 * 1024 * 1024  # a replay reads at most about this much of the spool at a time (bulk documents)


def to_doc(r: Stored) -> dict:
    """The spool document of a record, or of a whole PredictionBatch (one document for its rows: its number
    columns as base64 of little-endian float64, exact and cheap)."""
    if type(r) is PredictionBatch:
        return {"prediction_ids": r.prediction_ids, "request_ids": r.request_ids, "model": r.model,
                "model_version": r.model_version, "feature_names": r.feature_names,
                "features": _pack(r.features), "classes": r.classes, "labels": r.labels.tolist(),
                "probabilities": _pack(r.probabilities), "transport": r.transport, "latency_ms": r.latency_ms,
                "created_at": r.created_at}
    # by hand: dataclasses.asdict deep-copies recursively and is several times slower on this hot path
    return {"prediction_id": r.prediction_id, "request_id": r.request_id, "model": r.model,
            "model_version": r.model_version, "features": r.features, "label": r.label,
            "probabilities": r.probabilities, "transport": r.transport, "latency_ms": r.latency_ms,
            "created_at": r.created_at}


def from_doc(doc: dict) -> Stored:
    """The record (or batch) of a spool document; TypeError/ValueError when the document is neither."""
    if "feature_names" not in doc:
        return PredictionRecord(**doc)
    n, names, classes = len(doc["prediction_ids"]), tuple(doc["feature_names"]), tuple(doc["classes"])
    features = _unpack(doc["features"], n, len(names))
    probabilities = _unpack(doc["probabilities"], n, len(classes))
    labels = np.array(doc["labels"], dtype=np.int64)
    if len(doc["request_ids"]) != n or labels.shape != (n,):
        raise ValueError(f"a batch of {n} prediction ids with {len(doc['request_ids'])} request ids and "
                         f"{len(labels)} labels")
    return PredictionBatch(
        prediction_ids=doc["prediction_ids"], request_ids=doc["request_ids"], model=doc["model"],
        model_version=doc["model_version"], feature_names=names, features=features, classes=classes, labels=labels,
        probabilities=probabilities, transport=doc["transport"], latency_ms=doc["latency_ms"],
        created_at=doc["created_at"])


def _pack(matrix: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(matrix, dtype="<f8").tobytes()).decode()


def _unpack(text: str, rows: int, columns: int) -> np.ndarray:
    values = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f8")
    if values.size != rows * columns:
        raise ValueError(f"{values.size} values for {rows} rows of {columns}")
    return values.astype(np.float64).reshape(rows, columns)


class PredictionLog:
    """Recorder for modes async and durable.

    async: record() queues in memory (bounded); a writer thread bulk-inserts batches; a batch the database
    does not take goes to the spool and is replayed when the database is back. Records still in memory are
    lost if the process is killed (not on a graceful stop).
    durable: record() appends to the spool with group commit and returns after the fsync; the writer thread
    inserts from the spool. An OK answer therefore means the record survives kill -9. The spool is the truth, but
    the writer need not read it back: once synced, the records are also kept in memory (bounded) with their spool
    positions, and the writer inserts those and consumes the spool up to them, as long as they continue exactly
    where the spool's unconsumed data starts; otherwise (after a restart, an outage, or memory full) it replays
    from the spool itself.
    Either way, when the spool is full record() raises Overloaded (RESOURCE_EXHAUSTED): no answer without a record.
    """

    def __init__(self, spool: Spool, insert: Callable[[Sequence[Stored]], object], *, durable: bool,
                 metrics=None, batch_size: int = 500, flush_interval_s: float = 0.05, max_queue: int = 10_000,
                 retry_interval_s: float = 1.0, prepare: Callable[[], None] | None = None, writers: int = 1):
        self.spool = spool
        self.durable = durable
        self._insert = insert
        self._metrics = metrics
        self._batch_size = batch_size
        self._flush_interval = flush_interval_s
        self._max_queue = max_queue
        self._retry_interval = retry_interval_s
        self._prepare = prepare
        self._writers = max(1, writers)  # durable: batches stored at once (each insert on its own connection)
        self._parallel: ThreadPoolExecutor | None = None
        self._queue: deque[Stored] = deque()
        self._queued_rows = 0  # rows in _queue (a PredictionBatch holds many)
        # durable: (start, end, records, rows) of synced appends, in spool order (a cache of the spool's tail)
        self._synced: deque[tuple[tuple[int, int], tuple[int, int], Sequence[Stored], int]] = deque()
        self._synced_records = 0
        if durable:
            spool.on_synced = self._on_synced
        self._held: list[Stored] = []  # async: a batch neither the DB nor the full spool took
        self._cv = threading.Condition()
        self._stopping = False
        self._db_ok = True
        self._next_try = 0.0
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    # -- the Recorder protocol (called by up to `workers` handler threads) ------------------------------------
    def record(self, records: Sequence[Stored]) -> None:
        if not records:
            return
        if self.durable:
            self._spool([to_doc(r) for r in records], tag=records)
            return
        rows = row_count(records)
        with self._cv:
            if self._queued_rows + rows <= self._max_queue and not self._held:
                self._queue.extend(records)
                self._queued_rows += rows
                if self._queued_rows >= self._batch_size:
                    self._cv.notify()
                return
        self._spool([to_doc(r) for r in records])  # the database is behind: spill (durable) instead

    def _spool(self, docs: list[dict], tag=None) -> None:
        try:
            self.spool.append([encode(d) for d in docs], tag)
        except SpoolFull as exc:
            raise Overloaded(f"prediction log spool is full and the database is behind; retry later ({exc})") \
                from None
        except OSError as exc:
            raise Overloaded(f"prediction log spool cannot be written ({exc.strerror}); retry later") from None

    def _on_synced(self, entries) -> None:
        """Spool flusher: these records are on disk; keep them for the writer unless memory is full."""
        with self._cv:
            for start, end, records in ((s, e, t) for t, s, e in entries):
                rows = row_count(records)
                if self._synced_records + rows > self._max_queue:
                    break  # the writer replays them from the spool instead
                self._synced.append((start, end, records, rows))
                self._synced_records += rows
            if self._synced_records >= self._batch_size:
                self._cv.notify()

    def _take_synced(self, groups: int = 1) -> tuple[list[tuple[list[Stored], tuple[int, int]]], bool]:
        """Up to `groups` consecutive batches (about batch_size rows each) of synced records that continue exactly
        at the spool's unconsumed start, each with the spool position after it; and whether the spool holds synced
        records before (or instead of) what memory has: a replay is needed."""
        synced = self.spool.synced_bytes()  # first: anything synced after this is also in memory
        cursor = self.spool.position()
        taken: list[tuple[list[Stored], tuple[int, int]]] = []
        with self._cv:
            while self._synced and self._synced[0][1] <= cursor:  # already consumed (replayed)
                self._synced_records -= self._synced.popleft()[3]
            while len(taken) < groups and self._synced and self._synced[0][0] == cursor:
                batch: list[Stored] = []
                rows = 0
                while self._synced and self._synced[0][0] == cursor and rows < self._batch_size:
                    _, cursor, records, n = self._synced.popleft()
                    self._synced_records -= n
                    rows += n
                    batch.extend(records)
                taken.append((batch, cursor))
            gap = not taken and (bool(self._synced) or synced > 0)
        return taken, gap

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded so far is in the database (True) or timeout passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            self._cv.notify()
        while time.monotonic() < deadline:
            with self._cv:
                idle = not self._queue and not self._held and not self._busy
            if idle and self.spool.unconsumed_bytes() == 0:
                return True
            time.sleep(0.02)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Flush what the database takes within timeout; spool the rest (nothing accepted is dropped)."""
        if self._db_ok:
            self.flush(timeout)
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout)
        if self._parallel is not None:
            self._parallel.shutdown(wait=True)
        with self._cv:
            rest = self._held + list(self._queue)
            self._held, self._queue, self._queued_rows = [], deque(), 0
            self._synced.clear()  # durable: already in the spool
            self._synced_records = 0
        if rest:
            try:
                self.spool.append([encode(to_doc(r)) for r in rest])
                log.warning("prediction log closed with %d records not in the database: kept in the spool",
                            len(rest))
            except (SpoolFull, OSError) as exc:
                log.error("prediction log closed: %d records could not be spooled and are lost: %s", len(rest), exc)
        self.spool.close()

    # -- the writer thread -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._stopping:
                    self._cv.wait_for(lambda: self._stopping or self._held or self._queued_rows >= self._batch_size
                                      or self._synced_records >= self._batch_size, self._flush_interval)
                if self._stopping:
                    return
                batch = self._held or self._pop_queued()
                self._held = []
                self._busy = True
            try:
                if batch:
                    self._write_or_spill(batch)
                    batch = []
                if self.durable and self._db_ok:
                    if self._store_synced() and self._spool_ready():
                        self._replay_some()
                elif self._spool_ready():
                    self._replay_some()
            except Exception:  # the writer must survive anything; what it held is kept and retried
                log.exception("prediction log writer: unexpected error")
                if batch:
                    with self._cv:
                        self._held = batch + self._held
                time.sleep(self._retry_interval)
            finally:
                with self._cv:
                    self._busy = False
                self._observe()

    def _pop_queued(self) -> list[Stored]:
        """Up to about batch_size rows from the async queue (under the lock)."""
        batch, rows = [], 0
        while self._queue and rows < self._batch_size:
            item = self._queue.popleft()
            batch.append(item)
            rows += row_count((item,))
        self._queued_rows -= rows
        return batch

    def _store_synced(self) -> bool:
        """Durable: insert synced records from memory while they continue where the spool's unconsumed data
        starts. True when the spool must be replayed instead (records memory does not hold, or the database
        failed)."""
        for _ in range(20):  # bounded, like a replay
            # a backlog goes in up to `writers` batches at once, each on its own connection (the database's work
            # per row is the larger part, and it runs in parallel); the spool is consumed once all are stored
            taken, gap = self._take_synced(1 if self._prepare is not None else self._writers)
            if not taken:
                return gap
            if not self._store_all([records for records, _ in taken]):
                with self._cv:  # the spool has them: replay once the database is back
                    self._synced.clear()
                    self._synced_records = 0
                return True
            self.spool.consume(taken[-1][1])
        return False

    def _store_all(self, groups: list[list[Stored]]) -> bool:
        """Store groups of records at once (the first in this thread, the others in the pool: each on its own
        connection); True when all were stored. One that fails leaves the others stored: the caller offers them
        again (duplicates are ignored)."""
        if self._prepare is not None and len(groups) > 1:  # the schema first, once
            groups = [[r for g in groups for r in g]]
        others = [self._pool().submit(self._store, g) for g in groups[1:]]
        stored = [self._store(groups[0])] + [f.result() for f in others]
        return all(stored)

    def _split(self, records: list[Stored]) -> list[list[Stored]]:
        """records in up to `writers` consecutive groups of about equal row counts."""
        if self._writers == 1:
            return [records]
        total = row_count(records)
        share = max(self._batch_size, -(-total // self._writers))
        groups: list[list[Stored]] = [[]]
        rows = 0
        for r in records:
            if rows >= share and len(groups) < self._writers:
                groups.append([])
                rows = 0
            groups[-1].append(r)
            rows += row_count((r,))
        return groups

    def _pool(self) -> ThreadPoolExecutor:
        if self._parallel is None:
            self._parallel = ThreadPoolExecutor(self._writers - 1, thread_name_prefix="prediction-log-writer")
        return self._parallel

    def _spool_ready(self) -> bool:
        return self.spool.unconsumed_bytes() > 0 and (self._db_ok or time.monotonic() >= self._next_try)

    def _write_or_spill(self, batch: list[Stored]) -> None:
        if (self._db_ok or time.monotonic() >= self._next_try) and self._store(batch):
            return
        try:
            self.spool.append([encode(to_doc(r)) for r in batch])
        except (SpoolFull, OSError) as exc:
            log.error("database down and spool full (%s): holding %d records in memory", exc, len(batch))
            with self._cv:
                self._held = batch + self._held
            time.sleep(min(self._retry_interval, 0.2))

    def _replay_some(self) -> None:
        for _ in range(20):  # bounded, so fresh records are not starved
            cursor, docs = self.spool.read(self._batch_size, REPLAY_BYTES)
            if not docs:
                self.spool.consume(cursor)
                return
            records = []
            for doc in docs:
                try:
                    records.append(from_doc(doc))
                except (TypeError, ValueError, KeyError) as exc:  # checks out but is not a record: never block on it
                    self.spool.quarantine_record(doc, f"not a prediction record: {exc}")
            if records and not self._store_all(self._split(records)):
                return
            self.spool.consume(cursor)
            if not self.durable and self._queue:
                return

    def _store(self, batch: list[Stored]) -> bool:
        """Insert a batch; False when the database is unavailable (the caller keeps the records)."""
        try:
            if self._prepare is not None:
                self._prepare()
                self._prepare = None
            self._insert(batch)
        except DatabaseUnavailable as exc:
            self._failed(exc)
            return False
        except RejectedData as exc:
            try:
                quarantined = self._isolate(batch, exc)
            except DatabaseUnavailable as exc2:  # the stored parts are stored; the batch is retried (idempotent)
                self._failed(exc2)
                return False
            self._recovered(row_count(batch) - quarantined)
            return True
        self._recovered(row_count(batch))
        return True

    def _isolate(self, batch: Sequence[Stored], exc: Exception) -> int:
        """Some row is refused by the database itself: bisect the batch (its bulk batches split into rows) so every
        other row is stored and each refused row goes to the spool's quarantine alone (counted); returns how many
        were quarantined."""
        rows = as_rows(batch)
        if len(rows) == 1:
            log.error("prediction %s (request %.64s) refused by the database (%s): quarantined",
                      rows[0].prediction_id, rows[0].request_id, exc)
            self.spool.quarantine_record(to_doc(rows[0]), str(exc))
            if self._metrics:
                self._metrics.rows_quarantined.inc()
            return 1
        half = len(rows) // 2
        quarantined = 0
        for part in (rows[:half], rows[half:]):
            try:
                self._insert(part)
            except RejectedData as inner:
                quarantined += self._isolate(part, inner)
        return quarantined

    def _failed(self, exc: Exception) -> None:
        if self._db_ok:
            log.warning("database write failed (%s): spooling predictions, retrying every %.1f s", exc,
                        self._retry_interval)
        self._db_ok = False
        self._next_try = time.monotonic() + self._retry_interval
        if self._metrics:
            self._metrics.db_write_failures.inc()

    def _recovered(self, n: int) -> None:
        if not self._db_ok:
            log.info("database writes succeed again: replaying the spool")
        self._db_ok = True
        if self._metrics:
            self._metrics.rows_written.inc(n)

    def _observe(self) -> None:
        if self._metrics:
            self._metrics.spool_bytes.set(self.spool.unconsumed_bytes())
            self._metrics.spool_age.set(self.spool.oldest_age())
            self._metrics.queue_depth.set(self._queued_rows + self._synced_records)
