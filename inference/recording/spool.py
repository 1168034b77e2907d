"""A bounded on-disk spool of prediction records: append with group commit (one synchronous write for many
callers), read back in order, delete what is consumed; a corrupt tail is quarantined instead of failing the start.

Segment files are preallocated (posix_fallocate: the unwritten part reads as zero bytes) and written in place with
O_DSYNC: a write returns once its data is on disk, and since the file's size and blocks were made durable when
the segment was opened, the kernel need not commit file metadata for each append (an fsync of a growing file
must). So the end of the records in a segment is the first zero byte (a line never holds one: it is ASCII JSON),
not the file's size; recovery stops there.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)
SEGMENT_GLOB = "seg-*.log"


IDENTITY_FILE = "database.json"


class SpoolFull(Exception):
    """Appending would exceed the spool's byte limit."""


class SpoolBoundElsewhere(Exception):
    """The spool holds records for another database than the one configured now."""


def _has_data(path: Path) -> bool:
    """Whether a segment holds any record: its first byte is not zero (a preallocated tail reads as zeros)."""
    try:
        with open(path, "rb") as fh:
            first = fh.read(1)
    except FileNotFoundError:
        return False
    return first not in (b"", b"\0")


def holds_records(base: Path) -> bool:
    """Whether any segment under base (its slots p<N>, or base itself) has records in it (consumed or not: after
    a kill the consumed part of the live segment is not known, so it counts)."""
    base = Path(base)
    return any(_has_data(p) for pattern in (SEGMENT_GLOB, f"p*/{SEGMENT_GLOB}") for p in base.glob(pattern))


def bind(base: Path, identity: dict, describe=repr) -> None:
    """Bind the spool directory to the database identity (base/database.json).

    A spool holding records for another database refuses (SpoolBoundElsewhere names both): its records must never
    be replayed into a database they were not answered for. An empty spool (after a graceful stop) simply
    follows the configured database.
    """
    base = Path(base)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = base / IDENTITY_FILE
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        stored = None
    except (OSError, ValueError) as exc:
        log.warning("spool %s: unreadable %s (%s); rebinding it", base, IDENTITY_FILE, exc)
        stored = None
    if stored == identity:
        return
    if stored is not None and holds_records(base):
        raise SpoolBoundElsewhere(
            f"spool {base} holds prediction records for {describe(stored)}, but the configured database is "
            f"{describe(identity)}; they must not be replayed into another database. Point PREDMESH_DATABASE_URL "
            f"back to the first until the spool is empty (a graceful stop drains it), or move {base} away to "
            "discard them")
    if stored is not None:
        log.info("spool %s: empty, now bound to %s (was %s)", base, describe(identity), describe(stored))
    tmp = base / f".{IDENTITY_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(identity, sort_keys=True))
    os.replace(tmp, path)


class _Batch:
    """Appends that share one synchronous write."""

    __slots__ = ("chunks", "tags", "done", "error")

    def __init__(self):
        self.chunks: list[bytes] = []
        self.tags: list[object] = []
        self.done: threading.Event | None = None  # made by the first append that has to wait (the leader never)
        self.error: OSError | None = None


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int  # bytes of records written and synced (the file may be longer: its preallocated, zero-filled tail)
    sealed: bool
    created: float


def _try_lock(directory: Path) -> int | None:
    """An fd holding an exclusive flock on directory/.lock, or None if another process holds it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _adopt(source: Path, target: Path) -> None:
    """Move the segments of an unowned slot behind the target's own (both locked meanwhile), in order."""
    fd = _try_lock(source)
    if fd is None:
        return  # a live process owns it
    try:
        segments = sorted(source.glob(SEGMENT_GLOB))
        if not segments:
            return
        next_seq = max((int(p.stem[4:]) for p in target.glob(SEGMENT_GLOB)), default=0) + 1
        for offset, path in enumerate(segments):
            path.rename(target / f"seg-{next_seq + offset:09d}.log")
        log.info("spool: adopted %d segments from %s into %s", len(segments), source, target)
    finally:
        os.close(fd)


