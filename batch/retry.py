"""Retries of the SDK calls the batch makes: a call the server failed with a transient status (UNAVAILABLE,
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) is sent again after an exponential backoff with full jitter, a bounded
number of times; the last failure is raised as it came (its status and message name the cause).

Every call the batch retries is idempotent: PredictBatch rows carry request ids (the server stores a request id
once), feedback overwrites the same label, a run record replaces the one with its key. The SDK's channel retries
UNAVAILABLE three times within ~0.15 s only (predmesh.channel); this covers outages and overloads of seconds."""
from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from predmesh import PredmeshError

log = logging.getLogger("predmesh.batch")
T = TypeVar("T")
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4  # calls after the first
    backoff_s: float = 0.5  # the first backoff's ceiling; doubles per retry
    max_s: float = 10.0  # ceiling of any backoff

    @classmethod
    def of(cls, settings) -> RetryPolicy:
        """The policy of a BatchSettings."""
        return cls(settings.retries, settings.retry_backoff_s, settings.retry_max_s)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(max_s, backoff_s * 2**attempt)) (attempt 0 = before the first retry)."""
        return rand() * min(self.max_s, self.backoff_s * 2 ** attempt)


_ATTEMPTS = "predmesh_batch_attempts"


def attempts_of(exc: BaseException) -> int:
    """How many times the call that raised exc was made (1 when it was not retried)."""
    return int(vars(exc).get(_ATTEMPTS, 1))


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, PredmeshError) and exc.code in TRANSIENT


def call(fn: Callable[[], T], policy: RetryPolicy, what: str, *,
         stop: threading.Event | None = None, sleep: Callable[[float], object] | None = None) -> T:
    """fn(), again after a transient failure, at most policy.retries more times (or until `stop` is set); the last
    failure (or any other error) is raised. Each retry is logged with its cause."""
    wait = sleep or (stop.wait if stop is not None else threading.Event().wait)
    attempt = 0
    while True:
        try:
            return fn()
        except PredmeshError as exc:
            if not is_transient(exc) or attempt >= policy.retries or (stop is not None and stop.is_set()):
                if attempt:
                    vars(exc)[_ATTEMPTS] = attempt + 1  # said by batch.scoring.describe
                raise
            pause = policy.delay(attempt)
            log.warning("%s: %s (%s); retry %d of %d in %.1fs", what, exc.code.name, exc.message, attempt + 1,
                        policy.retries, pause)
            wait(pause)
            attempt += 1
