"""Jobs that used to stall the consumer, go unanswered or break its connection, on the real shared broker, a real
server and PostgreSQL: oversized calls, matrix jobs, error replies, huge headers, held-job bounds and the metrics
that misled (direct reply-to counted as unroutable, no end-to-end latency from the AMQP timestamp)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping

import pika
import pika.exceptions
import pytest
from google.protobuf.message import Message
from google.rpc import status_pb2

from predmesh import jobs
from predmesh.publisher import Publisher
from predmesh.v1 import inference_pb2
from tests.conftest import IRIS_ROW
from tests.integration.rabbitmq.test_consumer import stored
from tests.support.pg import TempSchema
from tests.support.procs import ROOT, ServerProc, free_port, wait_for
from tests.support.queue import Broker, ConsumerProc, shared_amqp_url, unique_prefix

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.fixture(scope="module")
def served(trained_store, tmp_path_factory):
    """A server that publishes limits far above what one answer can carry (200,000 rows, 8 MiB requests): the
    consumer sends such jobs, and their answers exceed the gRPC message limit (RESOURCE_EXHAUSTED)."""
    log = tmp_path_factory.mktemp("rejects-server") / "server.log"
    with TempSchema() as schema, \
            ServerProc(trained_store, log, env={"PREDMESH_DATABASE_URL": schema.url,
                                                "PREDMESH_MAX_BATCH_ROWS": "200000",
                                                "PREDMESH_MAX_MESSAGE_BYTES": str(8 << 20)}) as server:
        yield server, schema


def dead_letters(broker: Broker, n: int, timeout: float = 60) -> dict[str, pika.spec.BasicProperties]:
    wait_for(lambda: (broker.depth(broker.topology.dead_queue) or (0,))[0] >= n, timeout, what=f"{n} dead letters")
    out: dict[str, pika.spec.BasicProperties] = {}
    for props, _ in broker.drain(broker.topology.dead_queue):
        assert props.message_id is not None, "a dead letter without its job's message_id"
        out[props.message_id] = props
    return out


def headers_of(props: pika.spec.BasicProperties) -> Mapping[str, object]:
    """A dead letter's headers (it always has some: the reason)."""
    assert props.headers is not None
    return props.headers


def header(props: pika.spec.BasicProperties, name: str) -> str:
    """One string header of a dead letter (x-predmesh-status, x-predmesh-error, ...)."""
    value = headers_of(props)[name]
    assert isinstance(value, str), (name, value)
    return value


def status_of(result: Message) -> status_pb2.Status:
    """The google.rpc.Status a rejected job's caller got."""
    assert isinstance(result, status_pb2.Status), type(result)
    return result


def batch_of(result: Message) -> inference_pb2.PredictBatchResponse:
    assert isinstance(result, inference_pb2.PredictBatchResponse), type(result)
    return result


def test_a_job_whose_call_exceeds_the_message_limit_is_dead_lettered_once_and_the_others_flow(stack):
    """100,000 empty rows: under the body limit and the published limits, but the answer (an error per row) is
    over the gRPC message limit: RESOURCE_EXHAUSTED. Before, the job was held and retried forever and the good
    jobs crawled behind it. A 9,000-row job beside it fits one call here and is answered."""
    _server, broker, consumer, schema = stack
    big = jobs.batch_job("iris", [IRIS_ROW] * 9000)
    empty = inference_pb2.PredictBatchRequest(model="iris")
    for _ in range(100_000):
        empty.rows.add()
    assert big.ByteSize() < 1024 * 1024 and empty.ByteSize() < 1024 * 1024  # under the consumer's body limit
    with Publisher(broker.url, prefix=broker.topology.prefix) as pub:
        pub.publish(big, message_id="ov-big")
        pub.publish(empty, message_id="ov-empty")
        pub.publish_many([(jobs.predict_job("iris", IRIS_ROW), f"ov-good-{i}") for i in range(200)])
    dead = dead_letters(broker, 1, timeout=120)
    assert set(dead) == {"ov-empty"}
    assert header(dead["ov-empty"], jobs.HEADER_STATUS) == "RESOURCE_EXHAUSTED"
    error = header(dead["ov-empty"], jobs.HEADER_ERROR)
    assert "larger than max" in error and "split it into smaller jobs" in error
    wait_for(lambda: stored(schema, "ov-good-%") == (200, 200), 60, what="the good jobs stored")
    wait_for(lambda: stored(schema, "ov-big-%") == (9000, 9000), 60, what="the 9,000-row job stored")
    wait_for(lambda: consumer.metric("predmesh_consumer_acked_total") == 201, 60, what="201 jobs acked")
    assert consumer.metric("predmesh_consumer_rejected_total", 'reason="too_large"') == 1
    assert consumer.metric("predmesh_consumer_held") == 0
    assert consumer.metric("predmesh_consumer_held_oldest_seconds") == 0
    assert (broker.depth(broker.topology.dead_queue) or (1,))[0] == 0  # dead-lettered once


