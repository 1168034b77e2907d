"""Several connections to one server, spread over the processes that share its port.

A server started with PREDMESH_PROCESSES > 1 runs several processes on one port (SO_REUSEPORT): the kernel hands each
new connection to one of them by a hash of its ports, and that process answers every call on it. One client holds
one connection, so whatever it sends is scored by one process, one core. Two connections reach the same process of
two a third to a half of the time. Spread asks each connection which process it reached (Client.server_pid, from
ListModels' `predmesh-pid` trailer) and connects it again while that process holds the most connections so far and
no other holds as many: every process seen gets one before any gets two. Callers then take the connections in turn
(pick).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from predmesh.errors import PredmeshError

# Reconnects of a connection that reached a process another connection holds already: with two processes a new
# connection lands on the busier one half the time, so (1/2)^17 is left to chance (about one spread in 130,000; with
# 6 tries one in 128 fell on one process, seen in a test run). A try is a connection and a ListModels call: ~1 ms.
SPREAD_TRIES = 16


class Connection(Protocol):
    def server_pid(self) -> int | None: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=Connection)


class Spread(Generic[C]):
    """n connections made by connect() (each must open a connection of its own: Client(own_connection=True)),
    spread over the server's processes; pick() hands them out in turn."""

    def __init__(self, connect: Callable[[], C], n: int, *, tries: int = SPREAD_TRIES):
        if n < 1:
            raise ValueError("a spread needs at least one connection")
        self._connect = connect
        self._tries = tries
        self.connections: list[C] = [connect() for _ in range(n)]
        self.processes = self._spread()  # connections per server pid (empty: the server did not say)
        self._next = 0
        self._lock = threading.Lock()

    def _spread(self) -> dict[int, int]:
        """The connections per pid; stops early (leaving the rest as they are) when the server does not say or
        cannot answer yet (the calls' own retries deal with that)."""
        held: dict[int, int] = {}
        for i in range(len(self.connections)):
            pid = self._reach(i, held)
            if pid is None:
                return held
            held[pid] = held.get(pid, 0) + 1
        return held

    def _reach(self, i: int, held: dict[int, int]) -> int | None:
        """The process connection i settles on; None when the server does not say."""
        for attempt in range(self._tries + 1):
            try:
                pid = self.connections[i].server_pid()
            except PredmeshError:
                return None
            if pid is None or pid not in held or held[pid] < max(held.values()) or attempt == self._tries:
                return pid
            self.connections[i].close()
            self.connections[i] = self._connect()
        return None  # not reached: the last attempt returns

    def pick(self) -> C:
        """The next connection, round robin."""
        with self._lock:
            self._next = (self._next + 1) % len(self.connections)
            return self.connections[self._next]

    def close(self) -> None:
        for connection in self.connections:
            connection.close()

    def __enter__(self) -> Spread[C]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
