"""End-to-end throughput of the RabbitMQ path (queued job → scored, stored, result received) by prefetch, against
the broker's own ceiling for the same messages with no scoring, in one run.

Usage:  .venv/bin/python bench/queue_bench.py [--jobs 20000] [--prefetch 64,256,1000] [--processes auto]
                                              [--amqp-url URL] [--pg-url URL]

For each prefetch: 20,000 persistent protobuf PredictRequest jobs are queued on a fresh quorum queue (the consumer's
topology, a unique prefix on the broker at PREDMESH_BENCH_AMQP_URL / PREDMESH_TEST_AMQP_URL), then one
`python -m consumer` (its defaults) scores them through `python -m inference serve` (durable persistence, a fresh
PostgreSQL schema, PREDMESH_PROCESSES as the product's default unless --processes) and publishes each result to the
results exchange, where a reader counts them (distinct correlation ids).
jobs/s = results between the first and the last result received / that time (the consumer's start-up is not
counted). The ceiling: the same 20,000 messages queued on another fresh quorum queue and drained by a plain pika
consumer with the same prefetch (no decoding, no scoring, no result). Both sides read with the same loop (drain():
one `multiple` ack per quarter of its prefetch). Every job must end as
exactly one stored row. Targets: >= 2,000 jobs/s with durable persistence and >= 0.5x the ceiling.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pika

from bench import loadtools
from bench.persistence import Schema, settle, start_server
from predmesh import jobs

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
DEFAULT_PG = "postgresql://predmesh:predmesh@127.0.0.1:5432/predmesh_test"
ROWS = [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 4.2, "petal_width": 1.3},
        {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}]
RESULTS_PREFETCH = 1000  # the result reader's: it must never be what limits the end-to-end rate


def declare(ch, topology: jobs.Topology) -> None:
    ch.exchange_declare(topology.dead_exchange, "fanout", durable=True)
    ch.exchange_declare(topology.results_exchange, "topic", durable=True)
    ch.queue_declare(topology.dead_queue, durable=True, arguments=topology.dead_queue_arguments())
    ch.queue_bind(topology.dead_queue, topology.dead_exchange, "#")
    ch.queue_declare(topology.work_queue, durable=True, arguments=topology.work_queue_arguments())


def fill(url: str, queue: str, bodies: list[tuple[str, bytes]]) -> float:
    """Publish every job persistent, then wait until the queue holds them all; returns msgs/s.

    No per-message confirm (a quorum queue fsyncs before each confirm, ~100 confirms/s one at a time here): the
    queue depth reaching the count is the check that the broker took every message.
    """
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        ch = conn.channel()
        started = time.perf_counter()
        for mid, body in bodies:
            ch.basic_publish("", queue, body, pika.BasicProperties(
                content_type=jobs.PROTOBUF, type=jobs.PREDICT, message_id=mid, delivery_mode=2))
        while ch.queue_declare(queue, passive=True).method.message_count < len(bodies):
            if time.perf_counter() - started > 300:
                raise SystemExit(f"the broker did not take all {len(bodies)} messages")
            conn.sleep(0.05)
        return len(bodies) / (time.perf_counter() - started)


def drop(url: str, topology: jobs.Topology, extra=()) -> None:
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        ch = conn.channel()
        for q in (topology.work_queue, topology.dead_queue, *extra):
            ch.queue_delete(q)
        for x in (topology.dead_exchange, topology.results_exchange):
            ch.exchange_delete(x)


class Timeline:
    """Arrival times of distinct ids, from a reader thread."""

    def __init__(self):
        self.first = self.last = None
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def add(self, key: str) -> None:
        now = time.perf_counter()
        with self.lock:
            if key in self.seen:
                return
            self.seen.add(key)
            self.first = self.first or now
            self.last = now

    def rate(self) -> float:
        return (len(self.seen) - 1) / (self.last - self.first) if self.last and self.last > self.first else 0.0


def drain(url: str, queue: str, prefetch: int, n: int, timeline: Timeline, key, stop: threading.Event) -> None:
    """Consume until `n` distinct ids arrived (or `stop`): the one reading loop of both sides of the comparison.

    Acks go as one `multiple` ack per quarter of the prefetch (and one for the rest at the end), as the consumer
    acks: a per-message ack costs the broker and pika more than the delivery itself, and a reader that paid it would
    lower the ceiling and slow the end-to-end side with work neither is measuring.
    """
    every = max(1, prefetch // 4)
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=prefetch)
        unacked = 0

        def on_message(ch, method, props, body):
            nonlocal unacked
            timeline.add(key(props))
            unacked += 1
            done = len(timeline.seen) >= n
            if unacked >= every or done:
                ch.basic_ack(method.delivery_tag, multiple=True)
                unacked = 0
            if done:
                ch.stop_consuming()

        ch.basic_consume(queue, on_message)
        while ch.consumer_tags and not stop.is_set():
            conn.process_data_events(time_limit=0.5)


def ceiling(url: str, n: int, prefetch: int, bodies) -> tuple[float, float]:
    """(publish msgs/s, drain msgs/s) of the broker alone for the same messages."""
    topology = jobs.Topology(f"bench{uuid.uuid4().hex[:8]}")
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        declare(conn.channel(), topology)
    try:
        publish_rate = fill(url, topology.work_queue, bodies)
        timeline = Timeline()
        drain(url, topology.work_queue, prefetch, n, timeline, lambda props: props.message_id, threading.Event())
        return publish_rate, timeline.rate()
    finally:
        drop(url, topology)


def end_to_end(url: str, n: int, prefetch: int, bodies, target: str, work: Path) -> tuple[float, Path]:
    """jobs/s from the first to the last result received, one consumer process at this prefetch."""
    topology = jobs.Topology(f"bench{uuid.uuid4().hex[:8]}")
    results_queue = f"{topology.prefix}.results.bench"
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        ch = conn.channel()
        declare(ch, topology)
        ch.queue_declare(results_queue, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_bind(results_queue, topology.results_exchange, "#")
    timeline = Timeline()
    stop = threading.Event()

    def read_results():
        drain(url, results_queue, RESULTS_PREFETCH, n, timeline, lambda props: props.correlation_id, stop)

    log = work / f"consumer-{prefetch}.log"
    try:
        fill(url, topology.work_queue, bodies)
        reader = threading.Thread(target=read_results)
        reader.start()
        env = {**os.environ, "PREDMESH_AMQP_URL": url, "PREDMESH_AMQP_PREFIX": topology.prefix,
               "PREDMESH_SERVER_ADDR": target, "PREDMESH_CONSUMER_PREFETCH": str(prefetch),
               "PREDMESH_CONSUMER_METRICS_ADDR": "", "PREDMESH_LOG_LEVEL": "WARNING"}
        # PREDMESH_BENCH_CONSUMER_ARGS="-m cProfile -o /tmp/consumer.prof" profiles the consumer's event loop
        python_args = os.environ.get("PREDMESH_BENCH_CONSUMER_ARGS", "").split()
        consumer = subprocess.Popen([sys.executable, *python_args, "-m", "consumer"], cwd=ROOT, env=env,
                                    stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + max(120, n / 100)
            while len(timeline.seen) < n and time.monotonic() < deadline and consumer.poll() is None:
                time.sleep(0.2)
        finally:
            loadtools.stop(consumer)
            stop.set()
            reader.join(30)
        if len(timeline.seen) < n:
            raise SystemExit(f"only {len(timeline.seen)} of {n} results arrived; see {log}")
        return timeline.rate(), log
    finally:
        drop(url, topology, extra=[results_queue])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--prefetch", default="64,256,1000", help="comma-separated prefetch values")
    parser.add_argument("--processes", default="auto",
                        help="PREDMESH_PROCESSES of the server (default: the product's default, auto)")
    parser.add_argument("--amqp-url", default=os.environ.get("PREDMESH_BENCH_AMQP_URL")
                        or os.environ.get("PREDMESH_TEST_AMQP_URL", DEFAULT_AMQP))
    parser.add_argument("--pg-url", default=os.environ.get("PREDMESH_BENCH_PG_URL")
                        or os.environ.get("PREDMESH_TEST_PG_URL", DEFAULT_PG))
    args = parser.parse_args()
    n = args.jobs
    work = Path(tempfile.mkdtemp(prefix="predmesh-bench-queue-"))
    store = work / "models"
    subprocess.run([sys.executable, "-m", "inference", "train", "--model", "iris", "--estimator", "lr"], cwd=ROOT,
                   env={**os.environ, "PREDMESH_MODEL_STORE": str(store)}, check=True, capture_output=True)
    print(f"{n} queued jobs (1 row, protobuf, persistent, quorum queue), 1 consumer, server processes="
          f"{args.processes}, durable persistence on PostgreSQL; work dir {work}", flush=True)
    print("\nprefetch   ceiling publish/s   ceiling consume/s   end-to-end jobs/s   x ceiling   rows (distinct ids)")
    for prefetch in [int(p) for p in args.prefetch.split(",")]:
        schema = Schema(args.pg_url)
        proc = None
        try:
            proc, target = start_server(store, "durable", schema.url, work / f"spool-{prefetch}",
                                        args.processes, work / "server.log")
            run = uuid.uuid4().hex[:6]
            bodies = [(f"b{run}-{i}", jobs.encode(jobs.predict_job("iris", ROWS[i % 3]))) for i in range(n)]
            publish_rate, drain_rate = ceiling(args.amqp_url, n, prefetch, bodies)
            rate, _ = end_to_end(args.amqp_url, n, prefetch, bodies, target, work)
            settle(schema)
            stored = schema._sql(f"SELECT count(DISTINCT request_id) FROM {schema.name}.predictions "
                                 "WHERE transport = 'queue'")[0][0]
            print(f"{prefetch:>8}   {publish_rate:17.0f}   {drain_rate:17.0f}   {rate:17.0f}   "
                  f"{rate / drain_rate:9.2f}   {stored}{'' if stored == n else ' (MISMATCH)'}", flush=True)
        finally:
            if proc is not None:
                loadtools.stop(proc)
            schema.drop()
    print("\n(the machine is shared: figures move with the other load on its 2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