# ensure_ascii (the default) escapes every control character, so a line never holds a zero byte; built once
# (json.dumps with options builds an encoder per call)
_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
# a quarantined document is for a human to read: NaN and ±inf as Python's json writes them, anything else JSON has
# no form for as its repr
_lenient_json = json.JSONEncoder(separators=(",", ":"), default=repr).encode


def encode(doc: dict, encoder=_json) -> bytes:
    """One spool line: crc32 of the JSON, a space, the JSON, a newline."""
    return spool_line(encoder(doc).encode())


def spool_line(payload: bytes) -> bytes:
    """The spool line of a document's JSON text (encode's framing)."""
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def encode_batch(doc: dict) -> bytes:
    """encode() of a bulk batch's document (its matrices packed, a few thousand id and hash strings) by orjson, in
    C: the same JSON but non-ASCII text as UTF-8 rather than escaped (control characters are escaped either way,
    so a line still never holds a newline or a zero byte); what orjson cannot encode takes encode()."""
    try:
        return spool_line(orjson.dumps(doc))
    except TypeError:  # orjson.JSONEncodeError: a type or a key orjson does not take (a numpy scalar, an int key)
        return encode(doc)


def decode(line: bytes) -> dict | None:
    """The document of a line, or None when the line is damaged. orjson reads it (in C); what orjson refuses
    (NaN, an integer beyond 64 bits) json reads."""
    crc, _, payload = line.rstrip(b"\n").partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(payload):
            return None
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            return json.loads(payload)
    except ValueError:
        return None


