"""A small open-loop load generator for fault tests: fixed request rate, every outcome recorded."""
from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    request_id: str
    sent: float          # monotonic send time
    latency: float       # seconds
    ok: bool
    value: Any = None  # whatever call() returned
    error: str = ""


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def percentile(self, q: float, outcomes: list[Outcome] | None = None) -> float:
        values = sorted(o.latency for o in (self.outcomes if outcomes is None else outcomes))
        return values[min(len(values) - 1, int(q / 100 * len(values)))] if values else float("nan")


def run_load(call, rate: float, duration: float, *, threads: int = 32, stop: threading.Event | None = None,
             ) -> LoadResult:
    """Call call(request_id) at `rate` per second for `duration` seconds (open loop: the schedule does not wait
    for answers); exceptions count as failures with their repr."""
    result = LoadResult()
    lock = threading.Lock()

    def one(request_id: str) -> None:
        sent = time.monotonic()
        try:
            value = call(request_id)
            outcome = Outcome(request_id, sent, time.monotonic() - sent, True, value)
        except Exception as exc:  # every failure is data here
            outcome = Outcome(request_id, sent, time.monotonic() - sent, False, error=repr(exc))
        with lock:
            result.outcomes.append(outcome)

    interval = 1.0 / rate
    start = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        i = 0
        while True:
            due = start + i * interval
            if due - start >= duration or (stop is not None and stop.is_set()):
                break
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, uuid.uuid4().hex)
            i += 1
    return result
