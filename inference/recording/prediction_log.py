"""The prediction log: a Recorder that stores records off the hot path in batches, spooling to disk while the
database is down or slow, and (durable mode) acknowledging only once a record is fsynced to the spool."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from json.encoder import encode_basestring_ascii as quote

from database.records import PredictionBatch, PredictionRecord, Stored, plain, row_count
from inference.errors import Overloaded
from inference.recording.documents import rows_in_line, to_doc
from inference.recording.parallel import ParallelWriters
from inference.recording.queue import RecordQueue
from inference.recording.replay import replay_some
from inference.recording.spool import Spool, SpoolFull, encode, encode_batch, spool_line
from inference.recording.statistics import PlannerStatistics
from inference.recording.tail import Position, SyncedTail
from inference.recording.writer import DatabaseWriter

log = logging.getLogger(__name__)


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

    Its parts own their state: the async queue (queue.py) and the synced tail (tail.py) under this log's one
    condition, the database's health and the bisection of refused rows (writer.py), the pool of parallel
    writers (parallel.py); replay.py reads the spool back. The log itself owns the writer thread and its stop.
    """

    def __init__(self, spool: Spool, insert: Callable[[Sequence[Stored]], object], *, durable: bool,
                 metrics=None, batch_size: int = 500, flush_interval_s: float = 0.05, max_queue: int = 10_000,
                 retry_interval_s: float = 1.0, prepare: Callable[[], None] | None = None, writers: int = 1,
                 statistics: PlannerStatistics | None = None, stop_drain_s: float = 10.0):
        self.spool = spool
        self._stop_drain = stop_drain_s
        self.durable = durable
        self._metrics = metrics
        self._batch_size = batch_size
        self._flush_interval = flush_interval_s
        self._retry_interval = retry_interval_s
        self._cv = threading.Condition()
        self._queue = RecordQueue(self._cv, max_queue, batch_size)  # async
        self._tail = SyncedTail(self._cv, max_queue, batch_size)  # durable: a cache of the spool's tail
        if durable:
            spool.on_synced = self._on_synced
        self._db = DatabaseWriter(spool, insert, metrics=metrics, retry_interval_s=retry_interval_s,
                                  prepare=prepare, statistics=statistics)
        # durable: batches stored at once (each insert on its own connection)
        self._writers = ParallelWriters(self._db, writers, batch_size)
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    # -- the Recorder protocol (called by up to `workers` handler threads) ------------------------------------
    def record(self, records: Sequence[Stored]) -> None:
        if not records:
            return
        if self.durable:
            self._spool([to_line(r) for r in records], tag=records)
            return
        rows = row_count(records)
        with self._cv:
            if self._queue.offer(records, rows):
                return
        self._spool([to_line(r) for r in records])  # the database is behind: spill (durable) instead

    def _spool(self, lines: list[bytes], tag=None) -> None:
        try:
            self.spool.append(lines, tag)
        except SpoolFull as exc:
            raise Overloaded(f"prediction log spool is full and the database is behind; retry later ({exc})") \
                from None
        except OSError as exc:
            raise Overloaded(f"prediction log spool cannot be written ({exc.strerror}); retry later") from None

    def _on_synced(self, entries) -> None:
        """Spool flusher: these records are on disk; keep them for the writer unless memory is full."""
        with self._cv:
            self._tail.add(entries)

    def _take_synced(self, groups: int = 1) -> tuple[list[tuple[list[Stored], Position]], bool]:
        """Up to `groups` consecutive batches of synced records that continue exactly at the spool's unconsumed
        start, each with the spool position after it; and whether a replay is needed (SyncedTail.take)."""
        synced = self.spool.synced_bytes()  # first: anything synced after this is also in memory
        cursor = self.spool.position()
        with self._cv:
            return self._tail.take(cursor, synced, groups)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded so far is in the database (True) or timeout passes (False)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            self._cv.notify()
        while time.monotonic() < deadline:
            with self._cv:
                idle = self._queue.empty() and not self._busy
            if idle and self.spool.unconsumed_bytes() == 0:
                return True
            time.sleep(0.02)
        return False

    def close(self, timeout: float | None = None) -> None:
        """On stop: drain, i.e. store what the database takes within timeout (default: the log's stop_drain_s;
        during an outage the writer keeps retrying until then, so a database back within it is drained to); spool
        the rest (nothing accepted is dropped) and say how many answered records are left in the spool, and where:
        the next server on this spool stores them."""
        deadline = time.monotonic() + (self._stop_drain if timeout is None else timeout)
        drained = self.flush(deadline - time.monotonic())
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(max(1.0, deadline - time.monotonic()))  # a store in flight ends (or fails) first
        self._writers.shutdown()
        with self._cv:
            rest = self._queue.drain()
            self._tail.clear()  # durable: already in the spool
        if rest:
            try:
                self.spool.append([to_line(r) for r in rest])
            except (SpoolFull, OSError) as exc:
                log.error("prediction log closed: %d records could not be spooled and are lost: %s", len(rest), exc)
        self._report_left(drained)
        self.spool.close()

    def _report_left(self, drained: bool) -> None:
        """The stop's last word on the records: all stored, or how many rows wait in which spool directory."""
        if drained and not self.spool.unconsumed_bytes():
            log.info("prediction log closed: every answered record is in the database")
            return
        try:
            rows = sum(rows_in_line(line) for line in self.spool.unconsumed_lines())
        except OSError as exc:
            log.error("prediction log closed with records not in the database in the spool %s (not counted: %s)",
                      self.spool.dir, exc)
            return
        log.warning("prediction log closed with %d answered records (%d bytes) not in the database: kept in the "
                    "spool %s; the next server started on this spool stores them (a record already stored is "
                    "ignored)", rows, self.spool.synced_bytes(), self.spool.dir.resolve())

    # -- the writer thread -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._stopping:
                    # the tail wakes the writer only when the database may be tried: during an outage a full tail
                    # stays ready, and waking on it would spin the thread until the retry time
                    self._cv.wait_for(lambda: self._stopping or self._queue.ready()
                                      or (self._tail.ready() and self._db.may_try()),
                                      self._flush_interval)
                if self._stopping:
                    return
                batch = self._queue.take()
                self._busy = True
            try:
                if not batch and self._db.probe_due():
                    self._db.probe()
                if batch:
                    self._write_or_spill(batch)
                    batch = []
                if self.durable and self._db.ok:
                    if self._store_synced() and self._spool_ready():
                        self._replay_some()
                elif self._spool_ready():
                    self._replay_some()
            except Exception:  # the writer must survive anything; what it held is kept and retried
                log.exception("prediction log writer: unexpected error")
                if batch:
                    with self._cv:
                        self._queue.hold(batch)
                time.sleep(self._retry_interval)
            finally:
                with self._cv:
                    self._busy = False
                self._observe()

    def _store_synced(self) -> bool:
        """Durable: insert synced records from memory while they continue where the spool's unconsumed data
        starts. True when the spool must be replayed instead (records memory does not hold, or the database
        failed)."""
        for attempt in range(20):  # bounded, like a replay
            # after the first batch, only a full one goes in at once: the rows that arrived meanwhile wait for the
            # flush interval or a full batch (the wake's rule), so a steady load is stored in batches of its rate
            # times the interval, not of its rate times an insert's time (~100 rows at 5,700 calls/s: each batch's
            # fixed cost in PostgreSQL, its statements, trigger, aggregate upsert and commit, paid ~4x as often)
            if attempt:
                with self._cv:
                    if not self._tail.ready():
                        return False
            # a backlog goes in up to `writers` batches at once, each on its own connection (the database's work
            # per row is the larger part, and it runs in parallel); the spool is consumed once all are stored
            taken, gap = self._take_synced(1 if self._db.preparing else self._writers.count)
            if not taken:
                return gap
            if not self._writers.store_all([records for records, _ in taken]):
                with self._cv:  # the spool has them: replay once the database is back
                    self._tail.clear()
                return True
            self.spool.consume(taken[-1][1])
        return False

    def _spool_ready(self) -> bool:
        return self.spool.unconsumed_bytes() > 0 and self._db.may_try()

    def _write_or_spill(self, batch: list[Stored]) -> None:
        if self._db.may_try() and self._db.store(batch):
            return
        try:
            self.spool.append([to_line(r) for r in batch])
        except (SpoolFull, OSError) as exc:
            log.error("database down and spool full (%s): holding %d records in memory", exc, len(batch))
            with self._cv:
                self._queue.hold(batch)
            time.sleep(min(self._retry_interval, 0.2))

    def _replay_some(self) -> None:
        replay_some(self.spool, self._writers, self._batch_size, lambda: not self.durable and self._queue.queued())

    def _observe(self) -> None:
        if self._metrics:
            self._metrics.spool_bytes.set(self.spool.unconsumed_bytes())
            self._metrics.spool_age.set(self.spool.oldest_age())
            self._metrics.queue_depth.set(self._queue.rows + self._tail.rows)


