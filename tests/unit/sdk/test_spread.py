"""predmesh.spread without a server: each connection made reaches the next pid of a script."""
from __future__ import annotations

import pytest

from predmesh import Unavailable
from predmesh.spread import SPREAD_TRIES, Spread


class Script:
    """connect() for Spread: the n-th connection made reports the n-th pid of the script (an exception: raised)."""

    def __init__(self, pids: list):
        self.pids = iter(pids)
        self.made: list[Fake] = []

    def __call__(self) -> Fake:
        self.made.append(Fake(next(self.pids)))
        return self.made[-1]


class Fake:
    def __init__(self, pid):
        self.pid, self.closed = pid, False

    def server_pid(self):
        if isinstance(self.pid, Exception):
            raise self.pid
        return self.pid

    def close(self):
        self.closed = True


def run(pids: list, n: int) -> tuple[dict[int, int], int]:
    script = Script(pids)
    spread = Spread(script, n)
    kept = spread.connections
    assert all(c.closed for c in script.made if c not in kept) and not any(c.closed for c in kept)
    return spread.processes, len(script.made)


def test_every_process_seen_gets_a_connection_before_any_gets_two():
    # the second connection lands on 7 twice, then on 8
    assert run([7, 7, 7, 8], 2) == ({7: 1, 8: 1}, 4)
    # two processes, four connections (all four made first): the third finds no process holding fewer, and keeps
    # what its last try reached; the fourth is made again until it reaches the process with one
    tries = [8, 7] * (SPREAD_TRIES // 2)
    assert run([7, 8, 7, 7, *tries, 8], 4) == ({7: 2, 8: 2}, 4 + SPREAD_TRIES + 1)


def test_one_process_gives_up_after_the_tries_and_a_silent_server_is_left_alone():
    assert run([7] * (2 + SPREAD_TRIES), 2) == ({7: 2}, 2 + SPREAD_TRIES)
    assert run([None, None], 2) == ({}, 2)  # a server that does not say: nothing is reconnected
    assert run([Unavailable("down"), 8], 2) == ({}, 2)  # one that cannot answer yet: the calls' retries see to it


def test_pick_takes_the_connections_in_turn_and_close_closes_them_all():
    script = Script([1, 2, 3])
    with Spread(script, 3) as spread:
        picked = [spread.pick() for _ in range(6)]
        assert picked[:3] == picked[3:] and {id(c) for c in picked} == {id(c) for c in script.made}
    assert all(c.closed for c in script.made)
    with pytest.raises(ValueError):
        Spread(script, 0)
