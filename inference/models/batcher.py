"""Adaptive batching: concurrent callers of one model version share a single predict_proba call.

Leader/follower, so an idle server adds no hand-off: the first caller scores its own rows inline; callers that
arrive while it works queue up and the next of them leads one call for all queued rows (up to max_rows).

A caller may also hand over the work that follows scoring (finish) and a commit for its result (e.g. storing the
prediction records): the leader runs every caller's finish and one commit for the whole batch before it wakes
anyone, so a batch shares one hand-off and one commit (in durable persistence: one fsync) instead of one each.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from inference.errors import DeadlineExceeded

log = logging.getLogger(__name__)

_FOREVER_S = 86_400.0


def _wake(slot: _Slot) -> None:
    if slot.event is not None:
        slot.event.set()


class _Slot:
    __slots__ = ("rows", "finish", "commit", "result", "error", "event", "promoted", "done")

    def __init__(self, rows, finish, commit):
        self.rows = rows
        self.finish = finish
        self.commit = commit
        self.result: Any = None  # the slot's probabilities, or (probabilities, finish items)
        self.error: BaseException | None = None
        self.event: threading.Event | None = None  # only a caller that waits needs one (idle path: none)
        self.promoted = False
        self.done = False


def _matrix(batch: list[_Slot]) -> np.ndarray:
    """One float64 matrix of the batch's rows; slots hold lists of rows (one conversion for the whole batch)
    or matrices."""
    if all(type(s.rows) is list for s in batch):
        return np.array([row for s in batch for row in s.rows], dtype=np.float64)
    return np.concatenate([np.asarray(s.rows, dtype=np.float64) for s in batch])


def _object_matrix(batch: list[_Slot]) -> np.ndarray:
    """One object matrix (rows × features) of the batch's rows of plain values, as given: never a value
    converted (np.array would turn a row of numbers and None into floats and nan, or strings into a str dtype)."""
    rows = [s.rows for s in batch]
    if len(rows) == 1 and isinstance(rows[0], np.ndarray) and rows[0].dtype == object:
        return rows[0]
    n = sum(len(r) for r in rows)
    width = next((len(part[0]) for part in rows if len(part)), 0)
    matrix = np.empty((n, width), dtype=object)
    i = 0
    for part in rows:
        if isinstance(part, np.ndarray):
            matrix[i:i + len(part)] = part
            i += len(part)
        else:
            for row in part:
                matrix[i, :] = row
                i += 1
    return matrix


class Batcher:
    """Scores rows (a list of rows, or a matrix) with score_fn, merging concurrent calls into batches of at most
    max_rows rows."""

    def __init__(self, score_fn: Callable[[np.ndarray], np.ndarray], max_rows: int = 64,
                 max_delay_s: float = 0.0, on_batch: Callable[[int], None] | None = None,
                 dtype: type = np.float64):
        self._score_fn = score_fn
        # float64 (array models: numbers only) or object (frame models: rows of plain values)
        self._matrix = _object_matrix if dtype is object else _matrix
        self._max_rows = max(1, max_rows)
        self._max_delay_s = max_delay_s
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self._pending: deque[_Slot] = deque()
        self._busy = False
        self._last_rows = 0

    def queued_rows(self) -> int:
        """Rows of the callers waiting for a batch (behind the one being scored)."""
        with self._lock:
            return sum(len(s.rows) for s in self._pending)

    def score(self, rows, timeout: float | None = None,
              finish: Callable[[np.ndarray], list] | None = None,
              commit: Callable[[list], None] | None = None):
        """Probabilities for rows (n × features → n × classes); raises DeadlineExceeded after timeout seconds.

        With finish, returns (probabilities, finish(probabilities)), finish run by whichever thread scores the
        batch and returning a list; with commit too, commit(the lists of all the batch's callers that passed an
        equal commit, concatenated) runs once before any of them is woken. An exception in either fails every
        caller of the batch; one raised by scoring fails only the callers whose own rows raise it (the batch's
        callers are then scored one by one: one client's input must not fail the others batched with it). A
        caller whose deadline passes while its batch is scored gets DeadlineExceeded even if its result was
        committed.
        """
        if timeout is not None and timeout > _FOREVER_S:  # gRPC reports "no deadline" as a huge time_remaining()
            timeout = None
        slot = _Slot(rows, finish, commit)
        with self._lock:
            self._pending.append(slot)
            lead = not self._busy
            self._busy = True
            if not lead:
                slot.event = threading.Event()
        if not lead:
            assert slot.event is not None  # set under the lock above: this caller follows a leader
            if not slot.event.wait(timeout):
                with self._lock:
                    if slot.done:
                        pass  # finished just now
                    elif slot in self._pending:  # never scored: abandon it, and pass on leadership if we had it
                        self._pending.remove(slot)
                        if slot.promoted:
                            self._hand_off_locked()
                        raise DeadlineExceeded("deadline passed while waiting for a batch slot")
                    else:
                        raise DeadlineExceeded("deadline passed while the batch was being scored")
            if slot.done:
                return self._outcome(slot)
        return self._lead(slot)

    def _lead(self, own: _Slot):
        # Leadership is kept through the commit: callers arriving meanwhile gather into the next batch, so under
        # load batches (and commits, i.e. fsyncs) grow instead of multiplying.
        try:
            while not own.done:  # own is the first pending slot, so the first batch holds it
                batch = self._take()
                self._complete(batch, self._score(batch))
        finally:
            with self._lock:
                self._hand_off_locked()
        return self._outcome(own)

    def _hand_off_locked(self) -> None:
        if self._pending:
            nxt = self._pending[0]
            nxt.promoted = True
            _wake(nxt)
        else:
            self._busy = False

    def _take(self) -> list[_Slot]:
        if self._last_rows > 1:
            # Under load (the last batch had company): yield the interpreter once, so requests already in other
            # handler threads, waiting only for the GIL, join this batch (a leader would otherwise score alone: it
            # never lets them in), and give the batch a moment to fill. Idle (the last batch was one row) neither:
            # the yield is not free even then (measured ~90 us at concurrency 1: it hands the GIL to gRPC's
            # poller thread in the middle of the request), and a request arriving meanwhile leads the next batch.
            time.sleep(0)
            if self._max_delay_s and self.queued_rows() < self._max_rows:
                time.sleep(self._max_delay_s)
        batch: list[_Slot] = []
        n = 0
        with self._lock:
            while self._pending and (not batch or n + len(self._pending[0].rows) <= self._max_rows):
                slot = self._pending.popleft()
                batch.append(slot)
                n += len(slot.rows)
        self._last_rows = n
        return batch

    def _score(self, batch: list[_Slot]):
        """(results, commits) for the batch: each slot's probabilities (and finish items), or the exception its
        rows raised; or the exception of the whole batch."""
        try:
            try:
                matrix = self._matrix(batch)
                probabilities = self._score_fn(matrix)
            except Exception as exc:
                if len(batch) == 1:
                    raise
                parts = self._apart(batch, exc)
            else:
                if self._on_batch:
                    self._on_batch(len(matrix))
                parts, start = [], 0
                for slot in batch:
                    parts.append(probabilities[start:start + len(slot.rows)])
                    start += len(slot.rows)
            results: list[Any] = []
            commits: dict[Callable[[list[Any]], None], list[Any]] = {}
            for slot, result in zip(batch, parts):
                if slot.finish is not None and not isinstance(result, BaseException):
                    items = slot.finish(result)
                    if slot.commit is not None:
                        commits.setdefault(slot.commit, []).extend(items)
                    results.append((result, items))
                else:
                    results.append(result)
            return results, commits
        except BaseException as exc:  # delivered to every caller of the batch, raised in their threads
            return exc

    def _apart(self, batch: list[_Slot], exc: Exception) -> list[Any]:
        """The batch's callers scored one by one after their shared call raised: one caller's rows that the model
        cannot score (a pipeline raising on some value) fail that caller alone, not everyone batched with it."""
        parts: list[Any] = []
        for slot in batch:
            try:
                matrix = self._matrix([slot])
                parts.append(self._score_fn(matrix))
                if self._on_batch:
                    self._on_batch(len(matrix))
            except Exception as own:
                parts.append(own)
        failed = sum(isinstance(p, BaseException) for p in parts)
        log.warning("scoring a batch of %d callers raised %s: %s; scored apart, %d of them failed on their own",
                    len(batch), type(exc).__name__, exc, failed)
        return parts

    @staticmethod
    def _complete(batch: list[_Slot], scored) -> None:
        """Run the batch's commits, then hand every caller its result (or the batch's error) and wake it."""
        results: list[Any] = []
        if not isinstance(scored, BaseException):
            results, commits = scored
            try:
                for commit, items in commits.items():
                    commit(items)
            except BaseException as exc:
                scored = exc
        if isinstance(scored, BaseException):
            for slot in batch:
                slot.error, slot.done = scored, True
                _wake(slot)
            return
        for slot, result in zip(batch, results):
            if isinstance(result, BaseException):  # this caller's own rows raised (scored apart, see _apart)
                slot.error = result
            else:
                slot.result = result
            slot.done = True
            _wake(slot)

    @staticmethod
    def _outcome(slot: _Slot) -> np.ndarray:
        if slot.error is not None:
            raise slot.error
        return slot.result