def test_a_matrix_job_is_scored_answered_in_columns_and_stored(stack):
    _server, broker, _consumer, schema = stack
    job = inference_pb2.PredictBatchRequest(model="iris")
    job.matrix.feature_names.extend(IRIS_ROW)
    for _ in range(5):
        job.matrix.values.extend(IRIS_ROW.values())
    own = inference_pb2.PredictBatchRequest(model="iris")
    own.matrix.CopyFrom(job.matrix)
    own.matrix.request_id_prefix = "mx-own-"
    own.matrix.row_numbers.extend([10, 11, 12, 13, 14])
    with Publisher(broker.url, prefix=broker.topology.prefix) as pub:
        ids = [pub.publish(job, message_id="mx-1", reply=True),
               pub.publish(own, message_id="mx-2", reply=True, content_type=jobs.JSON),
               pub.publish(jobs.predict_job("iris", IRIS_ROW), message_id="mx-row", reply=True)]
        results = pub.wait_results(ids, timeout=30)
    assert set(results) == set(ids)
    first = batch_of(results["mx-1"])
    assert len(first.matrix.prediction_ids) == 5
    assert [first.matrix.classes[i] for i in first.matrix.labels] == ["setosa"] * 5
    assert len(batch_of(results["mx-2"]).matrix.prediction_ids) == 5
    wait_for(lambda: stored(schema, "mx-1-%") == (5, 5), 20, what="the matrix job's rows stored")
    wait_for(lambda: stored(schema, "mx-own-1_") == (5, 5), 20, what="the rows under the job's own prefix")


