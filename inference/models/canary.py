"""Canary rollouts on this replica: the candidate loaded beside the serving version, a share of the calls routed
to it, its answers compared with the serving version's, and the decision rule the operator's criteria drive.

Routing: a call for a model with a canary goes to the candidate with probability `share`, decided by a hash of
the call's request_id when the client sent one (a retry lands on the version that answered first, on any replica)
and at random otherwise; a call goes to one version whole (a batch, a matrix). The prediction is recorded with the
version that answered, so the stored rows, the aggregates and the metrics carry the candidate's figures.

Agreement: the rows the candidate answered are scored again by the serving version off the request path (a
bounded queue, dropped when full; the serving model's estimator directly, so its drift window sees no extra rows)
and counted: compared, agreed. Those counts and the calls and errors per side are this replica's tallies, added
to the run's row on each poll (database/canary.py tally()).

Decision (evaluate()): each check the operator set runs as soon as it has its sample; a failing check rolls back at
once; at the end of the window the canary is promoted when every check passed, else rolled back (not enough
evidence is no evidence). No check set: promoted at the end of the window. No window: no automatic decision.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from inference.errors import PredmeshError

log = logging.getLogger(__name__)

AGREEMENT_QUEUE = 256  # candidate answers waiting to be scored by the serving version (then dropped)


@dataclass(frozen=True)
class Criteria:
    """What the operator sets when starting a canary (None: that check is off)."""

    window_s: float = 0.0  # seconds to observe; at the end: promote if every check passed; 0: decide by hand
    min_feedback: int = 20  # feedback rows each side needs before accuracy is compared
    min_requests: int = 20  # candidate calls (answered rows for latency, compared rows for agreement) needed
    max_accuracy_drop: float | None = None  # serving accuracy - candidate accuracy allowed
    max_error_rate: float | None = None  # candidate errors / candidate calls allowed
    max_p99_ratio: float | None = None  # candidate p99 latency / serving p99 latency allowed
    min_agreement: float | None = None  # share of candidate rows the serving version labels the same, at least

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Criteria:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def check(self) -> None:
        """ValueError naming the first criterion out of range."""
        if not 0 <= self.window_s <= 7 * 86400:
            raise ValueError(f"window {self.window_s!r} s must be between 0 and 7 days")
        if self.min_feedback < 1 or self.min_requests < 1:
            raise ValueError("min_feedback and min_requests must be at least 1")
        for name in ("max_accuracy_drop", "max_error_rate", "min_agreement"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} {value!r} must be between 0 and 1")
        if self.max_p99_ratio is not None and not self.max_p99_ratio > 0:
            raise ValueError(f"max_p99_ratio {self.max_p99_ratio!r} must be above 0")


def _checks(c: Criteria, f: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """(check, passed (None: not enough data yet), what it saw) for each check the criteria set."""
    serving, candidate, agreement = f["serving"], f["candidate"], f["agreement"]
    out: list[tuple[str, bool | None, str]] = []
    if c.max_accuracy_drop is not None:
        if min(serving["feedback"], candidate["feedback"]) >= c.min_feedback:
            drop = serving["accuracy"] - candidate["accuracy"]
            seen = (f"accuracy {candidate['accuracy']:.3f} over {candidate['feedback']} feedback vs serving "
                    f"{serving['accuracy']:.3f} over {serving['feedback']} (drop {drop:.3f}, at most "
                    f"{c.max_accuracy_drop:g})")
            out.append(("accuracy", drop <= c.max_accuracy_drop, seen))
        else:
            seen = (f"feedback {candidate['feedback']} candidate / {serving['feedback']} serving, "
                    f"{c.min_feedback} needed each")
            out.append(("accuracy", None, seen))
    if c.max_error_rate is not None:
        if candidate["calls"] >= c.min_requests:
            seen = (f"error rate {candidate['error_rate']:.4f} over {candidate['calls']} calls (at most "
                    f"{c.max_error_rate:g})")
            out.append(("errors", candidate["error_rate"] <= c.max_error_rate, seen))
        else:
            out.append(("errors", None, f"{candidate['calls']} candidate calls, {c.min_requests} needed"))
    if c.max_p99_ratio is not None:
        if min(serving["requests"], candidate["requests"]) >= c.min_requests and serving["p99_ms"] > 0:
            ratio = candidate["p99_ms"] / serving["p99_ms"]
            seen = (f"p99 {candidate['p99_ms']:.1f} ms vs serving {serving['p99_ms']:.1f} ms (ratio {ratio:.2f}, "
                    f"at most {c.max_p99_ratio:g})")
            out.append(("latency", ratio <= c.max_p99_ratio, seen))
        else:
            seen = (f"{candidate['requests']} candidate / {serving['requests']} serving answered rows, "
                    f"{c.min_requests} needed each")
            out.append(("latency", None, seen))
    if c.min_agreement is not None:
        if agreement["compared"] >= c.min_requests:
            seen = (f"agreement {agreement['rate']:.3f} over {agreement['compared']} rows (at least "
                    f"{c.min_agreement:g})")
            out.append(("agreement", agreement["rate"] >= c.min_agreement, seen))
        else:
            out.append(("agreement", None, f"{agreement['compared']} rows compared, {c.min_requests} needed"))
    return out


def evaluate(criteria: Criteria, figures: dict[str, Any]) -> tuple[str | None, str]:
    """(decision: "promote", "rollback" or None to keep observing, summary) from a run's figures
    (database/canary.py figures())."""
    if criteria.window_s <= 0:
        return None, "no window: decided by hand"
    checks = _checks(criteria, figures)
    failed = [seen for _, passed, seen in checks if passed is False]
    if failed:
        return "rollback", "rolled back: " + "; ".join(failed)
    if figures["elapsed_s"] < criteria.window_s:
        return None, "observing"
    pending = [seen for _, passed, seen in checks if passed is None]
    if pending:
        return "rollback", f"rolled back: not enough evidence after {criteria.window_s:g} s: " + "; ".join(pending)
    return "promote", (f"promoted after {criteria.window_s:g} s: " + "; ".join(seen for _, _, seen in checks)
                       if checks else f"promoted after {criteria.window_s:g} s (no checks set)")


def routed_to_candidate(model: str, key: str, share: float) -> bool:
    """Whether a call goes to the candidate: by a hash of (model, request_id) when the client sent an id (the same
    answer on every replica and every retry), else at random."""
    if share <= 0:
        return False
    if share >= 1:
        return True
    if key:
        digest = hashlib.sha256(f"{model}\x00{key}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64 < share
    return random.random() < share


class Canaries:
    """The candidates this replica holds (model -> (loaded candidate, share)), routing, and its tallies."""

    def __init__(self, registry):
        self.registry = registry
        self._held: dict[str, tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str], Counter] = {}  # (model, candidate version) -> counts since flush
        self._queue: queue.Queue = queue.Queue(maxsize=AGREEMENT_QUEUE)
        self._worker: threading.Thread | None = None

    # -- what this replica holds --------------------------------------------------------------------------------
    def held(self) -> dict[str, tuple[str, float]]:
        return {m: (c.version, share) for m, (c, share) in self._held.items()}

    def hold(self, model: str, version: str, share: float) -> None:
        """Load (verify, smoke-test) the candidate unless held already, and route share of the calls to it."""
        held = self._held.get(model)
        if held is not None and held[0].version == version:
            candidate = held[0]
        else:
            candidate = self.registry.load_candidate(model, version)  # ReloadFailed / NotFound: not held
            log.info("model %s: canary candidate %s loaded beside the serving version (share %.3f)", model,
                     version, share)
        with self._lock:
            self._held[model] = (candidate, share)
        self.registry.metrics.canary(model, version, share)
        self._start_worker()

    def drop(self, model: str) -> None:
        with self._lock:
            held = self._held.pop(model, None)
        if held is not None:
            log.info("model %s: canary candidate %s dropped", model, held[0].version)
            self.registry.metrics.canary(model, "", 0.0)

    # -- the request path ---------------------------------------------------------------------------------------
    def route(self, serving, key: str):
        """The model a call scores on: the candidate for its share of the calls, else serving."""
        held = self._held.get(serving.name)
        if held is None:
            return serving
        candidate, share = held
        if candidate.version == serving.version or not routed_to_candidate(serving.name, key, share):
            self._count(serving.name, candidate.version, "serving_calls")
            return serving
        self._count(serving.name, candidate.version, "candidate_calls")
        return candidate

    def is_candidate(self, model) -> bool:
        held = self._held.get(model.name)
        return held is not None and held[0] is model

    def failed(self, model) -> None:
        """A call that model could not answer (scoring failed, its deadline passed, the recorder refused it)."""
        held = self._held.get(model.name)
        if held is not None:
            side = "candidate_errors" if held[0] is model else "serving_errors"
            self._count(model.name, held[0].version, side)

    def answered(self, model, rows, labels) -> None:
        """The candidate answered rows with labels: queue them to be scored by the serving version."""
        if not self.is_candidate(model):
            return
        try:
            self._queue.put_nowait((model, rows, list(labels)))
        except queue.Full:
            pass  # agreement is a sample; the request path never waits for it

    def _count(self, model: str, version: str, what: str, n: int = 1) -> None:
        with self._lock:
            self._tallies.setdefault((model, version), Counter())[what] += n

    def take_tallies(self) -> dict[tuple[str, str], Counter]:
        """The counts since the last call (to add to the runs' rows), and start again."""
        with self._lock:
            out, self._tallies = self._tallies, {}
        return out

    def give_back(self, tallies: dict[tuple[str, str], Counter]) -> None:
        """Counts that could not be written (the database did not answer): kept for the next flush."""
        with self._lock:
            for key, counts in tallies.items():
                self._tallies.setdefault(key, Counter()).update(counts)

    # -- agreement ----------------------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._agree_forever, name="canary-agreement", daemon=True)
            self._worker.start()

    def _agree_forever(self) -> None:
        while True:
            candidate, rows, labels = self._queue.get()
            try:
                self._agree(candidate, rows, labels)
            except Exception:  # a sample lost; the next one may work
                log.exception("model %s: scoring canary rows with the serving version failed", candidate.name)

    def _agree(self, candidate, rows, labels: list[str]) -> None:
        try:
            serving = self.registry.get(candidate.name)
        except PredmeshError:
            return
        if serving is candidate or serving.version == candidate.version or not self.is_candidate(candidate):
            return
        matrix = rows if isinstance(rows, np.ndarray) else np.array(
            rows, dtype=object if serving.frame else np.float64)
        probabilities = serving._proba(matrix)  # the estimator itself: no batcher, no drift window
        theirs = [serving.classes[i] for i in np.asarray(probabilities).argmax(axis=1)]
        agreed = sum(1 for a, b in zip(labels, theirs) if a == b)
        self._count(candidate.name, candidate.version, "compared", len(labels))
        self._count(candidate.name, candidate.version, "agreed", agreed)
