"""The test support's ports: a held closed port, free_port() outside the ephemeral range, the retry on a port
taken meanwhile, and the server start-up lines ServerProc reads its ports from."""
from __future__ import annotations

import errno
import logging
import socket
from pathlib import Path

import pytest

from tests.support.procs import BOUND, closed_port, free_port, retry_on_port_clash


def test_a_closed_port_refuses_connections_and_cannot_be_taken_while_held():
    with closed_port() as port:
        with socket.socket() as client:
            assert client.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE


def test_free_ports_come_from_below_the_ephemeral_range_and_are_bindable():
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        port = free_port()
        assert 20000 <= port < low
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_start_that_lost_its_port_is_retried_on_new_ports_and_other_failures_are_not():
    attempts, picks = [], []

    def clashing_once():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("server exited with 1:\npredmesh serve: gRPC address 127.0.0.1:23456 is already in use")
        return "started"
    assert retry_on_port_clash(clashing_once, lambda: picks.append(1)) == "started"
    assert len(attempts) == 2 and len(picks) == 1

    def broken():
        attempts.append(1)
        raise RuntimeError("server exited with 2:\nPREDMESH_PROCESSES='two' is not a number")
    attempts.clear()
    with pytest.raises(RuntimeError, match="not a number"):
        retry_on_port_clash(broken, lambda: None)
    assert len(attempts) == 1

    def always_taken():
        attempts.append(1)
        raise RuntimeError("could not bind IPv4 address \"127.0.0.1\": Address already in use")
    attempts.clear()
    with pytest.raises(RuntimeError, match="Address already in use"):
        retry_on_port_clash(always_taken, lambda: None, attempts=3)
    assert len(attempts) == 3


def test_the_server_start_up_lines_name_the_bound_ports(caplog):
    """The lines inference/rpc/server.py and inference/process/workers.py log, formatted as they format them."""
    log = logging.getLogger("inference.rpc.server")
    with caplog.at_level(logging.INFO):
        log.info("predmesh inference listening on %s:%d (gRPC); metrics: %s; models: %s", "127.0.0.1", 41234,
                 "http://127.0.0.1:42345/metrics", "iris@2")
        log.info("predmesh inference listening on %s:%d (gRPC); metrics: %s; models: %s", "127.0.0.1", 41235,
                 "off", "none")
        log.info("predmesh inference: %d processes sharing %s; metrics: %s", 2, "127.0.0.1:24000",
                 "http://127.0.0.1:42346/metrics")
    found = [BOUND.search(r.getMessage()) for r in caplog.records]
    assert [(m[1], m[2]) if m else None for m in found] == [("41234", "42345"), ("41235", None), ("24000", "42346")]
