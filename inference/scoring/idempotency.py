"""Idempotency keys (issue #23): a client-sent request_id is the key of one request.

A retry with the same key and the same request (model name and feature values: the fingerprint of
database/fingerprint.py; transport and model version do not matter) is given the original answer as stored and
stores nothing new; the same key with a different request is refused (AlreadyExists); the same key twice in one
call is refused by the servicer (duplicates). Rows without a client id are not looked up.

Where answers are found: (1) an in-process bounded cache of recent answers, filled when records are committed
(KeyedRecorder: before any caller of a scored batch is woken), so a retry is answered right even before its record
reaches the database and after a hot reload; (2) for the keys it does not hold, ONE lookup per call in the
database (repo.answered). A key being answered by another call of this process is waited for (within the
caller's deadline), then decided as above. When the database cannot be asked, the call is decided on the cache
alone and counted (unverified); the writer then counts a key found stored with another fingerprint (conflicts).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from itertools import repeat

from database.fingerprint import row_hashes
from database.records import PredictionBatch, PredictionRecord, Stored
from inference import errors
from inference.bounds import shown

log = logging.getLogger(__name__)

# (request_ids, their prediction_ids when the caller computed them, else None) -> stored answers by request_id
Lookup = Callable[[list[str], Sequence[str] | None], dict[str, PredictionRecord]]
_DOWN_FOR_S = 2.0  # after a failed lookup, the database is not asked again for this long (calls stay fast)


def conflict_message(request_id: str, stored_model: str, model: str) -> str:
    """ALREADY_EXISTS: the key names another request."""
    what = f"model {stored_model}" + (", other features" if stored_model == model else "")
    return (f"request_id {shown(request_id)} was already used for a different request ({what}); use a new "
            "request_id for a new request")


def duplicates(request_ids: Sequence[str], where: Callable[[int], str]) -> dict[int, str]:
    """{position: INVALID_ARGUMENT message} for every later occurrence of a client id already used earlier in the
    same call (fresh ids, "", are never duplicates); where(i) names position i (e.g. "rows[3]")."""
    seen: dict[str, int] = {}
    out: dict[int, str] = {}
    for i, rid in enumerate(request_ids):
        if not rid:
            continue
        first = seen.setdefault(rid, i)
        if first != i:
            out[i] = (f"request_id {shown(rid)} is used twice in this call ({where(first)} and {where(i)}); each "
                      "row of a call needs its own request_id")
    return out


class Claim:
    """What begin() decided for a call's rows: stored answers to give again, refused rows, and the keys this call
    now answers (release() when done, whatever happened)."""

    __slots__ = ("stored", "conflicts", "_keys", "_claimed", "_event")

    def __init__(self, keys: Keys | None = None, claimed: list[str] | None = None,
                 event: threading.Event | None = None):
        self.stored: dict[int, PredictionRecord] = {}
        self.conflicts: dict[int, str] = {}
        self._keys, self._claimed, self._event = keys, claimed or [], event

    def release(self) -> None:
        if self._keys is not None:
            self._keys._release(self._claimed, self._event)
            self._keys = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


NO_CLAIM = Claim()


class KeyedRecorder:
    """A recorder whose committed records become answers of their keys (the batcher's commit: the recorder takes
    the records, raising when it cannot, and only then are they answers)."""

    def __init__(self, recorder, keys: Keys):
        self.recorder, self.keys = recorder, keys

    def record(self, items: Sequence[Stored]) -> None:
        self.recorder.record(items)
        self.keys.remember(items)

    def close(self) -> None:
        self.recorder.close()


class Keys:
    """The idempotency keys one server process answers (see the module). capacity bounds the cache (rows)."""

    def __init__(self, capacity: int, metrics=None, lookup: Lookup | None = None):
        self.capacity = capacity
        self.metrics = metrics
        self.lookup = lookup  # set by persistence when there is a database (None: the cache alone)
        self._lock = threading.Lock()
        self._answers: OrderedDict[str, tuple[str, Stored, int]] = OrderedDict()
        self._pending: dict[str, threading.Event] = {}
        self._down_until = 0.0

    # -- filling ---------------------------------------------------------------------------------------------------
    def remember(self, items: Sequence[Stored]) -> None:
        """Answers committed (or found stored): their keys now answer retries from here."""
        if not self.capacity:
            return
        with self._lock:
            answers = self._answers
            for item in items:
                if type(item) is PredictionBatch:
                    if item.request_hashes is not None:
                        answers.update(zip(item.request_ids, zip(item.request_hashes, repeat(item),
                                                                 range(len(item)))))
                elif item.request_hash is not None:
                    answers[item.request_id] = (item.request_hash, item, -1)
            excess = len(answers) - self.capacity
            if excess > 0:  # the oldest first, in one C loop (a bulk batch evicts 1,000s)
                deque(map(answers.popitem, repeat(False, excess)), maxlen=0)

    def forget(self, request_ids: Sequence[str]) -> None:
        """Drop these keys' cached answers: the writer found them stored for another request, so the answers this
        process gave (while the database could not be asked, or to a caller who vouched the keys new) are not the
        stored ones, and the next call of these keys must be decided from the database."""
        with self._lock:
            deque(map(self._answers.pop, request_ids, repeat(None)), maxlen=0)

    # -- deciding --------------------------------------------------------------------------------------------------
    def begin(self, model: str, request_ids: Sequence[str], hashes: Sequence[str | None],
              timeout: float | None, prediction_ids: Sequence[str] | None = None, new: bool = False) -> Claim:
        """Decide the keyed rows (hashes[i] not None) of a call of `model`: claim.stored (answers to give again),
        claim.conflicts (rows to refuse); the other keyed rows are this call's to answer until claim.release().
        Waits (within timeout) while another call of this process answers one of the keys. prediction_ids, when the
        caller has them (one per request id: the bulk path computes them once for its records), spare the lookup
        deriving them again. new: the caller vouches that the keys were never sent before (FeatureMatrix.new_keys),
        so the database is not asked (counted in keys_vouched); this process's own recent and pending answers
        still are, and the writer still stores each key once."""
        keyed = [i for i, h in enumerate(hashes) if h is not None]
        if not keyed:
            return NO_CLAIM
        # the keys' set operations run in C (a bulk call has 1,000s of keys, almost always none of them cached or
        # pending): the per-row Python below runs only for the rows they name
        keys = request_ids if len(keyed) == len(request_ids) else [request_ids[i] for i in keyed]
        deadline = None if timeout is None else time.monotonic() + timeout
        claimed: list[str] = []
        event = threading.Event()
        while True:
            with self._lock:
                cached = self._answers.keys() & keys
                found = {i: self._answers[request_ids[i]] for i in keyed if request_ids[i] in cached} if cached else {}
                open_ = [i for i in keyed if i not in found] if found else keyed
                busy = None
                if not self._pending.keys().isdisjoint(keys):
                    busy = next((e for i in open_ if (e := self._pending.get(request_ids[i])) is not None), None)
                if busy is None:
                    claimed = list(dict.fromkeys(request_ids[i] for i in open_) if found else dict.fromkeys(keys))
                    self._pending.update(dict.fromkeys(claimed, event))
                    break
            remaining = None if deadline is None else deadline - time.monotonic()
            if (remaining is not None and remaining <= 0) or not busy.wait(remaining):
                raise errors.DeadlineExceeded("the deadline passed while another call answered the same "
                                              "request_id; retry to get its answer")
        claim = Claim(self, claimed, event)
        try:
            for i, (stored_hash, source, at) in found.items():
                self._decide(claim, i, model, request_ids[i], hashes[i], stored_hash,
                             source.answer(at) if type(source) is PredictionBatch else source)
            if claimed and new:
                if self.metrics is not None:
                    self.metrics.idempotency_vouched.inc(len(claimed))
            elif claimed:
                # every row keyed and claimed, none twice: claimed is request_ids, in order
                whole = prediction_ids is not None and len(claimed) == len(request_ids)
                stored = self._stored(claimed, prediction_ids if whole else None)
                if stored:
                    self.remember(list(stored.values()))
                for i in open_ if stored else ():
                    answer = stored.get(request_ids[i])
                    if answer is not None:
                        self._decide(claim, i, model, request_ids[i], hashes[i], answer.request_hash, answer)
        except BaseException:
            claim.release()
            raise
        if self.metrics is not None:
            self.metrics.idempotency(len(claim.stored), len(claim.conflicts))
        return claim

    @staticmethod
    def _decide(claim: Claim, i: int, model: str, rid: str, wanted: str | None, stored_hash: str | None,
                answer: PredictionRecord) -> None:
        if stored_hash == wanted:
            claim.stored[i] = answer
        else:
            claim.conflicts[i] = conflict_message(rid, answer.model, model)

    def _stored(self, request_ids: list[str], prediction_ids: Sequence[str] | None = None
                ) -> dict[str, PredictionRecord]:
        """The database's answers for keys the cache does not hold; {} (counted unverified) when it cannot say."""
        if self.lookup is None:
            return {}
        if time.monotonic() < self._down_until:
            self._unverified(len(request_ids))
            return {}
        try:
            return self.lookup(request_ids, prediction_ids)
        except Exception as exc:  # an outage must not fail the call: the answer is given and spooled as usual
            self._down_until = time.monotonic() + _DOWN_FOR_S
            log.warning("idempotency keys not checked in the database (%s): deciding on this process's recent "
                        "answers alone for %.0f s", exc, _DOWN_FOR_S)
            self._unverified(len(request_ids))
            return {}

    def _unverified(self, n: int) -> None:
        if self.metrics is not None:
            self.metrics.idempotency_unverified.inc(n)

    def _release(self, claimed: list[str], event: threading.Event | None) -> None:
        with self._lock:
            pending = self._pending
            # a claimed key stays this claim's until released (begin claims no key another claim holds), so this
            # removes only its own entries; the check below keeps that so should it ever not hold
            gone = list(map(pending.pop, claimed, repeat(None)))
            if gone.count(event) != len(gone):
                pending.update((rid, e) for rid, e in zip(claimed, gone) if e is not None and e is not event)
        if event is not None:
            event.set()


