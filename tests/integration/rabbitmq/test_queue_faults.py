"""RELIABILITY T11-T15 for the RabbitMQ consumer, against real RabbitMQ, a real server and real PostgreSQL.

CI runs short variants; PREDMESH_QUEUE_TEST_JOBS=10000 (and PREDMESH_QUEUE_TEST_PG_DOWN_S=60) runs the full size.
T12 and T13 stop, kill and starve a PRIVATE RabbitMQ node; T15 stops a PRIVATE PostgreSQL. The shared services are
never touched.
"""
from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pika
import psycopg2
import pytest
from google.rpc import status_pb2

from predmesh import jobs
from predmesh.publisher import Publisher, PublishError
from predmesh.v1 import inference_pb2, model_pb2
from tests.conftest import IRIS_ROW
from tests.support.pg import PrivatePostgres, TempSchema
from tests.support.procs import ServerProc, wait_for
from tests.support.queue import Broker, ConsumerProc, PrivateRabbit, SilentProxy, shared_amqp_url, unique_prefix

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]

JOBS = int(os.environ.get("PREDMESH_QUEUE_TEST_JOBS", "2000"))
PG_DOWN_S = float(os.environ.get("PREDMESH_QUEUE_TEST_PG_DOWN_S", "12"))
ROWS = [IRIS_ROW, {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 4.2, "petal_width": 1.3},
        {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}]


def rows_in(url: str) -> tuple[int, int]:
    """(rows, distinct request ids) stored by the queue transport; (-1, -1) while the database is unreachable."""
    try:
        with psycopg2.connect(url, connect_timeout=3) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT request_id) FROM predictions WHERE transport = 'queue'")
            rows, distinct = cur.fetchone() or (-1, -1)
            return rows, distinct
    except psycopg2.Error:
        return (-1, -1)


