"""The pika plumbing around handle(): consume a window, score it off the event loop, publish results with confirms,
ack each job only once its result (or dead letter) is confirmed; hold transient failures and retry; reconnect."""
from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pika
import pika.channel
import pika.connection
import pika.exceptions

from consumer import amqp
from consumer.handler import Action, Delivery, Limits, Outcome, handle, reject
from consumer.metrics import ConsumerMetrics
from consumer.settings import ConsumerSettings
from predmesh.faults import fault_point
from predmesh.jobs import Topology

log = logging.getLogger(__name__)

PUBLISHED_AT = "x-predmesh-published-at-ms"  # set by predmesh.publisher: epoch ms, for end-to-end latency
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"    # direct reply-to pseudo-queue (and its amq.rabbitmq.reply-to.* names)


def published_at(d: Delivery) -> float | None:
    """When the job was published (epoch seconds): the predmesh header (ms), else the AMQP timestamp property
    (seconds, as producers in other languages set it), else None."""
    ms = d.headers.get(PUBLISHED_AT)
    if isinstance(ms, int) and not isinstance(ms, bool):
        return ms / 1000
    if isinstance(d.timestamp, int) and d.timestamp > 0:
        return float(d.timestamp)
    return None


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, first: float, cap: float):
        self.first, self.cap, self.attempt = first, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2 ** self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


def window_ready(waiting: int, *, scoring: int, unconfirmed: int, outstanding: int, prefetch: int, windows: int,
                 stopping: bool) -> bool:
    """Whether `waiting` delivered jobs should be scored now (a free window slot given) rather than grow.

    Now when they make a full share of the prefetch (prefetch / windows in flight), when the pipeline is idle (no
    window scoring, no result awaiting its confirm: no added latency), when stopping, or when no more deliveries can
    come before a window being scored finishes (every prefetch slot taken, no confirm on its way to free some).
    Otherwise they wait for the confirms on their way: their acks let the broker deliver more. Before, a window
    started on whatever had arrived since the last one (at prefetch 64, 21 jobs per window on average instead of
    32: more calls, confirm rounds and acks per job).
    """
    if not waiting:
        return False
    if stopping or waiting >= prefetch // windows:
        return True
    if unconfirmed:
        return False
    return not scoring or outstanding >= prefetch


class Worker:
    """Consumes until `stop` is set, across broker sessions; scoring goes through `scorer` in one thread."""

    def __init__(self, settings: ConsumerSettings, scorer, metrics: ConsumerMetrics):
        self.settings = settings
        self.scorer = scorer
        self.metrics = metrics
        self.topology = Topology(settings.amqp.prefix)
        self.limits = Limits(max_body_bytes=settings.max_body_bytes, max_call_rows=settings.max_call_rows)
        self.executor = ThreadPoolExecutor(settings.windows_in_flight, thread_name_prefix="score")
        self.session: Session | None = None
        metrics.held_oldest.set_function(self._oldest_held)

    def _oldest_held(self) -> float:
        """Seconds since the oldest held job's first transient failure (read by the metrics thread)."""
        session = self.session
        if session is None:
            return 0.0
        try:
            firsts = [first for first, _ in tuple(session.held_since.values())]
        except RuntimeError:  # changed while copied: the next scrape reads it
            return 0.0
        return max(0.0, time.monotonic() - min(firsts)) if firsts else 0.0

    async def run(self, stop: asyncio.Event) -> None:
        params = amqp.parameters(self.settings.amqp.url, self.settings.amqp.heartbeat_s,
                                 self.settings.amqp.blocked_timeout_s)
        backoff = Backoff(0.5, self.settings.amqp.reconnect_max_s)
        while not stop.is_set():
            session = self.session = Session(self, params, stop)
            try:
                await session.run()
            except amqp.SessionClosed as exc:
                log.warning("broker session ended: %s", exc)
            except Exception:  # a bug or an unexpected library error must not end the consumer: new session
                log.exception("broker session failed unexpectedly")
            finally:
                self.metrics.connected.set(0)
                self.metrics.held.set(0)
            if stop.is_set():
                break
            if session.consumed:
                backoff.reset()
            self.metrics.reconnects.inc()
            delay = backoff.next()
            log.info("reconnecting to the broker in %.1f s", delay)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
        self.executor.shutdown(wait=True)


