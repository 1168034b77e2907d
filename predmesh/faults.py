"""Fault injection for the fault tests: named points that do nothing unless PREDMESH_FAULTS arms them.

`PREDMESH_FAULTS="consumer.answered:3,batch.chunk_delay_ms:250"` arms points as comma-separated `name:value`
pairs; each entry point reads it once (configure) and every part calls fault_point(name) where a fault belongs.
Two kinds of point:

- a kill point (`consumer.answered`, `consumer.confirmed`): the value N (default 1) is a countdown, and the Nth
  time the point is reached the process SIGKILLs itself (no clean-up, no flush: a crash at that exact step);
- a delay point (a name ending in `_delay_ms`): each time it is reached the caller waits the value in
  milliseconds; a caller may pass its own `wait` so that the wait ends early (a cancelled call).

Not armed (the default, and in production), fault_point is one function call and one dictionary test.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

from predmesh.env import ConfigError

log = logging.getLogger(__name__)

ENV = "PREDMESH_FAULTS"
POINTS = {
    "consumer.answered": "kill the consumer after the server answered a window, before anything is published or "
                         "acked",
    "consumer.confirmed": "kill the consumer after the broker confirmed a result, before its job is acked",
    "batch.chunk_delay_ms": "wait after each chunk the batch pipeline scored (a slow run, to interrupt)",
    "inference.predict_delay_ms": "wait in every Predict and PredictBatch after validation, before scoring; a "
                                  "cancelled call (deadline, client gone) ends the wait with DEADLINE_EXCEEDED",
    "analytics.query_delay_ms": "make the database itself slow in every analytics call (PostgreSQL pg_sleep, SQLite "
                                "a counting query) inside the call's bounded SQL, which its deadline cancels",
}

_armed: dict[str, float] = {}  # point → milliseconds (delay points) or the kills left to count down
_lock = threading.Lock()


def configure(spec: str) -> None:
    """Arm the points of a PREDMESH_FAULTS value ("" disarms all); ConfigError names a bad or unknown entry."""
    armed: dict[str, float] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        name, _, raw = entry.partition(":")
        name = name.strip()
        if name not in POINTS:
            raise ConfigError(f"{ENV}: unknown fault point {name!r}; use one of {', '.join(POINTS)}")
        try:
            value = float(raw) if raw.strip() else (0.0 if is_delay(name) else 1.0)
        except ValueError:
            raise ConfigError(f"{ENV}: {entry!r}: the value after ':' must be a number") from None
        if value < 0 or (not is_delay(name) and (value < 1 or value != int(value))):
            raise ConfigError(f"{ENV}: {entry!r}: use milliseconds >= 0 for a delay, a count >= 1 for a kill")
        armed[name] = value
    with _lock:
        _armed.clear()
        _armed.update(armed)
    if armed:
        log.warning("fault injection armed (%s=%s): for tests only", ENV, spec)


def is_delay(name: str) -> bool:
    return name.endswith("_delay_ms")


def fault_point(name: str, wait: Callable[[float], bool] | None = None) -> bool:
    """Point `name` is reached: nothing unless armed. An armed kill point counts down and SIGKILLs the process at
    zero; an armed delay point waits its milliseconds, with `wait(seconds)` when given (it returns True when cut
    short). Returns True when the wait was cut short, else False."""
    if not _armed or name not in _armed:
        return False
    if is_delay(name):
        seconds = _armed[name] / 1000
        if wait is None:
            time.sleep(seconds)
            return False
        return bool(wait(seconds))
    with _lock:
        _armed[name] -= 1
        left = _armed[name]
    if left <= 0:
        log.warning("fault point %s: killing this process (SIGKILL)", name)
        os.kill(os.getpid(), signal.SIGKILL)
    return False
