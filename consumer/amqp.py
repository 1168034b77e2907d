"""pika's asyncio adapter as awaitables: connect, open a channel, run a synchronous AMQP method, declare topology."""
from __future__ import annotations

import asyncio
import ssl

import pika
import pika.channel
import pika.connection
from pika.adapters.asyncio_connection import AsyncioConnection

from predmesh.jobs import Topology


class SessionClosed(Exception):
    """The connection or channel closed (broker gone, heartbeat missed, blocked too long, channel error)."""


def parameters(url: str, heartbeat_s: int, blocked_timeout_s: float) -> pika.URLParameters:
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat_s
    params.blocked_connection_timeout = blocked_timeout_s
    params.connection_attempts = 1
    params.socket_timeout = 10
    params.stack_timeout = 15
    params.client_properties = {"connection_name": "predmesh-consumer"}
    if params.ssl_options is None and url.startswith("amqps://"):
        params.ssl_options = pika.SSLOptions(ssl.create_default_context())
    return params


class Connection(AsyncioConnection):
    """pika's asyncio connection with the frames of one event-loop turn sent together, and abort() for a link
    that went silent.

    Every frame pika writes passes through _adapter_emit_data, the hook pika.connection.Connection declares for
    its adapters to override; the asyncio adapter hands each frame to its transport, which makes one send() per
    frame (a publish is 3 frames: a window of 256 results cost ~770 syscalls, the largest single cost in the
    consumer's profile). Here the frames written in one turn of the loop are joined and handed over once, at the
    end of the turn: byte for byte the same stream. (This used to be a patch of pika's private transport class,
    process-wide; the override is scoped to the consumer's own connections.)
    """

    def __init__(self, params: pika.connection.Parameters, loop: asyncio.AbstractEventLoop, **callbacks):
        self._predmesh_loop = loop
        self._predmesh_frames: list[bytes] = []
        super().__init__(params, custom_ioloop=loop, **callbacks)

    def _adapter_emit_data(self, data: bytes) -> None:
        if not self._predmesh_frames:
            self._predmesh_loop.call_soon(self._predmesh_flush)
        self._predmesh_frames.append(data)

    def _predmesh_flush(self) -> None:
        data = b"".join(self._predmesh_frames)
        self._predmesh_frames.clear()
        if not self.is_closed:  # closed meanwhile: the transport is gone, and with it what it had not sent
            # pika 1.4 defines it (pika/connection.py); the pika stubs omit the adapters' private hooks.
            super()._adapter_emit_data(data)  # type: ignore[misc]

    def abort(self, error: Exception) -> None:
        """Drop the link now, as pika's own heartbeat checker does (a silent peer never answers the close
        handshake close() starts); the on_close callback follows with `error`."""
        # pika 1.4 defines it (pika/connection.py, what its heartbeat checker calls); the stubs omit it.
        self._terminate_stream(error)  # type: ignore[attr-defined]


async def connect(params: pika.connection.Parameters, on_close) -> Connection:
    """An open connection; on_close(exc) is called once if it closes later."""
    loop = asyncio.get_running_loop()
    opened: asyncio.Future = loop.create_future()

    def on_open(conn):
        if not opened.done():
            opened.set_result(conn)

    def on_open_error(conn, exc):
        if not opened.done():
            opened.set_exception(SessionClosed(f"cannot connect to the broker: {exc!r}"))

    def on_closed(conn, exc):
        if not opened.done():
            opened.set_exception(SessionClosed(f"connection closed while opening: {exc!r}"))
        else:
            on_close(exc)

    Connection(params, loop, on_open_callback=on_open, on_open_error_callback=on_open_error,
               on_close_callback=on_closed)
    return await opened


async def open_channel(conn: AsyncioConnection, on_close) -> pika.channel.Channel:
    loop = asyncio.get_running_loop()
    opened: asyncio.Future = loop.create_future()
    conn.channel(on_open_callback=opened.set_result)
    channel = await opened
    channel.add_on_close_callback(lambda ch, exc: on_close(exc))
    return channel


async def call(method, *args, **kwargs):
    """Run a pika channel method that takes `callback=` and await its reply frame."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def callback(frame):
        if not done.done():
            done.set_result(frame)

    method(*args, callback=callback, **kwargs)
    return await done


async def declare(channel, topology: Topology, delivery_limit: int) -> None:
    """Declare exchanges, queues and bindings; idempotent (same arguments every time).

    The work queue is a durable quorum queue with a delivery limit, dead-lettering at-least-once (RabbitMQ 3.10+;
    it needs overflow reject-publish) to a fanout DLX bound to the dead-letter queue. Queue arguments cannot change
    once declared: a queue declared with other arguments makes this fail with PRECONDITION_FAILED (delete it or
    use another prefix).
    """
    await call(channel.exchange_declare, exchange=topology.dead_exchange, exchange_type="fanout", durable=True)
    await call(channel.exchange_declare, exchange=topology.results_exchange, exchange_type="topic", durable=True)
    await call(channel.queue_declare, queue=topology.dead_queue, durable=True,
               arguments=topology.dead_queue_arguments())
    await call(channel.queue_bind, queue=topology.dead_queue, exchange=topology.dead_exchange, routing_key="#")
    await call(channel.queue_declare, queue=topology.work_queue, durable=True,
               arguments=topology.work_queue_arguments(delivery_limit))
