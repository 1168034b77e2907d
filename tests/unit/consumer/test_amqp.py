"""consumer.amqp.Connection: the frames pika writes in one event-loop turn reach the transport as one write."""
from __future__ import annotations

import asyncio

import pytest
from pika.adapters.asyncio_connection import AsyncioConnection

from consumer.amqp import Connection


@pytest.fixture
def written(monkeypatch):
    """What reaches pika's transport (the adapter's own _adapter_emit_data), one entry per write."""
    writes: list[bytes] = []
    monkeypatch.setattr(AsyncioConnection, "_adapter_emit_data", lambda self, data: writes.append(data))
    return writes


def connection(loop, state=AsyncioConnection.CONNECTION_OPEN) -> Connection:
    conn = Connection.__new__(Connection)  # no socket: only the write path is under test
    conn._predmesh_loop, conn._predmesh_frames, conn.connection_state = loop, [], state
    return conn


def test_frames_of_one_turn_are_joined_in_order(written):
    async def scenario():
        conn = connection(asyncio.get_running_loop())
        for i in range(256 * 3):  # a window of 256 results: method, header and body frame each
            conn._adapter_emit_data(b"%d," % i)
        assert written == []  # nothing before the turn ends
        await asyncio.sleep(0)
        assert written == [b"".join(b"%d," % i for i in range(768))]
        conn._adapter_emit_data(b"ack")  # a later turn: a write of its own
        await asyncio.sleep(0)
        assert written[1:] == [b"ack"]

    asyncio.run(scenario())


def test_frames_are_dropped_when_the_connection_closed_before_the_turn_ended(written):
    async def scenario():
        conn = connection(asyncio.get_running_loop())
        conn._adapter_emit_data(b"late")
        conn.connection_state = AsyncioConnection.CONNECTION_CLOSED
        await asyncio.sleep(0)
        assert written == []

    asyncio.run(scenario())
