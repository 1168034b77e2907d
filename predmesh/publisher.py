"""Publish prediction jobs to RabbitMQ (confirms, mandatory, persistent) and optionally wait for their results.

pika is imported here only, when a Publisher is created: the rest of the SDK does not need it.
"""
from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from predmesh import jobs

if TYPE_CHECKING:
    import pika
    from pika.adapters.blocking_connection import BlockingChannel
    from pika.channel import Channel
    from pika.frame import Method
    from pika.spec import Basic, BasicProperties

log = logging.getLogger(__name__)

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
REPLY_TO = "amq.rabbitmq.reply-to"        # direct reply-to: results come back on this connection
PUBLISHED_AT = "x-predmesh-published-at-ms"  # epoch milliseconds; the consumer measures end-to-end latency from it


class PublishError(Exception):
    """A job could not be handed to the broker (not confirmed within the retry time): it was NOT queued."""


class Publisher:
    """A blocking publisher: each publish returns once the broker confirmed it (persisted, routed to the queue).

    A lost connection is reopened with capped, jittered backoff and the unconfirmed job published again (same
    message_id, so the consumer stores it once) for up to `retry_for` seconds; then PublishError. The work queue
    is declared (as the consumer declares it) if it does not exist yet.
    """

    def __init__(self, url: str = DEFAULT_URL, *, prefix: str = "predmesh", delivery_limit: int = 10,
                 retry_for: float = 30.0, heartbeat_s: int = 30, blocked_timeout_s: float = 30.0):
        import pika  # lazily: only publishers need it
        import pika.exceptions
        import pika.spec

        self._pika = pika
        self.topology = jobs.Topology(prefix)
        self.delivery_limit = delivery_limit
        self.retry_for = retry_for
        self.params = pika.URLParameters(url)
        self.params.heartbeat = heartbeat_s
        self.params.blocked_connection_timeout = blocked_timeout_s
        self.params.connection_attempts = 1
        self.params.client_properties = {"connection_name": "predmesh-publisher"}
        self._conn: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._pipe: Channel | None = None  # the raw channel of publish_many's pipelined confirms
        self._pipe_seq, self._pipe_reply = 0, False
        self._seq_ids: dict[int, str] = {}
        self._pipe_confirmed: set[str] = set()
        self._pipe_returned: set[str] = set()
        self._results: dict[str, Message] = {}
        self._reply_consumer = False
        self.reconnects = 0

    # -- connection ------------------------------------------------------------------------------------------
    def _open(self) -> BlockingChannel:
        pika = self._pika
        self._conn = conn = pika.BlockingConnection(self.params)
        channel: BlockingChannel = conn.channel()
        self._channel = channel
        try:
            channel.queue_declare(self.topology.work_queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            self._channel = channel = conn.channel()
            self._declare(channel)
        channel.confirm_delivery()
        self._reply_consumer = False
        return channel

    def _declare(self, ch: BlockingChannel) -> None:
        t = self.topology
        ch.exchange_declare(t.dead_exchange, "fanout", durable=True)
        ch.exchange_declare(t.results_exchange, "topic", durable=True)
        ch.queue_declare(t.dead_queue, durable=True, arguments=t.dead_queue_arguments())
        ch.queue_bind(t.dead_queue, t.dead_exchange, routing_key="#")
        ch.queue_declare(t.work_queue, durable=True, arguments=t.work_queue_arguments(self.delivery_limit))

    def _drop(self) -> None:
        conn, pipe, self._conn, self._channel, self._pipe = self._conn, self._pipe, None, None, None
        if pipe is not None and pipe.is_open:
            try:
                pipe.close()
            except Exception:  # already broken
                pass
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # already broken
                pass

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- publishing ------------------------------------------------------------------------------------------
    def publish(self, job: Message, *, message_id: str | None = None, correlation_id: str | None = None,
                content_type: str = jobs.PROTOBUF, reply: bool = False,
                headers: Mapping[str, Any] | None = None) -> str:
        """Queue one job (PredictRequest or PredictBatchRequest); returns its message_id once confirmed.

        reply=True asks for the result on this connection (direct reply-to); collect it with wait_results().
        """
        pika = self._pika
        message_id = message_id or str(uuid.uuid4())
        body = jobs.encode(job, content_type)
        deadline = time.monotonic() + self.retry_for
        delay = 0.25
        while True:
            try:
                channel = self._channel or self._open()
                if reply and not self._reply_consumer:
                    channel.basic_consume(REPLY_TO, self._on_reply, auto_ack=True)
                    self._reply_consumer = True
                props = pika.BasicProperties(
                    content_type=content_type, type=jobs.type_name(job), message_id=message_id,
                    correlation_id=correlation_id or message_id, reply_to=REPLY_TO if reply else None,
                    delivery_mode=pika.DeliveryMode.Persistent,
                    headers={**(headers or {}), PUBLISHED_AT: int(time.time() * 1000)})
                channel.basic_publish("", self.topology.work_queue, body, props, mandatory=True)
                return message_id
            except pika.exceptions.UnroutableError:
                raise PublishError(f"the broker could not route the job to {self.topology.work_queue!r}") from None
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError,
                    pika.exceptions.NackError, OSError) as exc:
                # NackError, a lost connection, a closed channel: not confirmed, so publish again (same message_id)
                self._drop()
                if time.monotonic() + delay > deadline:
                    raise PublishError(f"job {message_id} not confirmed by the broker within {self.retry_for:g} s: "
                                       f"{exc!r}") from None
                log.warning("publish of %s not confirmed (%r); retrying in %.1f s", message_id, exc, delay)
                time.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 5.0)
                self.reconnects += 1

    def publish_many(self, items: Iterable[tuple[Message, str | None]], *, content_type: str = jobs.PROTOBUF,
                     reply: bool = False, window: int = 1000) -> list[str]:
        """Queue many (job, message_id) pairs with pipelined confirms (up to `window` unconfirmed at a time);
        returns their message_ids once every one is confirmed.

        One confirm round trip per job caps publish() at a few hundred jobs/s into a quorum queue (the broker
        fsyncs before each confirm); pipelined, the broker confirms many at once. Unconfirmed and nacked jobs are
        published again after a lost connection (same message_id), with the same backoff as publish(); PublishError
        when there is no progress for `retry_for` seconds or the work queue cannot be routed to.
        """
        pika = self._pika
        todo = [(job, mid or str(uuid.uuid4())) for job, mid in items]
        ids = [mid for _, mid in todo]
        confirmed: set[str] = set()
        progress_at, delay = time.monotonic(), 0.25
        while todo:
            before = len(confirmed)
            try:
                self._pipeline(todo, confirmed, content_type, reply, window)
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError, OSError) as exc:
                self._drop()
                if len(confirmed) > before:
                    progress_at, delay = time.monotonic(), 0.25
                if time.monotonic() + delay > progress_at + self.retry_for:
                    raise PublishError(f"{len(todo) - (len(confirmed) - before)} jobs not confirmed by the broker "
                                       f"within {self.retry_for:g} s: {exc!r}") from None
                log.warning("pipelined publish interrupted (%r); retrying the unconfirmed in %.1f s", exc, delay)
                time.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, 5.0)
                self.reconnects += 1
            else:
                if len(confirmed) > before:
                    progress_at, delay = time.monotonic(), 0.25
                left = len(todo) - (len(confirmed) - before)
                if left:  # nacked by the broker: publish those again after a pause
                    if time.monotonic() + delay > progress_at + self.retry_for:
                        raise PublishError(f"{left} jobs nacked by the broker for {self.retry_for:g} s")
                    time.sleep(random.uniform(delay / 2, delay))
                    delay = min(delay * 2, 5.0)
            todo = [(job, mid) for job, mid in todo if mid not in confirmed]
        return ids

    def _pipeline(self, todo: list[tuple[Message, str]], confirmed: set[str], content_type: str, reply: bool,
                  window: int) -> None:
        """Publish todo on a raw (non-blocking) channel of the connection, collecting confirmed message_ids."""
        pika = self._pika
        if self._conn is None:
            self._open()
        conn = self._conn
        assert conn is not None  # _open() set it
        pipe = self._pipe
        if pipe is None or not pipe.is_open:
            opened: list[Channel] = []
            # a raw channel: confirms need not be awaited one by one
            conn._impl.channel(on_open_callback=opened.append)  # type: ignore[attr-defined]  # pika's private impl
            while not opened:
                conn.process_data_events(0.05)
            self._pipe = pipe = opened[0]
            state = {"ready": False}
            pipe.confirm_delivery(self._on_pipe_confirm, callback=lambda _: state.update(ready=True))
            pipe.add_on_return_callback(self._on_pipe_return)
            while not state["ready"]:
                conn.process_data_events(0.05)
            self._pipe_seq, self._pipe_reply = 0, False
        if reply and not self._pipe_reply:
            pipe.basic_consume(REPLY_TO, self._on_reply, auto_ack=True)
            self._pipe_reply = True
        self._seq_ids = {}
        self._seq = self._pipe_seq
        self._pipe_confirmed, self._pipe_returned = confirmed, set()
        outstanding = self._seq_ids
        for job, mid in todo:
            while len(outstanding) >= window:
                conn.process_data_events(0.01)
            props = pika.BasicProperties(
                content_type=content_type, type=jobs.type_name(job), message_id=mid, correlation_id=mid,
                reply_to=REPLY_TO if reply else None, delivery_mode=pika.DeliveryMode.Persistent,
                headers={PUBLISHED_AT: int(time.time() * 1000)})
            pipe.basic_publish("", self.topology.work_queue, jobs.encode(job, content_type), props,
                               mandatory=True)
            self._seq += 1
            outstanding[self._seq] = mid
            self._pipe_seq = self._seq
        while outstanding:
            conn.process_data_events(0.01)
        if self._pipe_returned:
            raise PublishError(f"the broker could not route {len(self._pipe_returned)} job(s) to "
                               f"{self.topology.work_queue!r}")

    def _on_pipe_confirm(self, frame: Method[Any]) -> None:
        m = frame.method
        seqs = [s for s in self._seq_ids if s <= m.delivery_tag] if m.multiple else [m.delivery_tag]
        nack = isinstance(m, self._pika.spec.Basic.Nack)
        for seq in seqs:
            mid = self._seq_ids.pop(seq, None)
            if mid is not None and not nack and mid not in self._pipe_returned:
                self._pipe_confirmed.add(mid)

    def _on_pipe_return(self, channel: Channel, method: Basic.Return, props: BasicProperties, body: bytes) -> None:
        if props.message_id is not None:
            self._pipe_returned.add(props.message_id)

    def predict(self, model: str, features: Mapping[str, float], **kwargs: Any) -> str:
        """Queue one row for `model`; see publish()."""
        return self.publish(jobs.predict_job(model, features), **kwargs)

    def _on_reply(self, channel: Channel | BlockingChannel, method: Basic.Deliver, props: BasicProperties,
                  body: bytes) -> None:
        if props.correlation_id is None:  # not an answer to any of our jobs
            return
        try:
            self._results[props.correlation_id] = jobs.decode_result(props.type, props.content_type, body)
        except Exception as exc:  # a reply we cannot read is reported by wait_results as missing
            log.warning("unreadable result for %s: %r", props.correlation_id, exc)

    def wait_results(self, correlation_ids: Iterable[str], timeout: float = 30.0) -> dict[str, Message]:
        """Results (PredictResponse / PredictBatchResponse, or google.rpc.Status for a job the consumer rejected)
        of jobs published with reply=True, by correlation_id.

        Returns what arrived within the timeout (a result lost with a broken connection does not come back).
        """
        wanted = set(correlation_ids)
        deadline = time.monotonic() + timeout
        while not wanted <= self._results.keys() and time.monotonic() < deadline and self._conn is not None:
            try:
                self._conn.process_data_events(time_limit=min(0.2, max(0.0, deadline - time.monotonic())))
            except (self._pika.exceptions.AMQPError, OSError):
                self._drop()
                break
        return {cid: self._results.pop(cid) for cid in wanted if cid in self._results}