def test_a_rejected_job_answers_its_caller_with_the_status_and_is_dead_lettered(stack, tmp_path):
    _server, broker, consumer, _schema = stack
    # a string for a number (JSON has no NaN in a google.protobuf.Value)
    text: dict[str, float | str] = {**IRIS_ROW, "petal_width": "abc"}
    with Publisher(broker.url, prefix=broker.topology.prefix) as pub:
        ids = [pub.publish(jobs.predict_job("nope", IRIS_ROW), message_id="rj-model", reply=True),
               pub.publish(jobs.predict_job("iris", text),
                           message_id="rj-nan", reply=True, content_type=jobs.JSON),
               pub.publish(jobs.predict_job("iris", IRIS_ROW), message_id="rj-good", reply=True)]
        results = pub.wait_results(ids, timeout=30)
    assert set(results) == set(ids)
    assert status_of(results["rj-model"]).code == 5  # NOT_FOUND
    nan = status_of(results["rj-nan"])
    assert nan.code == 3 and "feature 'petal_width' is a number" in nan.message
    good = results["rj-good"]
    assert isinstance(good, inference_pb2.PredictResponse) and good.prediction.label == "setosa"
    assert set(dead_letters(broker, 2)) == {"rj-model", "rj-nan"}
    # direct reply-to delivered all three: none of them is "unroutable"
    assert consumer.metric("predmesh_consumer_unroutable_total") == 0

    env = {**os.environ, "PREDMESH_AMQP_URL": broker.url, "PREDMESH_AMQP_PREFIX": broker.topology.prefix}
    out = subprocess.run([sys.executable, "-m", "cli.main", "publish", "--model", "nope", "--features",
                          json.dumps(IRIS_ROW), "--wait", "--timeout", "20"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    [line] = [json.loads(x) for x in out.stdout.splitlines()]
    assert line["error"]["status"] == "NOT_FOUND" and "nope" in line["error"]["message"]
    assert "did not arrive" not in out.stderr and "rejected" in out.stderr


def largest_headers_that_fit(broker: Broker, body: bytes, props: Callable[[int], pika.BasicProperties]) -> int:
    """The largest n for which a message with props(n) still fits the broker's frame_max (found by publishing
    to nowhere: a larger header frame makes the broker close the connection)."""
    def fits(n: int) -> bool:
        try:
            with broker.connect() as conn:
                ch = conn.channel()
                ch.confirm_delivery()
                ch.basic_publish("", f"{broker.topology.prefix}.nowhere", body, props(n))
            return True
        except (pika.exceptions.AMQPError, OSError):
            return False
    lo, hi = 64 * 1024, 256 * 1024
    assert fits(lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def test_a_rejected_job_with_128_kb_of_headers_is_dead_lettered_without_breaking_the_connection(stack):
    """A job whose headers almost fill the broker's frame_max (128 KiB): its dead letter used to copy them and add
    the reason, a header frame over the limit: the broker closed the connection and redelivered every job."""
    _server, broker, consumer, _schema = stack
    body = jobs.encode(jobs.predict_job("nope", IRIS_ROW))

    def props(n: int) -> pika.BasicProperties:
        return pika.BasicProperties(type=jobs.PREDICT, content_type=jobs.PROTOBUF, message_id="hd-big",
                                    delivery_mode=2, headers={"x-trace": "t-1", "x-blob": "b" * n})
    blob = largest_headers_that_fit(broker, body, props) - 16
    assert blob > 120 * 1024
    with broker.connect() as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", broker.topology.work_queue, body, props(blob), mandatory=True)
    with Publisher(broker.url, prefix=broker.topology.prefix) as pub:
        pub.publish_many([(jobs.predict_job("iris", IRIS_ROW), f"hd-good-{i}") for i in range(20)])
    dead = dead_letters(broker, 1)
    props_dead = dead["hd-big"]
    assert header(props_dead, "x-trace") == "t-1" and "x-blob" not in headers_of(props_dead)
    assert header(props_dead, jobs.HEADER_DROPPED) == "x-blob"
    assert header(props_dead, jobs.HEADER_STATUS) == "NOT_FOUND"
    wait_for(lambda: consumer.metric("predmesh_consumer_acked_total") == 20, 30, what="the good jobs acked")
    assert consumer.metric("predmesh_consumer_reconnects_total") == 0
    assert consumer.metric("predmesh_consumer_redelivered_total") == 0


def test_end_to_end_latency_comes_from_the_amqp_timestamp_of_other_producers(stack):
    _server, broker, consumer, schema = stack
    with broker.connect() as conn:  # a producer in another language: no predmesh header, the AMQP timestamp
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("", broker.topology.work_queue, jobs.encode(jobs.predict_job("iris", IRIS_ROW)),
                         pika.BasicProperties(type=jobs.PREDICT, content_type=jobs.PROTOBUF, message_id="ts-1",
                                              timestamp=int(time.time()) - 5, delivery_mode=2))
    wait_for(lambda: stored(schema, "ts-1") == (1, 1), 20, what="the job stored")
    wait_for(lambda: consumer.metric("predmesh_consumer_end_to_end_seconds_count") == 1, 10, what="observed")
    assert consumer.metric("predmesh_consumer_end_to_end_seconds_sum") >= 4


def test_a_job_held_past_the_hold_limit_is_dead_lettered_with_its_last_error(served, tmp_path):
    """The server unreachable: the job is held (visible in predmesh_consumer_held_oldest_seconds), then
    dead-lettered after PREDMESH_CONSUMER_HOLD_MAX_S instead of being retried without end."""
    prefix = unique_prefix()
    broker = Broker(shared_amqp_url(), prefix)
    env = {"PREDMESH_CONSUMER_HOLD_MAX_S": "6", "PREDMESH_CONSUMER_RETRY_MAX_S": "1",
           "PREDMESH_CONSUMER_RPC_TIMEOUT_S": "1"}
    with ConsumerProc(f"127.0.0.1:{free_port()}", broker.url, prefix, tmp_path / "consumer.log", env) as consumer:
        try:
            with Publisher(broker.url, prefix=prefix) as pub:
                pub.publish(jobs.predict_job("iris", IRIS_ROW), message_id="held-1", reply=True)
                wait_for(lambda: (consumer.metric("predmesh_consumer_held_oldest_seconds") or 0) >= 2, 20,
                         what="the held job's age in the metrics")
                [error] = pub.wait_results(["held-1"], timeout=30).values()
            assert status_of(error).code == 14  # UNAVAILABLE, the last error
            props = dead_letters(broker, 1)["held-1"]
            assert header(props, jobs.HEADER_STATUS) == "UNAVAILABLE"
            assert "PREDMESH_CONSUMER_HOLD_MAX_S" in header(props, jobs.HEADER_ERROR)
            assert consumer.metric("predmesh_consumer_rejected_total", 'reason="held_too_long"') == 1
            wait_for(lambda: consumer.metric("predmesh_consumer_held_oldest_seconds") == 0, 10, what="none held")
        finally:
            consumer.kill()
            broker.delete_topology()


def test_a_message_id_reused_with_other_features_is_dead_lettered_with_the_reason_and_answered(stack):
    """Issue #23 on the queue: a job's message_id is its request id (the idempotency key). The same job again (a
    publisher's retry) gets the first answer and stores nothing; a job reusing the message_id with other features
    is ALREADY_EXISTS: one dead letter with the reason, an error reply to its caller, never retried. Before, it
    was acked with a result naming the first job's prediction, and nothing of it was stored."""
    _server, broker, _consumer, schema = stack
    other = {**IRIS_ROW, "petal_length": 4.2, "petal_width": 1.3}
    with Publisher(broker.url, prefix=broker.topology.prefix) as pub:
        def answer(features, correlation_id: str) -> Message:
            pub.publish(jobs.predict_job("iris", features), message_id="reuse-1", correlation_id=correlation_id,
                        reply=True)
            return pub.wait_results([correlation_id], timeout=30)[correlation_id]
        first, again, refused = answer(IRIS_ROW, "c-first"), answer(IRIS_ROW, "c-again"), answer(other, "c-other")
        # two copies of one job in one window (a publisher that published twice) are one request: both answered
        for i in range(2):
            pub.publish(jobs.batch_job("iris", [(other, "twin-1")]), message_id=f"twin-job-{i}",
                        correlation_id=f"c-twin-{i}", reply=True)
        twin_results = pub.wait_results(["c-twin-0", "c-twin-1"], timeout=30)
    assert isinstance(first, inference_pb2.PredictResponse) and isinstance(again, inference_pb2.PredictResponse)
    assert again.prediction.prediction_id == first.prediction.prediction_id
    assert again.prediction.probabilities == first.prediction.probabilities
    status = status_of(refused)
    assert status.code == 6 and "'reuse-1' was already used for a different request" in status.message
    [dead] = dead_letters(broker, 1).values()
    assert dead.message_id == "reuse-1" and header(dead, jobs.HEADER_STATUS) == "ALREADY_EXISTS"
    assert "'reuse-1' was already used for a different request" in header(dead, jobs.HEADER_ERROR)
    assert headers_of(dead)[jobs.HEADER_DELIVERIES] == 1  # refused on its first delivery: never retried
    assert {batch_of(r).predictions[0].prediction_id for r in twin_results.values()} == {
        batch_of(twin_results["c-twin-0"]).predictions[0].prediction_id}
    wait_for(lambda: stored(schema, "reuse-1") == (1, 1) and stored(schema, "twin-1") == (1, 1), 10,
             what="one stored row per key")
    time.sleep(0.5)
    assert stored(schema, "reuse-1") == (1, 1) and stored(schema, "twin-1") == (1, 1)
    assert not broker.drain(broker.topology.dead_queue, timeout=0.5)  # nothing more was dead-lettered
