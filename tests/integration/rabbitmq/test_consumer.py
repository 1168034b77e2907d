"""The RabbitMQ consumer against the real shared broker (per-test names), a real server and PostgreSQL:
round trip in both encodings, results to reply_to and to the results exchange, dead letters with reasons, SIGTERM,
`predmesh publish`, and the consumer's metrics."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from google.protobuf.message import Message

from predmesh import jobs
from predmesh.publisher import Publisher
from predmesh.v1 import inference_pb2
from tests.conftest import IRIS_ROW
from tests.support.pg import TempSchema
from tests.support.procs import ROOT, ServerProc, wait_for

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


def one_row(result: Message) -> inference_pb2.PredictResponse:
    assert isinstance(result, inference_pb2.PredictResponse), result
    return result


def batch_result(result: Message) -> inference_pb2.PredictBatchResponse:
    assert isinstance(result, inference_pb2.PredictBatchResponse), result
    return result


def stored(schema: TempSchema, request_ids: str) -> tuple[int, int]:
    """(rows, distinct request ids) stored through the queue with request ids LIKE the pattern."""
    import psycopg2
    try:
        with psycopg2.connect(schema.url, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT request_id) FROM predictions "
                        "WHERE transport = 'queue' AND request_id LIKE %s", (request_ids,))
            rows, distinct = cur.fetchone() or (-1, -1)
            return rows, distinct
    except psycopg2.Error:
        return (0, 0)


@pytest.fixture(scope="module")
def served(trained_store, tmp_path_factory):
    """One server on one PostgreSQL schema for the module (tests tell their rows apart by request id)."""
    log = tmp_path_factory.mktemp("consumer-server") / "server.log"
    with TempSchema() as schema, \
            ServerProc(trained_store, log, env={"PREDMESH_DATABASE_URL": schema.url}) as server:
        yield server, schema


def test_jobs_in_both_encodings_come_back_on_reply_to_and_are_stored_once(stack):
    _server, broker, consumer, schema = stack
    with Publisher(broker.url, prefix=broker.topology.prefix) as pub:
        ids = [pub.publish(jobs.predict_job("iris", IRIS_ROW), message_id=f"rt-{i}", reply=True,
                           content_type=jobs.JSON if i % 2 else jobs.PROTOBUF) for i in range(20)]
        ids.append(pub.publish(jobs.batch_job("iris", [IRIS_ROW, (IRIS_ROW, "rt-own-row-id")]), message_id="rt-b",
                               reply=True))
        results = pub.wait_results(ids, timeout=30)
    assert set(results) == set(ids)
    assert one_row(results["rt-0"]).prediction.request_id == "rt-0"
    assert one_row(results["rt-0"]).prediction.label == "setosa"
    assert one_row(results["rt-1"]).prediction.request_id == "rt-1"
    batch = batch_result(results["rt-b"])
    assert [p.request_id for p in batch.predictions] == ["rt-b-0", "rt-own-row-id"]
    wait_for(lambda: stored(schema, "rt-%") == (22, 22), 20, what="22 queue rows")
    assert consumer.metric("predmesh_consumer_acked_total") == 21
    assert consumer.metric("predmesh_consumer_unroutable_total") == 0  # direct reply-to delivered every one


def test_results_go_to_the_topic_exchange_by_model_and_label_without_reply_to(stack):
    _server, broker, _consumer, _schema = stack
    results_queue = broker.bind_results()
    with Publisher(broker.url, prefix=broker.topology.prefix) as pub:
        pub.publish(jobs.predict_job("iris", IRIS_ROW), message_id="tx-1", correlation_id="corr-1")
        pub.publish(jobs.batch_job("iris", [IRIS_ROW]), message_id="tx-2", content_type=jobs.JSON)
    wait_for(lambda: (broker.depth(results_queue) or (0,))[0] == 2, 20, what="2 results")
    got = {props.correlation_id: (props, body) for props, body in broker.drain(results_queue)}
    props, body = got["corr-1"]
    assert props.type == jobs.PREDICT_RESULT and props.content_type == jobs.PROTOBUF and props.delivery_mode == 2
    assert one_row(jobs.decode_result(props.type, props.content_type, body)).prediction.request_id == "tx-1"
    props, body = got["tx-2"]
    assert (props.type, props.content_type) == (jobs.PREDICT_BATCH_RESULT, jobs.JSON)
    assert json.loads(body)["predictions"][0]["request_id"] == "tx-2-0"


def test_poison_jobs_are_dead_lettered_once_with_the_reason(stack):
    _server, broker, consumer, schema = stack
    with Publisher(broker.url, prefix=broker.topology.prefix) as pub:
        pub.publish(jobs.predict_job("nope", IRIS_ROW), message_id="bad-model")
        pub.publish(jobs.predict_job("iris", dict(IRIS_ROW, petal_width=float("nan"))), message_id="bad-nan")
        pub.publish(jobs.predict_job("iris", IRIS_ROW), message_id="good")
    with broker.connect() as conn:  # raw bytes no SDK would send
        conn.channel().basic_publish("", broker.topology.work_queue, b"\x00garbage",
                                     __import__("pika").BasicProperties(type=jobs.PREDICT, message_id="bad-bytes",
                                                                        content_type=jobs.PROTOBUF))
    wait_for(lambda: (broker.depth(broker.topology.dead_queue) or (0,))[0] == 3, 20, what="3 dead letters")
    assert stored(schema, "bad-%") == (0, 0)
    dead = {props.message_id: props.headers for props, _ in broker.drain(broker.topology.dead_queue)}
    assert dead["bad-model"][jobs.HEADER_STATUS] == "NOT_FOUND"
    assert dead["bad-nan"][jobs.HEADER_STATUS] == "INVALID_ARGUMENT"
    assert "petal_width" in dead["bad-nan"][jobs.HEADER_ERROR]
    assert dead["bad-bytes"][jobs.HEADER_STATUS] == "INVALID_ARGUMENT"
    assert {h[jobs.HEADER_DELIVERIES] for h in dead.values()} == {1}
    wait_for(lambda: stored(schema, "good") == (1, 1), 20, what="the good job stored")
    assert consumer.metric("predmesh_consumer_rejected_total", 'reason="NOT_FOUND"') == 1
    assert consumer.metric("predmesh_consumer_redelivered_total") == 0


def test_a_refused_row_rejects_only_its_job_and_a_partial_success_job_is_answered_row_by_row(stack):
    """One window, one call: the batch job with a refused row is dead-lettered naming its row (its good row is
    stored: the call scored it), the job that asked for partial_success gets the refused row's status in its
    result, and the jobs beside them are answered."""
    _server, broker, _consumer, schema = stack
    nan = dict(IRIS_ROW, petal_width=float("nan"))
    text: dict[str, float | str] = {**IRIS_ROW, "petal_width": "abc"}  # JSON has no NaN in a google.protobuf.Value
    with Publisher(broker.url, prefix=broker.topology.prefix) as pub:
        ids = [pub.publish(jobs.predict_job("iris", IRIS_ROW), message_id=f"pr-{i}", reply=True) for i in range(5)]
        ids.append(pub.publish(jobs.batch_job("iris", [IRIS_ROW, text, IRIS_ROW], partial_success=True),
                               message_id="pr-each", reply=True, content_type=jobs.JSON))
        pub.publish(jobs.batch_job("iris", [IRIS_ROW, nan]), message_id="pr-whole")
        results = pub.wait_results(ids, timeout=30)
    each = batch_result(results["pr-each"])
    assert [r.WhichOneof("result") for r in each.results] == ["prediction", "error", "prediction"]
    assert each.results[1].request_id == "pr-each-1" and each.results[1].error.code == 3
    assert each.results[1].error.message == "feature 'petal_width' is a number; got the string 'abc'"
    assert all(one_row(results[f"pr-{i}"]).prediction.label == "setosa" for i in range(5))
    wait_for(lambda: (broker.depth(broker.topology.dead_queue) or (0,))[0] == 1, 20, what="1 dead letter")
    [(props, _)] = broker.drain(broker.topology.dead_queue)
    assert props.message_id == "pr-whole" and props.headers[jobs.HEADER_STATUS] == "INVALID_ARGUMENT"
    assert props.headers[jobs.HEADER_ERROR] == "row 1: feature 'petal_width' is nan; send a finite number"
    wait_for(lambda: stored(schema, "pr-%") == (8, 8), 20, what="the scored rows stored")
    assert stored(schema, "pr-each-1") == stored(schema, "pr-whole-1") == (0, 0)


def test_sigterm_finishes_in_flight_jobs_acks_them_and_exits_0(stack):
    _server, broker, consumer, schema = stack
    with Publisher(broker.url, prefix=broker.topology.prefix) as pub:
        for i in range(300):
            pub.publish(jobs.predict_job("iris", IRIS_ROW), message_id=f"term-{i}")
    wait_for(lambda: (consumer.metric("predmesh_consumer_acked_total") or 0) > 0, 20, what="consuming")
    assert consumer.terminate(60) == 0
    assert "every in-flight job finished and acked" in consumer.log()
    left, consumers = broker.depth(broker.topology.work_queue)
    assert consumers == 0 and broker.unacked(broker.topology.work_queue) == 0
    # every job is either stored (and acked) or still ready in the queue: nothing in between, nothing twice
    wait_for(lambda: stored(schema, "term-%") == (300 - left, 300 - left), 20, what="every acked job stored")


def test_predmesh_publish_waits_for_results(stack, tmp_path):
    _server, broker, _consumer, _schema = stack
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps(IRIS_ROW) for _ in range(3)) + "\n")
    env = {**os.environ, "PREDMESH_AMQP_URL": broker.url, "PREDMESH_AMQP_PREFIX": broker.topology.prefix}
    out = subprocess.run([sys.executable, "-m", "cli.main", "publish", "--model", "iris", "--file", str(rows),
                          "--wait", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 3 and all(r["result"]["prediction"]["label"] == "setosa" for r in lines)
    bad = subprocess.run([sys.executable, "-m", "cli.main", "publish", "--model", "iris", "--features", "{nope"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_deleted_work_queue_is_declared_again_and_consumed(stack):
    _server, broker, consumer, schema = stack
    with broker.connect() as conn:  # the broker cancels the consumer; it must start over, not sit idle
        conn.channel().queue_delete(broker.topology.work_queue)
    wait_for(lambda: (broker.depth(broker.topology.work_queue) or (0, 0))[1] == 1, 30, what="consumer back")
    assert consumer.metric("predmesh_consumer_reconnects_total") == 1
    with Publisher(broker.url, prefix=broker.topology.prefix) as pub:
        pub.publish(jobs.predict_job("iris", IRIS_ROW), message_id="again-1")
    wait_for(lambda: stored(schema, "again-%") == (1, 1), 20, what="a job after the queue came back")