def stored_ids(url: str) -> set[str]:
    with psycopg2.connect(url, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT request_id FROM predictions WHERE transport = 'queue'")
        return {r for (r,) in cur.fetchall()}


def publish_all(url: str, prefix: str, ids: list[str]) -> None:
    with Publisher(url, prefix=prefix) as pub:
        pub.publish_many([(jobs.predict_job("iris", ROWS[i % 3]), mid) for i, mid in enumerate(ids) if i % 5])
        pub.publish_many([(jobs.predict_job("iris", ROWS[i % 3]), mid) for i, mid in enumerate(ids) if not i % 5],
                         content_type=jobs.JSON)


def drained(broker: Broker) -> bool:
    depth = broker.depth(broker.topology.work_queue)
    return depth is not None and depth[0] == 0


def report(name: str, **figures) -> None:
    print(f"\n[{name}] " + " ".join(f"{k}={v}" for k, v in figures.items()))


@pytest.fixture
def shared_broker():
    broker = Broker(shared_amqp_url(), unique_prefix())
    yield broker
    broker.delete_topology(extra_queues=[f"{broker.topology.prefix}.results.all"])


# --- T11 ---------------------------------------------------------------------------------------------------------
def test_t11_consumer_kill9_five_times_no_job_lost_or_stored_twice(model_store, tmp_path, shared_broker):
    broker = shared_broker
    ids = [f"t11-{i}" for i in range(JOBS)]
    results_queue = broker.bind_results()
    publish_all(broker.url, broker.topology.prefix, ids)
    kills = []
    with TempSchema() as schema, ServerProc(model_store, tmp_path / "server.log",
                                            env={"PREDMESH_DATABASE_URL": schema.url}) as server:
        consumer = ConsumerProc(server.target, broker.url, broker.topology.prefix, tmp_path / "consumer.log",
                                env={"PREDMESH_CONSUMER_PREFETCH": "32"})
        try:
            # 1, 2: through the fault points (predmesh.faults), after the server answered (rows stored) and before
            # anything is acked; and after a result was confirmed, before its job is acked
            for hook in ("consumer.answered:3", "consumer.confirmed:40"):
                consumer.start(env={"PREDMESH_FAULTS": hook}, wait=False)
                consumer.started.wait(60)
                assert consumer.started.returncode == -9, consumer.log()[-2000:]
                consumer.kill()
                kills.append(hook)
            # 3, 4, 5: kill -9 from outside at random points
            for _ in range(3):
                consumer.start()
                before = consumer.metric("predmesh_consumer_acked_total") or 0
                target = before + random.randint(20, max(21, JOBS // 10))
                # wait_for() calls its lambda before the loop moves on, so it sees this iteration's target
                wait_for(lambda: (consumer.metric("predmesh_consumer_acked_total") or 0) >= target  # noqa: B023
                         or not consumer.alive(), 60, 0.01, what="some progress")
                consumer.kill()
                kills.append("kill -9")
            consumer.start()
            wait_for(lambda: rows_in(schema.url)[0] >= JOBS and drained(broker), 180, 0.5, what="all jobs stored")
            wait_for(lambda: broker.unacked(broker.topology.work_queue) == 0, 30, 1, what="nothing unacked")
            time.sleep(1)  # a duplicate row, if there were one, would have arrived by now
            rows, distinct = rows_in(schema.url)
            assert stored_ids(schema.url) == set(ids)
            assert (rows, distinct) == (JOBS, JOBS)
            assert broker.depth(broker.topology.dead_queue)[0] == 0
            results = broker.drain(results_queue)
            correlation_ids = {props.correlation_id for props, _ in results}
            assert correlation_ids == set(ids)
            report("T11", jobs=JOBS, kills=len(kills), rows=rows, distinct=distinct, dlq=0,
                   result_messages=len(results), distinct_results=len(correlation_ids))
            assert len(kills) == 5
        finally:
            consumer.kill()


# --- T14 ---------------------------------------------------------------------------------------------------------
def poison(i: int, reply_to: str | None = None) -> tuple[bytes, pika.BasicProperties]:
    """The i-th malformed job, cycling through the kinds a producer gets wrong."""
    kind = i % 7 if i < 21 else i % 6  # three 5 MiB bodies are enough
    props: dict[str, str] = {"message_id": f"poison-{i}", "type": jobs.PREDICT, "content_type": jobs.PROTOBUF}
    if kind == 0:
        body = b"\x0a\xff\xff\xff\xff\x0fbad bytes"                       # truncated protobuf
    elif kind == 1:
        body, props["content_type"] = b'{"model": "iris", "features": {', jobs.JSON  # bad JSON
    elif kind == 2:  # the wrong message: a response sent as a job
        body = inference_pb2.PredictResponse(prediction=model_pb2.Prediction(label="x", latency_ms=1))\
            .SerializeToString()
    elif kind == 3:
        body = jobs.encode(jobs.predict_job("iris", dict(IRIS_ROW, petal_width=float("nan"))))
    elif kind == 4:
        body = jobs.encode(jobs.predict_job("no-such-model", IRIS_ROW))
    elif kind == 5:
        body = jobs.encode(jobs.predict_job("iris", {**IRIS_ROW, "x": 1.0}), jobs.JSON)   # extra feature
        props["content_type"] = jobs.JSON
    else:
        body = b"\x00" * (5 * 1024 * 1024)                                  # 5 MiB
    return body, pika.BasicProperties(delivery_mode=2, message_id=props["message_id"], type=props["type"],
                                      content_type=props["content_type"], reply_to=reply_to)


def message(job: jobs.Job, message_id: str, content_type: str = jobs.PROTOBUF, reply_to: str | None = None,
            headers: dict | None = None) -> tuple[bytes, pika.BasicProperties]:
    return jobs.encode(job, content_type), pika.BasicProperties(
        delivery_mode=2, message_id=message_id, type=jobs.type_name(job), content_type=content_type,
        reply_to=reply_to, headers=headers)


@dataclass
class Stream:
    """Jobs to queue, in order, and what each must leave behind."""

    messages: list[tuple[bytes, pika.BasicProperties]] = field(default_factory=list)
    rows: dict[str, list[str]] = field(default_factory=dict)  # good job's message_id -> its stored rows' ids
    bad: set[str] = field(default_factory=set)                # message_ids that must be dead-lettered

    def good(self, job: jobs.Job, mid: str, request_ids: list[str], **kwargs) -> None:
        self.messages.append(message(job, mid, **kwargs))
        self.rows[mid] = request_ids

    def reject(self, body: bytes, props: pika.BasicProperties) -> None:
        assert props.message_id is not None
        self.messages.append((body, props))
        self.bad.add(props.message_id)

    @property
    def request_ids(self) -> set[str]:
        return {rid for ids in self.rows.values() for rid in ids}


def t14_stream(name: str, n_poison: int) -> Stream:
    """JOBS one-row jobs (one in five JSON) with n_poison malformed ones spread among them."""
    stream = Stream()
    poison_at = set(random.Random(7).sample(range(JOBS), n_poison))
    for i in range(JOBS):
        mid = f"{name}-{i}"
        stream.good(jobs.predict_job("iris", ROWS[i % 3]), mid, [mid], content_type=jobs.JSON if not i % 5
                    else jobs.PROTOBUF)
        if i in poison_at:
            stream.reject(*poison(len(stream.bad)))
    return stream


def run_drain(model_store, tmp_path: Path, name: str, stream: Stream, *, server_env: dict | None = None,
              replies: bool = False) -> tuple[float, ConsumerProc, dict]:
    """Queue the stream's jobs, then time one consumer draining them (from its first connection to the last job
    acked or rejected) and collect what they left: stored rows, dead letters and (replies=True: every job's
    reply_to is a queue of the test's) the results."""
    broker = Broker(shared_amqp_url(), unique_prefix())
    reply_queue = f"{broker.topology.prefix}.replies"
    n = len(stream.messages)
    try:
        with broker.connect() as conn:
            conn.channel().queue_declare(reply_queue, durable=True)
        for _, props in stream.messages:
            props.reply_to = reply_queue if replies else None
        broker.publish_confirmed(stream.messages)
        run_dir = tmp_path / name  # its own spool too: a server adopts the spool records it finds in its directory
        run_dir.mkdir()
        n_rows, n_bad = len(stream.request_ids), len(stream.bad)
        with TempSchema() as schema, ServerProc(model_store, run_dir / "server.log",
                                                env={"PREDMESH_DATABASE_URL": schema.url, **(server_env or {})}) \
                as server:
            consumer = ConsumerProc(server.target, broker.url, broker.topology.prefix, run_dir / "consumer.log")
            consumer.start()
            started = time.monotonic()  # from the consumer's first connection (its start-up is not consuming)
            wait_for(lambda: handled(consumer) >= n, 600, 0.05, what="every job acked or rejected")
            elapsed = time.monotonic() - started
            wait_for(lambda: rows_in(schema.url)[0] >= n_rows and drained(broker)
                     and (broker.depth(broker.topology.dead_queue) or (0,))[0] >= n_bad
                     and (not replies or (broker.depth(reply_queue) or (0,))[0] >= n), 60, 0.2,
                     what="all jobs stored, dead-lettered and answered")
            time.sleep(1)  # a duplicate row, dead letter or reply, if there were one, would have arrived by now
            facts = {"rows": rows_in(schema.url), "ids": stored_ids(schema.url) == stream.request_ids,
                     "pid": consumer.started.pid, "alive": consumer.alive(),
                     "redelivered": consumer.metric("predmesh_consumer_redelivered_total"),
                     "reconnects": consumer.metric("predmesh_consumer_reconnects_total"),
                     "dead": broker.drain(broker.topology.dead_queue) if n_bad else [],
                     "replies": broker.drain(reply_queue) if replies else []}
            consumer.kill()
            return elapsed, consumer, facts
    finally:
        broker.delete_topology(extra_queues=[reply_queue])


def handled(consumer: ConsumerProc) -> float:
    """Jobs acked plus jobs rejected, from the consumer's /metrics (cheap enough to poll every 50 ms)."""
    total = 0.0
    for line in consumer.metrics_text().splitlines():
        if line.startswith(("predmesh_consumer_acked_total ", "predmesh_consumer_rejected_total{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_t14_poison_jobs_dead_lettered_once_each_with_a_reason_and_good_ones_all_done(model_store, tmp_path):
    baseline, _, base = run_drain(model_store, tmp_path, "t14base", t14_stream("t14base", 0))
    elapsed, consumer, facts = run_drain(model_store, tmp_path, "t14", t14_stream("t14", 100))
    assert base["rows"] == (JOBS, JOBS) and facts["rows"] == (JOBS, JOBS) and facts["ids"]
    assert facts["alive"] and consumer.starts == 1 and facts["redelivered"] == 0
    dead = facts["dead"]
    assert sorted(props.message_id for props, _ in dead) == sorted(f"poison-{i}" for i in range(100))
    for props, _ in dead:
        assert props.headers[jobs.HEADER_DELIVERIES] == 1 and props.headers[jobs.HEADER_REASON] == "rejected"
        assert props.headers[jobs.HEADER_STATUS] in ("INVALID_ARGUMENT", "NOT_FOUND")
        assert props.headers[jobs.HEADER_ERROR]
    reasons: dict[str, int] = {}
    for props, _ in dead:
        reasons[props.headers[jobs.HEADER_STATUS]] = reasons.get(props.headers[jobs.HEADER_STATUS], 0) + 1
    ratio = (JOBS / elapsed) / (JOBS / baseline)
    report("T14", good=JOBS, poison=len(dead), reasons=reasons, baseline_jobs_s=round(JOBS / baseline),
           with_poison_jobs_s=round(JOBS / elapsed), ratio=round(ratio, 2))
    # The bar is 0.9 on a quiet machine. The poison has a fixed cost (three 5 MiB dead letters, a bisection per
    # server-refused job) that weighs on the short CI run (~1 s of good jobs) and the shared box is noisy, so CI
    # guards only against a collapse (e.g. one call per job); the full run (10,000 jobs) must keep 0.6.
    assert ratio >= (0.6 if JOBS >= 10_000 else 0.35)


# --- T14, mixed --------------------------------------------------------------------------------------------------
# Jobs under the consumer's body limit (1 MiB) whose call exceeds the server's message limit (1 MiB): its rows
# limit is raised (MIXED_SERVER) so that the bytes are what a call cannot carry, as for 9,000 rows in the issue.
MIXED_SERVER = {"PREDMESH_MAX_BATCH_ROWS": "200000"}
OVERSIZED_EACH = 5  # of each oversized kind
MATRIX_EVERY = 50   # one good job in 50 is a matrix (columnar) job of three rows


def matrix_job(rows: list[dict[str, float]]) -> inference_pb2.PredictBatchRequest:
    job = inference_pb2.PredictBatchRequest(model="iris")
    job.matrix.feature_names.extend(IRIS_ROW)
    for row in rows:
        job.matrix.values.extend(row[name] for name in IRIS_ROW)
    return job


def oversized(i: int, headers_blob: int) -> tuple[bytes, pika.BasicProperties, str]:
    """The i-th oversized job and the status its dead letter must carry: 9,000 rows or 100,000 empty rows (under
    the body limit, over the server's message limit), or ~128 KB of headers (a job for an unknown model: its
    dead letter must not copy them)."""
    kind, mid = i % 3, f"oversized-{i}"
    if kind == 0:
        body, props = message(jobs.batch_job("iris", [IRIS_ROW] * 9000), mid)
    elif kind == 1:
        empty = inference_pb2.PredictBatchRequest(model="iris")
        for _ in range(100_000):
            empty.rows.add()
        body, props = message(empty, mid)
    else:
        body, props = message(jobs.predict_job("no-such-model", IRIS_ROW), mid,
                              headers={"x-trace": mid, "x-blob": "b" * headers_blob})
        return body, props, "NOT_FOUND"
    assert len(body) < 1024 * 1024
    return body, props, "INVALID_ARGUMENT"


def mixed_stream(name: str, *, bad: bool, headers_blob: int = 0) -> tuple[Stream, dict[str, str]]:
    """JOBS good jobs: one-row jobs (one in five JSON) and one in MATRIX_EVERY a matrix job of three rows (one in
    two of those JSON); bad=True: 100 poison jobs (every kind of T14) and OVERSIZED_EACH jobs of each oversized
    kind spread among them. Returns the stream and the status each bad job's dead letter must carry."""
    stream, status = Stream(), {}
    bad_jobs: list[tuple[bytes, pika.BasicProperties]] = []
    if bad:
        for p in range(100):
            bad_jobs.append(poison(p))
            kind = p % 7 if p < 21 else p % 6
            status[f"poison-{p}"] = "NOT_FOUND" if kind == 4 else "INVALID_ARGUMENT"
        for o in range(3 * OVERSIZED_EACH):
            body, props, code = oversized(o, headers_blob)
            bad_jobs.append((body, props))
            status[f"oversized-{o}"] = code
        random.Random(23).shuffle(bad_jobs)
    bad_at = dict(zip(sorted(random.Random(7).sample(range(JOBS), len(bad_jobs))), bad_jobs, strict=True))
    for i in range(JOBS):
        mid = f"{name}-{i}"
        encoding = jobs.JSON if not i % 5 else jobs.PROTOBUF
        if i % MATRIX_EVERY == MATRIX_EVERY - 1:
            stream.good(matrix_job(ROWS), mid, [f"{mid}-{r}" for r in range(3)], content_type=encoding)
        else:
            stream.good(jobs.predict_job("iris", ROWS[i % 3]), mid, [mid], content_type=encoding)
        if i in bad_at:
            stream.reject(*bad_at[i])
    return stream, status


def reply_of(props: pika.spec.BasicProperties, body: bytes):
    return jobs.decode_result(props.type, props.content_type, body)


@pytest.mark.soak  # on demand; in the default run: t14 poison jobs
def test_t14_mixed_poison_oversized_and_matrix_jobs_each_answered_once_and_the_good_ones_flow(model_store,
                                                                                               tmp_path):
    """Every job with a reply_to (a queue the test reads): every good job (one row, or a matrix of three) leaves
    one stored row per row and one result; every poison or oversized job one dead letter with its reason and one
    error reply (google.rpc.Status); the good jobs' rate beside them stays near the clean stream's."""
    from tests.integration.rabbitmq.test_consumer_rejects import largest_headers_that_fit

    probe = Broker(shared_amqp_url(), unique_prefix())
    body, props, _ = oversized(2, 0)
    blob = largest_headers_that_fit(probe, body, lambda n: message(
        jobs.predict_job("no-such-model", IRIS_ROW), "oversized-2", headers={"x-trace": "oversized-2",
                                                                            "x-blob": "b" * n})[1]) - 64
    assert blob > 120 * 1024
    clean, _ = mixed_stream("mixbase", bad=False)
    mixed, status = mixed_stream("mix", bad=True, headers_blob=blob)
    baseline, _, base = run_drain(model_store, tmp_path, "mixbase", clean, server_env=MIXED_SERVER, replies=True)
    elapsed, consumer, facts = run_drain(model_store, tmp_path, "mix", mixed, server_env=MIXED_SERVER,
                                         replies=True)
    n_rows = len(mixed.request_ids)
    assert base["rows"] == (n_rows, n_rows) and base["ids"] and len(base["replies"]) == JOBS
    # every good job: one stored row per row, one result
    assert facts["rows"] == (n_rows, n_rows) and facts["ids"]
    replies: dict[str, list] = {}
    for props, body in facts["replies"]:
        replies.setdefault(props.correlation_id, []).append(reply_of(props, body))
    assert set(replies) == set(mixed.rows) | mixed.bad
    assert all(len(r) == 1 for r in replies.values()), [k for k, r in replies.items() if len(r) > 1][:5]
    matrices = 0
    for mid, request_ids in mixed.rows.items():
        [result] = replies[mid]
        if len(request_ids) == 1:
            assert isinstance(result, inference_pb2.PredictResponse) and result.prediction.prediction_id, mid
        else:
            assert isinstance(result, inference_pb2.PredictBatchResponse), mid
            assert len(result.matrix.prediction_ids) == len(request_ids) and not result.matrix.row_errors
            matrices += 1
    # every bad job: one dead letter with its reason, one error reply with the same status
    dead = {}
    for props, _ in facts["dead"]:
        assert props.message_id not in dead, f"{props.message_id} dead-lettered twice"
        dead[props.message_id] = props.headers
    assert set(dead) == mixed.bad
    reasons: dict[str, int] = {}
    for mid, headers in dead.items():
        assert headers[jobs.HEADER_DELIVERIES] == 1 and headers[jobs.HEADER_REASON] == "rejected", mid
        assert headers[jobs.HEADER_STATUS] == status[mid] and headers[jobs.HEADER_ERROR], (mid, headers)
        [error] = replies[mid]
        assert isinstance(error, status_pb2.Status), (mid, error)
        assert error.code == headers[jobs.HEADER_STATUS_CODE] and error.message == headers[jobs.HEADER_ERROR]
        kind = mid.rsplit("-", 1)[0] if mid.startswith("poison") else f"oversized/{int(mid.rsplit('-', 1)[1]) % 3}"
        reasons[f"{kind}:{headers[jobs.HEADER_STATUS]}"] = reasons.get(f"{kind}:{headers[jobs.HEADER_STATUS]}", 0) + 1
        if mid.startswith("oversized") and int(mid.rsplit("-", 1)[1]) % 3 == 2:
            assert "x-blob" not in headers and headers["x-trace"] == mid
            assert headers[jobs.HEADER_DROPPED] == "x-blob"
        elif mid.startswith("oversized"):
            assert "split it into smaller jobs" in headers[jobs.HEADER_ERROR]
    # one connection throughout: no dead letter broke it, nothing was delivered twice
    assert facts["alive"] and consumer.starts == 1 and facts["redelivered"] == 0 and facts["reconnects"] == 0
    ratio = (JOBS / elapsed) / (JOBS / baseline)
    report("T14-mixed", good=JOBS, matrix=matrices, rows=n_rows, poison=100, oversized=3 * OVERSIZED_EACH,
           dead_letters=len(dead), replies=len(facts["replies"]), headers_blob=blob, statuses=reasons,
           clean_s=round(baseline, 2), mixed_s=round(elapsed, 2), clean_jobs_s=round(JOBS / baseline),
           mixed_jobs_s=round(JOBS / elapsed), ratio=round(ratio, 2))
    # The bar (Must show of #23) at full size: 0.88 and 0.92 measured (0.46 before oversized jobs were sized
    # from their encoded rows). The bad jobs have a fixed cost (~2 s on the shared box: 25 MB of 5 MiB and 1 MB dead
    # letters, five 100,000-row jobs sized) that weighs on the short CI run (~1.5 s of good jobs: 0.41-0.48
    # measured, 0.26 before), so CI guards only against a collapse.
    assert ratio >= (0.7 if JOBS >= 10_000 else 0.3)


# --- T15 ---------------------------------------------------------------------------------------------------------
def test_t15_postgres_down_while_consuming_nothing_dead_lettered_no_requeue_storm(model_store, tmp_path,
                                                                                  shared_broker):
    broker = shared_broker
    ids = [f"t15-{i}" for i in range(JOBS)]
    prefetch = 32
    # a spool that fills during the outage, so the server answers RESOURCE_EXHAUSTED and the consumer must hold
    with PrivatePostgres() as pg, ServerProc(model_store, tmp_path / "server.log", env={
            "PREDMESH_DATABASE_URL": pg.url, "PREDMESH_SPOOL_MAX_BYTES": "65536"}) as server, \
            ConsumerProc(server.target, broker.url, broker.topology.prefix, tmp_path / "consumer.log",
                         env={"PREDMESH_CONSUMER_PREFETCH": str(prefetch),
                              "PREDMESH_CONSUMER_RETRY_MAX_S": "2"}) as consumer:
        rate = max(100, JOBS // 20)
        publisher = threading.Thread(target=lambda: paced_publish(broker, ids, rate))
        publisher.start()
        time.sleep(2)
        pg.stop()
        down_at = time.monotonic()
        unacked = []
        while time.monotonic() - down_at < PG_DOWN_S:
            unacked.append(broker.unacked(broker.topology.work_queue) or 0)
        pg.start()
        publisher.join()
        wait_for(lambda: rows_in(pg.url)[0] >= JOBS and drained(broker), 180, 0.5, what="all rows after recovery")
        time.sleep(1)
        rows = rows_in(pg.url)
        retried = sum(float(line.rsplit(" ", 1)[1]) for line in consumer.metrics_text().splitlines()
                      if line.startswith("predmesh_consumer_retried_total{"))
        redelivered = consumer.metric("predmesh_consumer_redelivered_total")
        report("T15", jobs=JOBS, pg_down_s=PG_DOWN_S, rows=rows, retried_jobs=int(retried),
               redelivered=redelivered, max_unacked=max(unacked), dlq=broker.depth(broker.topology.dead_queue)[0])
        assert rows == (JOBS, JOBS) and stored_ids(pg.url) == set(ids)
        assert broker.depth(broker.topology.dead_queue)[0] == 0
        assert retried > 0, "the spool never filled: the outage did not reach the consumer"
        assert redelivered == 0 and consumer.metric("predmesh_consumer_reconnects_total") == 0
        assert max(unacked) <= prefetch
        assert "consumer_timeout" not in consumer.log()


def paced_publish(broker: Broker, ids: list[str], rate: float) -> None:
    step = max(1, int(rate // 10))  # every 100 ms, confirms pipelined
    with Publisher(broker.url, prefix=broker.topology.prefix, retry_for=120) as pub:
        started = time.monotonic()
        for at in range(0, len(ids), step):
            delay = started + at / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pub.publish_many([(jobs.predict_job("iris", ROWS[i % 3]), ids[i])
                              for i in range(at, min(len(ids), at + step))])


# --- T12 ---------------------------------------------------------------------------------------------------------
@pytest.mark.soak  # on demand; in the default run: t11 (consumer kill -9), t13 (broker link reset)
def test_t12_broker_restarted_and_killed_mid_stream_nothing_lost_nothing_twice(model_store, tmp_path):
    n = JOBS
    with PrivateRabbit() as rabbit, TempSchema() as schema, \
            ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DATABASE_URL": schema.url}) as server:
        broker = rabbit.broker(unique_prefix())
        consumer = ConsumerProc(server.target, rabbit.url, broker.topology.prefix, tmp_path / "consumer.log",
                                env={"PREDMESH_AMQP_RECONNECT_MAX_S": "5"})
        consumer.start()
        confirmed: list[str] = []
        failed: list[object] = []
        publish_gaps: list[float] = []
        rates: list[float] = []

        def produce():
            with Publisher(rabbit.url, prefix=broker.topology.prefix, retry_for=60) as pub:
                started = time.monotonic()
                for at in range(0, n, 50):  # 500 msg/s: 50 jobs every 100 ms, confirms pipelined
                    delay = started + at / 500 - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    t0 = time.monotonic()
                    chunk = [(jobs.predict_job("iris", ROWS[i % 3]), f"t12-{i}") for i in range(at, min(n, at + 50))]
                    try:
                        confirmed.extend(pub.publish_many(chunk))
                    except PublishError:
                        failed.extend(mid for _, mid in chunk)  # reported, not silently dropped
                    publish_gaps.append(time.monotonic() - t0)
                rates.append(n / (time.monotonic() - started))

        producer = threading.Thread(target=produce)
        producer.start()
        outages = []
        try:
            for how in ("stop_app", "kill -9"):
                # wait_for() calls its lambdas before the loop moves on, so they see this iteration's values
                wait_for(lambda: len(confirmed) > n * (0.25 if how == "stop_app" else 0.6)  # noqa: B023
                         or not producer.is_alive(),
                         120, what="publishing under way")
                if how == "stop_app":
                    rabbit.stop_app()
                    time.sleep(2)
                    rabbit.start_app()
                else:
                    rabbit.kill9()
                    time.sleep(1)
                    rabbit.start()
                back = time.monotonic()
                wait_for(lambda: consumer.metric("predmesh_consumer_connected") == 1, 30, 0.1,
                         what=f"consumer reconnected after {how}")
                outages.append((how, round(time.monotonic() - back, 1)))
            producer.join(180)
            wait_for(lambda: rows_in(schema.url)[0] >= len(confirmed) and drained(broker), 180, 0.5,
                     what="every confirmed job stored")
            time.sleep(1)
            stored = stored_ids(schema.url)
            rows, distinct = rows_in(schema.url)
            lost = set(confirmed) - stored
            report("T12", published=n, confirmed=len(confirmed), reported_unconfirmed=len(failed), rows=rows,
                   lost=len(lost), duplicates=rows - distinct, consumer_reconnect_s=outages,
                   publish_rate=round(rates[0]) if rates else None,
                   longest_publish_s=round(max(publish_gaps), 1))
            assert lost == set() and rows == distinct
            assert stored <= set(confirmed) | set(failed)
            assert max(publish_gaps) < 60   # the publisher got through each outage (reconnect + confirm)
        finally:
            consumer.kill()


# --- T13 ---------------------------------------------------------------------------------------------------------
def test_t13_silent_then_reset_broker_link_detected_within_two_heartbeats(model_store, tmp_path):
    heartbeat = 3
    n = max(500, JOBS // 4)
    with PrivateRabbit() as rabbit, TempSchema() as schema, \
            ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DATABASE_URL": schema.url}) as server:
        proxy = SilentProxy(rabbit.port)
        broker = rabbit.broker(unique_prefix())
        proxied = rabbit.url.replace(f":{rabbit.port}/", f":{proxy.port}/")
        consumer = ConsumerProc(server.target, proxied, broker.topology.prefix, tmp_path / "consumer.log",
                                env={"PREDMESH_AMQP_HEARTBEAT_S": str(heartbeat), "PREDMESH_CONSUMER_PREFETCH": "16",
                                     "PREDMESH_AMQP_RECONNECT_MAX_S": "2"})
        try:
            consumer.start()
            ids = [f"t13-{i}" for i in range(n)]
            producer = threading.Thread(target=lambda: paced_publish(broker, ids, 100))
            producer.start()
            wait_for(lambda: (consumer.metric("predmesh_consumer_acked_total") or 0) > 50, 30, what="flowing")
            proxy.silence()
            silent_at = time.monotonic()
            wait_for(lambda: consumer.metric("predmesh_consumer_connected") == 0, 4 * heartbeat + 10, 0.1,
                     what="dead link noticed")
            detected = time.monotonic() - silent_at
            proxy.reset()
            wait_for(lambda: consumer.metric("predmesh_consumer_connected") == 1, 30, 0.1, what="reconnected")
            reconnected = time.monotonic() - silent_at
            producer.join(120)
            wait_for(lambda: rows_in(schema.url)[0] >= n and drained(broker), 120, 0.5, what="all stored")
            time.sleep(1)
            rows, distinct = rows_in(schema.url)
            report("T13", jobs=n, heartbeat_s=heartbeat, detected_s=round(detected, 1),
                   reconnected_s=round(reconnected, 1), rows=rows, distinct=distinct,
                   redelivered=consumer.metric("predmesh_consumer_redelivered_total"))
            assert (rows, distinct) == (n, n) and stored_ids(schema.url) == set(ids)
            assert detected <= 2 * heartbeat + 1.5  # pika's own check cadence adds up to ~1 s
            assert consumer.alive()
        finally:
            consumer.kill()
            proxy.close()


def test_t13_memory_alarm_blocks_publishing_the_publisher_errors_in_time_and_recovers(tmp_path):
    with PrivateRabbit() as rabbit:
        broker = rabbit.broker(unique_prefix())
        with Publisher(rabbit.url, prefix=broker.topology.prefix, retry_for=6, blocked_timeout_s=3) as pub:
            pub.predict("iris", IRIS_ROW, message_id="before")
            rabbit.ctl("set_vm_memory_high_watermark", "0.0000001")
            try:
                # the node raises the alarm at its next memory check, not when the watermark is set: a publish
                # in between is confirmed (seen once in a full run), which is not what this test is about
                wait_for(lambda: "memory" in rabbit.ctl("eval", "rabbit_alarm:get_alarms()."), 30, 0.1,
                         what="the memory alarm raised")
                started = time.monotonic()
                with pytest.raises(PublishError):
                    pub.predict("iris", IRIS_ROW, message_id="blocked")
                took = time.monotonic() - started
            finally:
                rabbit.ctl("set_vm_memory_high_watermark", "0.4")
            assert took < 6 + 3 + 5
            time.sleep(1)
            pub.predict("iris", IRIS_ROW, message_id="after")   # recovered: confirmed again
        assert (broker.depth(broker.topology.work_queue) or (0, 0))[0] >= 2
        report("T13-blocked", error_after_s=round(took, 1))