def keyed_hashes(model, request_ids, vectors) -> list[str | None]:
    """Each row's fingerprint when the client sent its request_id (an idempotency key), else None (no cost for
    calls without ids)."""
    keyed = [i for i, rid in enumerate(request_ids) if rid]
    hashes: list[str | None] = [None] * len(request_ids)
    if keyed:
        for i, h in zip(keyed, row_hashes(model.name, model.names, [vectors[i] for i in keyed])):
            hashes[i] = h
    return hashes


def one_version(model, stored: dict[int, PredictionRecord], fresh: int) -> tuple[str, tuple[str, ...],
                                                                                  dict[int, str]]:
    """An answer holding one model version for all its rows (a columnar answer, an OIP answer): (its version, its
    classes, {row: FAILED_PRECONDITION message} of stored answers of another version). The stored answers'
    version when every row answered is stored and of one version, else the serving version."""
    versions = {(r.model, r.model_version) for r in stored.values()}
    if not fresh and len(versions) == 1:
        first = next(iter(stored.values()))
        classes = tuple(model.classes)  # their order as the model has them (a jsonb object does not keep it)
        if set(first.probabilities) != set(classes):
            classes = tuple(first.probabilities)
        return first.model_version, classes, {}
    other = {i: (f"request_id {shown(r.request_id)} was answered by version {r.model_version} of {r.model}; this "
                 f"call's answer is version {model.version}, and one answer holds one version: send that row "
                 "alone (or in PredictBatch rows) to get its stored answer")
             for i, r in stored.items() if (r.model, r.model_version) != (model.name, model.version)}
    return model.version, tuple(model.classes), other