class Spool:
    """Segment files seg-<seq>.log in one directory; a single reader consumes them in append order."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 4 * 1024 * 1024):
        self.dir = Path(directory)
        # on_synced(entries): called after each successful synchronous write under the spool's lock (so in file
        # order; it must not call back into the spool), before the appenders return, with (tag, start, end) per
        # tagged append; start and end are positions comparable with position()
        self.on_synced: Callable[[list[tuple[Any, Any, Any]]], None] | None = None
        self._lock_fd: int | None = None  # the slot's lock (Spool.in_slot), released by close()
        self.quarantine_dir = self.dir / "quarantine"
        self.quarantine_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._cv = threading.Condition()
        self._segments: list[_Segment] = []
        self._offset = 0  # reader position in self._segments[0]
        self._batch = _Batch()  # appends waiting for the next synchronous write
        self._pending_bytes = 0  # in self._batch and in the write in flight
        self._flushing = False
        self._closing = False
        self.quarantined = 0
        for path in sorted(self.dir.glob(SEGMENT_GLOB)):
            size = self._recover(path)
            self._segments.append(_Segment(int(path.stem[4:]), path, size, True, path.stat().st_mtime))
        self._open_segment((self._segments[-1].seq + 1) if self._segments else 1)
        # since when unconsumed records have been waiting (None: nothing waiting)
        self._backlog_since = min((s.created for s in self._segments if s.size), default=None)
        if self.unconsumed_bytes():
            log.info("spool %s holds %d bytes from before the restart: they will be replayed", self.dir,
                     self.unconsumed_bytes())

    @classmethod
    def claim(cls, base: Path, max_bytes: int, slots: int = 64) -> Spool:
        """The spool in the first free slot base/p<N> (locked while this process lives).

        Server processes sharing a port each get their own slot; a process killed with -9 releases its lock,
        so its restarted successor (or any sibling) claims the slot and replays what is in it. Records left in
        other free slots (e.g. after scaling from 3 processes down to 1) are adopted into the claimed slot.
        """
        base = Path(base)
        base.mkdir(mode=0o700, parents=True, exist_ok=True)  # the records hold every request's features
        for slot in range(slots):
            directory = base / f"p{slot}"
            fd = _try_lock(directory)
            if fd is None:
                continue
            for other in sorted(base.glob("p*")):
                if other != directory and other.is_dir():
                    _adopt(other, directory)
            spool = cls(directory, max_bytes)
            spool._lock_fd = fd
            return spool
        raise OSError(f"all {slots} spool slots under {base} are locked by running processes")

    # -- writing (group commit: one synchronous write for every append queued meanwhile) ----------------------
    # Leader/follower: an append that finds no write in flight writes in its own thread (no hand-off);
    # appends that arrive meanwhile queue up and wait; when the write ends, the queued batch is handed to the
    # flusher thread, which writes it the same way.
    def append(self, lines: list[bytes], tag: object = None) -> None:
        """Append encoded lines; returns once they are on disk. Raises SpoolFull, or OSError if the write failed.
        A tag (not None) is passed to on_synced with the lines' position once they are on disk."""
        data = b"".join(lines)
        with self._cv:
            if self._closing:
                raise OSError("spool is closed")
            if self.unconsumed_bytes() + len(data) > self.max_bytes:
                raise SpoolFull(f"spool {self.dir} is full ({self.max_bytes} bytes)")
            if self._backlog_since is None:
                self._backlog_since = time.time()
            batch = self._batch
            batch.chunks.append(data)
            batch.tags.append(tag)
            self._pending_bytes += len(data)
            lead = not self._flushing
            if lead:
                self._flushing = True
                self._batch = _Batch()
            elif batch.done is None:
                batch.done = threading.Event()
        if lead:
            self._write(batch)
        else:
            assert batch.done is not None  # made above, under the lock, for this follower
            batch.done.wait()
        if batch.error is not None:
            raise batch.error

    _flusher: threading.Thread | None = None
    _handoff = False  # a queued batch waits for the flusher thread

    def _flush_loop(self) -> None:
        while True:
            with self._cv:
                while not self._handoff and not (self._closing and not self._flushing):
                    self._cv.wait()
                if not self._handoff:
                    return
                self._handoff = False
                batch, self._batch = self._batch, _Batch()
            self._write(batch)

    def _write(self, batch: _Batch) -> None:
        """Write one batch synchronously (the caller owns the write: _flushing), then pass the write on."""
        with self._cv:
            segment, fd = self._segments[-1], self._fd
        start = segment.size
        data = b"".join(batch.chunks) if len(batch.chunks) > 1 else batch.chunks[0]
        try:
            written = os.pwrite(fd, data, start)  # O_DSYNC: on disk when it returns
            while written < len(data):  # a short write (rare: e.g. the disk filling up) goes on where it stopped
                written += os.pwrite(fd, memoryview(data)[written:], start + written)
        except OSError as exc:
            # nothing of this batch is acknowledged: cut what may have been written, fail its callers (appends go
            # on after the cut; past the preallocated part the file simply grows)
            log.error("spool write failed: %s", exc)
            batch.error = exc
            try:
                os.ftruncate(fd, segment.size)
            except OSError:
                pass
        with self._cv:
            self._pending_bytes -= len(data)
            if batch.error is None:
                segment.size += len(data)
                if self.on_synced is not None:  # under the lock, so listeners see appends in file order
                    self._synced(batch, segment.seq, start)
                if segment.size >= self.segment_bytes:
                    self._rotate_locked()
            if self._batch.chunks:  # appends queued during this write: the flusher thread writes them next
                self._handoff = True
                if self._flusher is None:
                    self._flusher = threading.Thread(target=self._flush_loop, name="spool-flush", daemon=True)
                    self._flusher.start()
            else:
                self._flushing = False
            self._cv.notify_all()
            done = batch.done  # its followers joined before it was taken for writing (under this lock)
        if done is not None:
            done.set()

    def _synced(self, batch: _Batch, seq: int, start: int) -> None:
        entries: list[tuple[Any, Any, Any]] = []
        position = start
        for chunk, tag in zip(batch.chunks, batch.tags):
            if tag is not None:
                entries.append((tag, (seq, position), (seq, position + len(chunk))))
            position += len(chunk)
        on_synced = self.on_synced  # set: the caller checked
        if entries and on_synced is not None:
            try:
                on_synced(entries)
            except Exception:  # a listener's failure must not fail appends that are on disk
                log.exception("spool: on_synced listener failed")

    def _open_segment(self, seq: int) -> None:
        """A new, preallocated live segment whose size, blocks and directory entry are durable before any record
        is written to it (so a synchronous write of records need not commit metadata)."""
        path = self.dir / f"seg-{seq:09d}.log"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_DSYNC | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, min(self.segment_bytes, self.max_bytes))
        except OSError as exc:  # e.g. no space for the whole segment now: appends grow the file instead
            log.warning("spool %s: cannot preallocate %s (%s); appending without", self.dir, path.name, exc)
        os.fsync(fd)
        self._fd = fd
        self._segments.append(_Segment(seq, path, 0, False, time.time()))
        dir_fd = os.open(self.dir, os.O_RDONLY)  # make the new file's directory entry durable
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _rotate_locked(self) -> None:
        os.close(self._fd)
        self._segments[-1].sealed = True
        self._open_segment(self._segments[-1].seq + 1)

    # -- reading (one reader thread) -------------------------------------------------------------------------------
    def read(self, max_records: int, max_bytes: int | None = None) -> tuple[tuple[int, int], list[dict]]:
        """Up to max_records documents (and about max_bytes, at least one document) from the oldest unconsumed
        data, and a cursor to pass to consume()."""
        with self._cv:
            self._drop_consumed_locked()
            segment, offset = self._segments[0], self._offset
            end = segment.size
        if end <= offset:
            return (segment.seq, offset), []
        docs: list[dict] = []
        with open(segment.path, "rb") as fh:
            fh.seek(offset)
            position = offset
            while position < end and len(docs) < max_records and (max_bytes is None or position - offset < max_bytes):
                line = fh.readline(end - position)
                if not line.endswith(b"\n"):
                    break  # cannot happen below the synced size; stop rather than misread
                position += len(line)
                doc = decode(line)
                if doc is None:
                    self._quarantine(line, f"{segment.path.name}@{position - len(line)}")
                else:
                    docs.append(doc)
        return (segment.seq, position), docs

    def position(self) -> tuple[int, int]:
        """The position of the oldest unconsumed byte, comparable with read()'s cursors and on_synced positions."""
        with self._cv:
            self._drop_consumed_locked()
            return self._segments[0].seq, self._offset

    def consume(self, cursor: tuple[int, int]) -> None:
        """Mark everything before the cursor (from read()) as stored; fully consumed segments are deleted."""
        with self._cv:
            seq, offset = cursor
            if self._segments[0].seq == seq:
                self._offset = max(self._offset, offset)
            head = self._segments[0]
            if (not head.sealed and not self._flushing and not self._batch.chunks and self._offset >= head.size
                    and head.size >= 64 * 1024):
                self._rotate_locked()
            self._drop_consumed_locked()
            if self.unconsumed_bytes() == 0:
                self._backlog_since = None

    def _drop_consumed_locked(self) -> None:
        while len(self._segments) > 1 and self._segments[0].sealed and self._offset >= self._segments[0].size:
            head = self._segments.pop(0)
            self._offset = 0
            try:
                head.path.unlink()
            except FileNotFoundError:
                pass

    def unconsumed_lines(self) -> Iterator[bytes]:
        """The synced, unconsumed lines in order (for a count at stop; the caller holds off writers and reader)."""
        with self._cv:
            segments = [(s.path, s.size) for s in self._segments]
            offset = self._offset
        for index, (path, size) in enumerate(segments):
            start = offset if index == 0 else 0
            if size <= start:
                continue
            with open(path, "rb") as fh:
                fh.seek(start)
                yield from fh.read(size - start).splitlines(keepends=True)

    # -- state ---------------------------------------------------------------------------------------------------
    def unconsumed_bytes(self) -> int:
        """Bytes appended (or being appended) and not yet consumed: what counts against max_bytes."""
        with self._cv:  # reentrant: append() calls this holding the lock
            return sum(s.size for s in self._segments) - self._offset + self._pending_bytes

    def synced_bytes(self) -> int:
        """Bytes on disk (synced) and not yet consumed: what read() can return now."""
        with self._cv:
            return sum(s.size for s in self._segments) - self._offset

    def oldest_age(self) -> float:
        """Seconds the spool has continuously held unconsumed records (0 when empty): how far behind the
        database is. In durable mode it drops to 0 every time the writer catches up."""
        with self._cv:
            return 0.0 if self._backlog_since is None else max(0.0, time.time() - self._backlog_since)

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
            self._cv.wait_for(lambda: not self._flushing, 30)
        if self._flusher is not None:
            self._flusher.join(30)
        with self._cv:
            os.close(self._fd)
            self._discard_consumed()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _discard_consumed(self) -> None:
        """On close: make what was consumed (stored) disappear from disk, so a restart replays only records the
        database has not taken: consumed segments are deleted, and the head segment is cut to its unconsumed
        part (rewritten and renamed atomically; the read position is not otherwise durable). A live segment that
        stays loses its preallocated tail."""
        try:
            while self._segments and self._offset >= self._segments[0].size:
                head = self._segments.pop(0)
                self._offset = 0
                head.path.unlink(missing_ok=True)
            live = self._segments[-1] if self._segments else None
            if live is not None and not live.sealed:
                os.truncate(live.path, live.size)
            if self._segments and self._offset:
                head = self._segments[0]
                with open(head.path, "rb") as fh:
                    fh.seek(self._offset)
                    rest = fh.read(head.size - self._offset)
                tmp = head.path.with_suffix(".tmp")
                with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
                    fh.write(rest)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, head.path)
                head.size, self._offset = len(rest), 0
            fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # what stays is replayed again: duplicates are ignored by the database
            log.warning("spool %s: consumed records could not be discarded at close: %s", self.dir, exc)

    # -- recovery ------------------------------------------------------------------------------------------------
    def _recover(self, path: Path) -> int:
        """The usable size of a segment left by an earlier run: its records end at the first zero byte (the
        preallocated tail; anything after it was never acknowledged: writes are acknowledged in file order) and at
        the last newline before it. A torn tail (any non-zero bytes after that) goes to quarantine; the file is
        cut to the usable size."""
        data = path.read_bytes()
        end = data.find(b"\0")
        if end < 0:
            end = len(data)
        cut = data.rfind(b"\n", 0, end) + 1
        if cut < len(data):
            torn = data[cut:].rstrip(b"\0")
            if torn:
                self._quarantine(torn, f"{path.name}@{cut} (torn tail)")
            with open(path, "r+b") as fh:
                fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())
        return cut

    def quarantine_record(self, doc: dict, reason: str) -> None:
        """Keep a record the database refuses (it would block the log forever) for a human to look at."""
        entry = {"reason": reason, "record": doc}
        try:
            data = encode(entry)
        except (ValueError, TypeError):  # e.g. a NaN (missing) feature of a single record: kept all the same
            data = encode(entry, _lenient_json)
        self._quarantine(data, "a record refused by the database")

    def _quarantine(self, data: bytes, where: str) -> None:
        self.quarantined += 1
        target = self.quarantine_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{self.quarantined}.bad"
        target.write_bytes(data)
        log.error("spool: damaged data at %s (%d bytes) quarantined to %s", where, len(data), target)