# Row templates of to_line's fast path: per (model, version, feature names, classes, transport), bounded by what
# is served (cleared past _MAX_TEMPLATES: versions come and go over a long life).
_templates: dict[tuple, str] = {}
_MAX_TEMPLATES = 256
_NUMBERS = frozenset((float, int))  # what a template formats with %r exactly as JSON does (not bool: True)


def _template(r: PredictionRecord) -> str | None:
    """The record's spool document as a %-format over (prediction_id, request_id, feature values, label,
    probabilities, latency_ms, created_at, then ',"request_hash":"…"' or nothing), the ids and label JSON-quoted:
    the same text as encode(to_doc(r)). None when a name is no string (the JSON encoder's own rules apply then)."""
    key = (r.model, r.model_version, tuple(r.features), tuple(r.probabilities), r.transport)
    template = _templates.get(key)
    if template is None:
        if not all(type(k) is str for k in (r.model, r.model_version, *key[2], *key[3], r.transport)):
            return None
        if len(_templates) >= _MAX_TEMPLATES:
            _templates.clear()

        def const(text: str) -> str:
            return quote(text).replace("%", "%%")

        def obj(keys) -> str:
            return "{" + ",".join(const(k) + ":%r" for k in keys) + "}"

        template = _templates[key] = (
            '{"prediction_id":%s,"request_id":%s,"model":' + const(r.model) + ',"model_version":'
            + const(r.model_version) + ',"features":' + obj(key[2]) + ',"label":%s,"probabilities":' + obj(key[3])
            + ',"transport":' + const(r.transport) + ',"latency_ms":%r,"created_at":%r%s}')
    return template


