"""A bounded on-disk spool of prediction records: append with group commit (one fsync for many callers),
read back in order, delete what is consumed; a corrupt tail is quarantined instead of failing the start."""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
SEGMENT_GLOB = "seg-*.log"


class SpoolFull(Exception):
    """Appending would exceed the spool's byte limit."""


@dataclass
class _Segment:
    seq: int
    path: Path
    size: int  # bytes written and fsynced
    sealed: bool
    created: float


def encode(doc: dict) -> bytes:
    """One spool line: crc32 of the JSON, a space, the JSON, a newline."""
    payload = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode(line: bytes) -> dict | None:
    """The document of a line, or None when the line is damaged."""
    crc, _, payload = line.rstrip(b"\n").partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(payload):
            return None
        return json.loads(payload)
    except ValueError:
        return None


class Spool:
    """Segment files seg-<seq>.log in one directory; a single reader consumes them in append order."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = 4 * 1024 * 1024):
        self.dir = Path(directory)
        self.quarantine_dir = self.dir / "quarantine"
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._cv = threading.Condition()
        self._segments: list[_Segment] = []
        self._offset = 0  # reader position in self._segments[0]
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._next_ticket = 1
        self._synced_ticket = 0
        self._flushing = False
        self._failures: list[tuple[int, int, OSError]] = []  # ticket ranges whose write failed
        self.quarantined = 0
        for path in sorted(self.dir.glob(SEGMENT_GLOB)):
            size = self._recover(path)
            self._segments.append(_Segment(int(path.stem[4:]), path, size, True, path.stat().st_mtime))
        self._open_segment((self._segments[-1].seq + 1) if self._segments else 1)
        if self.unconsumed_bytes():
            log.info("spool %s holds %d bytes from before the restart: they will be replayed", self.dir,
                     self.unconsumed_bytes())

    @classmethod
    def claim(cls, base: Path, max_bytes: int, slots: int = 64) -> Spool:
        """The spool in the first free slot base/p<N> (locked while this process lives).

        Server processes sharing a port each get their own slot; a process killed with -9 releases its lock,
        so its restarted successor (or any sibling) claims the slot and replays what is in it.
        """
        base = Path(base)
        for slot in range(slots):
            directory = base / f"p{slot}"
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            spool = cls(directory, max_bytes)
            spool._lock_fd = fd
            return spool
        raise OSError(f"all {slots} spool slots under {base} are locked by running processes")

    # -- writing -------------------------------------------------------------------------------------------------
    def append(self, lines: list[bytes]) -> None:
        """Append encoded lines; returns once they are fsynced (group commit). Raises SpoolFull or OSError."""
        data = b"".join(lines)
        with self._cv:
            if self.unconsumed_bytes() + len(data) > self.max_bytes:
                raise SpoolFull(f"spool {self.dir} is full ({self.max_bytes} bytes)")
            self._pending.append(data)
            self._pending_bytes += len(data)
            ticket = self._next_ticket
            self._next_ticket += 1
            while True:
                failed = next((exc for lo, hi, exc in self._failures if lo <= ticket <= hi), None)
                if failed is not None:
                    raise failed
                if self._synced_ticket >= ticket:
                    return
                if self._flushing:
                    self._cv.wait()
                    continue
                self._flush_locked()

    def _flush_locked(self) -> None:
        """Write and fsync everything pending (the caller holds the lock; it is released during the I/O)."""
        self._flushing = True
        batch, upto, nbytes = self._pending, self._next_ticket - 1, self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        segment, fh = self._segments[-1], self._fh
        self._cv.release()
        error = None
        try:
            fh.write(b"".join(batch))
            fh.flush()
            os.fsync(fh.fileno())
        except OSError as exc:
            error = exc
        finally:
            self._cv.acquire()
        self._flushing = False
        if error is not None:
            # Nothing of this batch is acknowledged; truncate what may have been written and fail the callers.
            log.error("spool write failed: %s", error)
            try:
                fh.truncate(segment.size)
            except OSError:
                pass
            self._failures.append((self._synced_ticket + 1, upto, error))
            self._synced_ticket = upto  # those tickets are settled (failed), later ones may still succeed
            self._cv.notify_all()
            raise error
        segment.size += nbytes
        self._synced_ticket = upto
        if segment.size >= self.segment_bytes:
            self._rotate_locked()
        self._cv.notify_all()

    def _open_segment(self, seq: int) -> None:
        path = self.dir / f"seg-{seq:09d}.log"
        self._fh = open(path, "ab")
        self._segments.append(_Segment(seq, path, 0, False, time.time()))
        fd = os.open(self.dir, os.O_RDONLY)  # make the new file's directory entry durable
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rotate_locked(self) -> None:
        self._fh.close()
        self._segments[-1].sealed = True
        self._open_segment(self._segments[-1].seq + 1)

    # -- reading (one reader thread) -------------------------------------------------------------------------------
    def read(self, max_records: int) -> tuple[tuple[int, int], list[dict]]:
        """Up to max_records documents from the oldest unconsumed data, and a cursor to pass to consume()."""
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
            while position < end and len(docs) < max_records:
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

    def consume(self, cursor: tuple[int, int]) -> None:
        """Mark everything before the cursor (from read()) as stored; fully consumed segments are deleted."""
        with self._cv:
            seq, offset = cursor
            if self._segments[0].seq == seq:
                self._offset = max(self._offset, offset)
            head = self._segments[0]
            if (not head.sealed and not self._flushing and not self._pending and self._offset >= head.size
                    and head.size >= 64 * 1024):
                self._rotate_locked()
            self._drop_consumed_locked()

    def _drop_consumed_locked(self) -> None:
        while len(self._segments) > 1 and self._segments[0].sealed and self._offset >= self._segments[0].size:
            head = self._segments.pop(0)
            self._offset = 0
            try:
                head.path.unlink()
            except FileNotFoundError:
                pass

    # -- state ---------------------------------------------------------------------------------------------------
    def unconsumed_bytes(self) -> int:
        return sum(s.size for s in self._segments) - self._offset + self._pending_bytes

    def oldest_age(self) -> float:
        """Seconds since the oldest segment holding unconsumed data was created (0 when empty)."""
        with self._cv:
            for i, s in enumerate(self._segments):
                if s.size > (self._offset if i == 0 else 0):
                    return max(0.0, time.time() - s.created)
        return 0.0

    def close(self) -> None:
        with self._cv:
            while self._flushing:
                self._cv.wait()
            self._fh.close()
            if getattr(self, "_lock_fd", None) is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    # -- recovery ------------------------------------------------------------------------------------------------
    def _recover(self, path: Path) -> int:
        """Cut a torn tail (bytes after the last newline) into quarantine; returns the usable size."""
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            self._quarantine(data[cut:], f"{path.name}@{cut} (torn tail)")
            with open(path, "r+b") as fh:
                fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())
        return cut

    def quarantine_record(self, doc: dict, reason: str) -> None:
        """Keep a record the database refuses (it would block the log forever) for a human to look at."""
        self._quarantine(encode({"reason": reason, "record": doc}), "a record refused by the database")

    def _quarantine(self, data: bytes, where: str) -> None:
        self.quarantined += 1
        target = self.quarantine_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{self.quarantined}.bad"
        target.write_bytes(data)
        log.error("spool: damaged data at %s (%d bytes) quarantined to %s", where, len(data), target)