class Session:
    """One connection + channel: topology, consume, window loop; raises SessionClosed when the broker goes away."""

    def __init__(self, worker: Worker, params: pika.connection.Parameters, stop: asyncio.Event):
        self.w = worker
        self.params = params
        self.stop = stop
        self.loop = asyncio.get_running_loop()
        self.closed: asyncio.Future = self.loop.create_future()
        self.wake = asyncio.Event()
        self.pending: list[tuple[Delivery, float]] = []   # delivered, not yet scored
        self.held: list[tuple[Delivery, float]] = []      # scored with a transient failure: retried
        self.unconfirmed: dict[int, tuple[Delivery, float, Outcome]] = {}  # publish seq -> job awaiting confirm
        self.seq = 0
        self.consumed = 0       # deliveries this session
        self.counted = 0        # ... of which added to the consumed metric
        self.redelivered = 0    # redeliveries not yet added to their metric
        self.windows = 0        # windows started this session
        self.channel: pika.channel.Channel | None = None
        self.consumer_tag: str | None = None
        self.aborted = False
        self.outstanding: set[int] = set()  # delivery tags received and not acked yet
        self.held_since: dict[int, tuple[float, int]] = {}  # delivery tag -> (first transient failure, retries)

    def _on_close(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_exception(amqp.SessionClosed(repr(exc)))
            self.closed.exception()  # retrieved: no "never retrieved" warning when nobody awaits it
        self.wake.set()

    @property
    def _channel(self) -> pika.channel.Channel:
        """The session's open channel (opened before any delivery can arrive)."""
        assert self.channel is not None
        return self.channel

    async def run(self) -> None:
        conn = await amqp.connect(self.params, self._on_close)
        try:
            self.channel = await amqp.open_channel(conn, self._on_close)
            await amqp.declare(self.channel, self.w.topology, self.w.settings.amqp.delivery_limit)
            await amqp.call(self._channel.confirm_delivery, self._on_confirm)
            self._channel.add_on_return_callback(self._on_return)
            # the broker cancels our consumer when the queue is deleted (or moved): start over, re-declaring it
            self._channel.add_on_cancel_callback(
                lambda frame: self._on_close(f"the broker cancelled the consumer ({frame.method.consumer_tag})"))
            await amqp.call(self._channel.basic_qos, prefetch_count=self.w.settings.prefetch)
            self.consumer_tag = self._channel.basic_consume(self.w.topology.work_queue, self._on_message)
            self.w.metrics.connected.set(1)
            log.info("consuming %s (prefetch %d), scoring on %s", self.w.topology.work_queue,
                     self.w.settings.prefetch, self.w.settings.target)
            helpers = [self.loop.create_task(self._poll_dead_letters()), self.loop.create_task(self._watchdog(conn))]
            try:
                await self._loop()
            finally:
                self._count_deliveries()
                for task in helpers:
                    task.cancel()
        finally:
            if conn.is_open and not self.aborted:
                try:
                    conn.close()
                except Exception:  # the transport is already gone
                    pass

    # -- broker callbacks (event loop thread) ---------------------------------------------------------------
    def _on_message(self, channel, method, props, body) -> None:
        d = Delivery(tag=method.delivery_tag, body=body, content_type=props.content_type, type=props.type,
                     message_id=props.message_id, correlation_id=props.correlation_id, reply_to=props.reply_to,
                     headers=props.headers or {}, redelivered=method.redelivered, timestamp=props.timestamp)
        self.pending.append((d, time.monotonic()))
        self.outstanding.add(d.tag)
        self.consumed += 1
        if method.redelivered:
            self.redelivered += 1
        self.wake.set()

    def _count_deliveries(self) -> None:
        """Add the deliveries since the last call to the metrics (once per window, not once per message)."""
        self.w.metrics.consumed.inc(self.consumed - self.counted)
        self.counted = self.consumed
        if self.redelivered:
            self.w.metrics.redelivered.inc(self.redelivered)
            self.redelivered = 0

    def _on_confirm(self, frame) -> None:
        method = frame.method
        if method.multiple:  # every publish up to this sequence number (insertion order = ascending numbers)
            seqs = list(itertools.takewhile(lambda s: s <= method.delivery_tag, self.unconfirmed))
        else:
            seqs = [method.delivery_tag]
        nacked = isinstance(method, pika.spec.Basic.Nack)
        done, acked = [], 0
        now, wall = time.monotonic(), time.time()
        metrics = self.w.metrics
        for seq in seqs:
            entry = self.unconfirmed.pop(seq, None)
            if entry is None:
                continue
            d, received, outcome = entry
            if nacked:  # the broker could not take the result: score again later (idempotent)
                metrics.publish_nacked.inc()
                self.held.append((d, received))
                continue
            fault_point("consumer.confirmed")
            done.append(d.tag)
            if outcome.action is Action.ACK:
                acked += 1
                metrics.job_seconds.observe(now - received)
                at = published_at(d)
                if at is not None:
                    metrics.end_to_end.observe(max(0.0, wall - at))
            else:
                metrics.rejected.labels(outcome.reason).inc()
        if done:
            self._ack(done)
            metrics.acked.inc(acked)
        self.wake.set()

    def _ack(self, tags: list[int]) -> None:
        """Ack these deliveries: one `multiple` ack for those below the oldest delivery still outstanding."""
        acking = set(tags)
        self.outstanding -= acking
        floor = min(self.outstanding, default=None)
        below = [t for t in tags if floor is None or t < floor]
        if len(below) > 1:
            self._channel.basic_ack(max(below), multiple=True)
            acking -= set(below)
        for tag in sorted(acking):
            self._channel.basic_ack(tag)

    def _on_return(self, channel, method, props, body) -> None:
        # mandatory publish that no queue took: a result nobody subscribed to (or whose requester left) is still
        # stored by the server, so the job is done; the confirm that follows acks it. RabbitMQ returns a mandatory
        # publish to direct reply-to although it delivered it (no queue is involved): not counted.
        if method.exchange == "" and method.routing_key.startswith(DIRECT_REPLY_TO):
            log.debug("broker returned a direct reply-to publish (%s): delivered unless the requester left",
                      method.reply_text)
            return
        self.w.metrics.unroutable.inc()
        log.log(logging.ERROR if method.exchange == self.w.topology.dead_exchange else logging.DEBUG,
                "broker returned a message to %r key %r: %s", method.exchange, method.routing_key, method.reply_text)

    # -- the window loop --------------------------------------------------------------------------------------
    async def _loop(self) -> None:
        """Start scoring windows (up to `windows_in_flight` at once, so one window's RPC and fsyncs overlap the
        next one's) until stopped; a transient failure holds its jobs and pauses new windows for the backoff."""
        self.backoff = Backoff(0.2, self.w.settings.retry_max_s)
        self.retry_at = 0.0
        inflight: set[asyncio.Task] = set()
        stopping_since = None
        while True:
            if self.closed.done():
                self.closed.result()  # raises SessionClosed
            for task in [t for t in inflight if t.done()]:
                inflight.discard(task)
                task.result()  # a failure of the window's task ends the session
            if self.stop.is_set() and stopping_since is None:
                stopping_since = time.monotonic()
                await self._cancel_consumer()
            if stopping_since is not None:
                if not (self.pending or self.held or self.unconfirmed or inflight):
                    log.info("stopped: every in-flight job finished and acked (%d jobs in %d windows this session)",
                             self.consumed, self.windows)
                    return
                if time.monotonic() - stopping_since > self.w.settings.grace_s:
                    log.warning("grace of %.0f s over: giving %d jobs back to the broker", self.w.settings.grace_s,
                                len(self.pending) + len(self.held) + len(self.unconfirmed))
                    return
            now = time.monotonic()
            if len(inflight) < self.w.settings.windows_in_flight and now >= self.retry_at \
                    and self._window_ready(inflight, stopping_since is not None):
                window, self.pending, self.held = self.held + self.pending, [], []
                self._count_deliveries()
                self.windows += 1
                inflight.add(self.loop.create_task(self._score(window)))
                continue
            self.wake.clear()
            wake = asyncio.ensure_future(self.wake.wait())
            timeout = max(0.01, min(1.0, self.retry_at - now)) if self.retry_at > now else 1.0
            try:
                await self._wait(asyncio.wait([wake, *inflight], return_when=asyncio.FIRST_COMPLETED), timeout)
            finally:
                wake.cancel()

    def _window_ready(self, inflight: set, stopping: bool) -> bool:
        return window_ready(len(self.pending) + len(self.held), scoring=len(inflight),
                            unconfirmed=len(self.unconfirmed), outstanding=len(self.outstanding),
                            prefetch=self.w.settings.prefetch, windows=self.w.settings.windows_in_flight,
                            stopping=stopping)

    async def _score(self, window: list[tuple[Delivery, float]]) -> None:
        """Score one window off the event loop, then publish its results and dead letters (acks follow confirms)."""
        self.w.metrics.window.observe(len(window))
        outcomes = await self.loop.run_in_executor(
            self.w.executor, handle, [d for d, _ in window], self.w.scorer, self.w.topology, self.w.limits)
        if self.closed.done():
            return  # the session is gone: the broker gives these jobs back
        fault_point("consumer.answered")
        retry = []
        now = time.monotonic()
        try:
            for (d, received), outcome in zip(window, outcomes):
                if outcome.action is Action.RETRY:
                    first, retries = self.held_since.get(d.tag, (now, 0))
                    if now - first >= self.w.settings.hold_max_s:  # bounded: dead-lettered with its last error
                        assert outcome.code is not None
                        self.held_since.pop(d.tag, None)
                        outcome = reject(d, outcome.code, f"held {now - first:.0f} s over {retries + 1} attempts "
                                         f"(PREDMESH_CONSUMER_HOLD_MAX_S); last error: {outcome.error}",
                                         self.w.topology, "held_too_long")
                        self._publish(d, received, outcome)
                        continue
                    self.held_since[d.tag] = (first, retries + 1)
                    retry.append((d, received))
                    self.w.metrics.retried.labels(outcome.reason).inc()
                else:
                    self.held_since.pop(d.tag, None)
                    self._publish(d, received, outcome)
        except pika.exceptions.AMQPError as exc:
            raise amqp.SessionClosed(f"publishing results failed: {exc!r}") from None
        if retry:
            self.held = retry + self.held
            self.w.metrics.held.set(len(self.held))
            delay = self.backoff.next()
            self.retry_at = time.monotonic() + delay
            log.warning("%d jobs held after a transient failure (%s); retrying in %.1f s", len(retry),
                        outcomes[[o.action for o in outcomes].index(Action.RETRY)].reason, delay)
        else:
            self.backoff.reset()
            self.w.metrics.held.set(len(self.held))
        self.wake.set()

    def _publish(self, d: Delivery, received: float, outcome: Outcome) -> None:
        p = outcome.publish
        assert p is not None  # ACK and REJECT outcomes carry what to publish; RETRY ones are held, not published
        if outcome.reply is not None:  # a rejected job's error result to its caller: best effort, not awaited
            self._basic_publish(outcome.reply, mandatory=False)
            self.seq += 1  # every publish on a confirm channel takes a sequence number; nobody waits for this one
        self._basic_publish(p, mandatory=True)
        self.seq += 1
        self.unconfirmed[self.seq] = (d, received, outcome)

    def _basic_publish(self, p, mandatory: bool) -> None:
        props = pika.BasicProperties(content_type=p.content_type or None, type=p.type or None,
                                     correlation_id=p.correlation_id, message_id=p.message_id,
                                     headers=dict(p.headers) or None, delivery_mode=pika.DeliveryMode.Persistent)
        self._channel.basic_publish(p.exchange, p.routing_key, p.body, props, mandatory=mandatory)

    async def _cancel_consumer(self) -> None:
        if self.consumer_tag is not None and self._channel.is_open:
            log.info("stopping: no new jobs; finishing %d in flight",
                     len(self.pending) + len(self.held) + len(self.unconfirmed))
            await self._wait(amqp.call(self._channel.basic_cancel, self.consumer_tag), 10)

    async def _wait(self, awaitable, timeout: float) -> None:
        """Await something, or less if the session closes or stop is requested."""
        task = asyncio.ensure_future(awaitable)
        # once stopping, stop no longer cuts waits short (a retry backoff must still wait)
        stop = asyncio.ensure_future(self.stop.wait() if not self.stop.is_set() else asyncio.sleep(timeout))
        try:
            await asyncio.wait([task, self.closed, stop], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            task.cancel()
            stop.cancel()

    async def _watchdog(self, conn) -> None:
        """Drop a link that went silent within ~1.25 heartbeats (pika's own check needs up to 2 x (heartbeat + 5 s)).

        The broker sends a heartbeat every heartbeat/2 s on an idle link, so no byte for a whole heartbeat interval
        means two missed heartbeats.
        """
        heartbeat = self.w.settings.amqp.heartbeat_s
        if not heartbeat:
            return
        last, seen = conn.bytes_received, time.monotonic()
        while not self.closed.done():
            await asyncio.sleep(heartbeat / 4)
            if conn.bytes_received != last:
                last, seen = conn.bytes_received, time.monotonic()
            elif time.monotonic() - seen > heartbeat:
                log.warning("no data from the broker for %.1f s (missed heartbeats): dropping the connection",
                            time.monotonic() - seen)
                self.aborted = True
                conn.abort(pika.exceptions.AMQPHeartbeatTimeout(
                    f"no data from the broker for more than {heartbeat} s"))
                return

    async def _poll_dead_letters(self) -> None:
        """Keep the DLQ depth gauge current (a passive declare every 10 s)."""
        while True:
            try:
                frame = await asyncio.wait_for(
                    amqp.call(self._channel.queue_declare, queue=self.w.topology.dead_queue, passive=True), 10)
                self.w.metrics.dead_letters.set(frame.method.message_count)
            except (TimeoutError, pika.exceptions.AMQPError):
                pass
            await asyncio.sleep(10)