def to_line(r: Stored) -> bytes:
    """The spool line of a record or batch (spool.encode of its document; here, where the log composes the
    documents and the spool). A record whose features JSON cannot hold as they are (NaN, a missing number: null; a
    numpy scalar) has them made plain first; ±inf stays a ValueError, as before.

    Hot path in durable mode (once per answered row, before its answer): a record of finite numbers only takes a
    row template (the JSON encoder's exact text, see _template) instead of building its document and encoding it."""
    if type(r) is PredictionRecord:
        features, probabilities = r.features.values(), r.probabilities.values()
        try:
            # TypeError for a string or None among them; NaN or ±inf anywhere makes total - total NaN
            total = sum(features) + sum(probabilities) + r.latency_ms + r.created_at  # type: ignore[arg-type]
            numbers = total - total == 0.0
        except TypeError:
            numbers = False
        template = _template(r) if numbers and type(r.latency_ms) is float and type(r.created_at) is float \
            and _NUMBERS.issuperset(map(type, features)) and _NUMBERS.issuperset(map(type, probabilities)) else None
        rhash = r.request_hash
        if template is not None and type(r.prediction_id) is str and type(r.request_id) is str \
                and type(r.label) is str and (rhash is None or type(rhash) is str):
            return spool_line((template % (quote(r.prediction_id), quote(r.request_id), *features, quote(r.label),
                                           *probabilities, r.latency_ms, r.created_at,
                                           "" if rhash is None else ',"request_hash":' + quote(rhash))).encode())
    if type(r) is PredictionBatch and r.features.dtype != object:  # its floats packed: no NaN for orjson to null
        return encode_batch(to_doc(r))
    try:
        return encode(to_doc(r))
    except (ValueError, TypeError):
        if type(r) is PredictionBatch:
            raise
        doc = to_doc(r)
        doc["features"] = {name: plain(value, name) for name, value in r.features.items()}
        return encode(doc)
