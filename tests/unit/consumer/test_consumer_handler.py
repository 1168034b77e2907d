"""The consumer's pure core: the message contract (predmesh.jobs) and handle() over a fake scorer."""
from __future__ import annotations

import math
import struct
from typing import cast

import grpc
import pytest
from google.protobuf.struct_pb2 import Value
from google.rpc import status_pb2

from consumer.handler import Action, Delivery, Limits, Outcome, Publish, handle
from consumer.scoring import SdkScorer
from predmesh import Client, calls, jobs
from predmesh.errors import InvalidArgument, NotFound, ResourceExhausted, Unavailable
from predmesh.types import CallLimits
from predmesh.v1 import inference_pb2, model_pb2
from predmesh.values import decode, decode_all

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
TOPO = jobs.Topology("t")
SERVER_LIMITS = CallLimits(1000, 4 << 20, 128)


class FakeScorer:
    """Answers like the server with partial_success: each row its prediction or its error (NaN, an unknown
    feature: INVALID_ARGUMENT); an unknown model is NOT_FOUND (from GetModel); more rows than max_batch_rows
    refuse the call. A matrix is scored in columns: feature_names must name every feature once, and a row whose
    second value (sepal_width) is negative is refused in row_errors."""

    def __init__(self, down: Exception | None = None, limits: CallLimits = SERVER_LIMITS):
        self.down = down
        self.server_limits = limits
        self.calls: list[tuple[str, str, int]] = []
        self.request_bytes: list[int] = []  # the encoded size of each PredictBatchRequest
        self.matrices: list[inference_pb2.FeatureMatrix] = []  # each matrix sent to predict_matrix

    def limits(self, model):
        self.calls.append(("limits", model, 0))
        if self.down:
            raise self.down
        if model != "iris":
            raise NotFound(f"model {model!r} not found")
        return self.server_limits

    def _one(self, model, features, request_id):
        def refused(message):
            return calls.batch_row_result(inference_pb2.BatchRowResult(
                request_id=request_id, error=status_pb2.Status(code=3, message=message)))

        for name, value in features.items():  # the job's own google.protobuf.Values, as the SDK sends them on
            number = decode(value) if isinstance(value, Value) else value
            if isinstance(number, str):
                return refused(f"feature {name!r} is a number; got the string {number!r}")
            if not isinstance(number, float) or not math.isfinite(number):
                return refused(f"feature {name!r} is nan; send a finite number")
            if name not in ROW:
                return refused(f"unknown feature {name!r}")
        prediction = model_pb2.Prediction(prediction_id=f"p-{request_id}", request_id=request_id, model=model,
                                          label="setosa", model_version="2")
        return calls.batch_row_result(inference_pb2.BatchRowResult(request_id=request_id, prediction=prediction))

    def predict_each(self, model, rows):
        self.calls.append(("batch", model, len(rows)))
        self.request_bytes.append(calls.predict_each(model, rows).request.ByteSize())
        if len(rows) > self.server_limits.max_batch_rows:
            raise InvalidArgument(f"{len(rows)} rows exceed the limit")
        return [self._one(model, f, rid) for f, rid in rows]

    def predict_matrix(self, model, matrix):
        self.matrices.append(matrix)
        names = len(matrix.feature_names)
        n = len(matrix.values) // names if names else 0
        self.calls.append(("matrix", model, n))
        if self.down:
            raise self.down
        if n > self.server_limits.max_batch_rows:
            raise InvalidArgument(f"{n} rows exceed the limit")
        if set(matrix.feature_names) != set(ROW) or names != len(ROW):
            raise InvalidArgument("feature_names must name every feature of the model once")
        out = inference_pb2.PredictionMatrix(model=model, model_version="2", classes=["setosa", "versicolor"])
        for r in range(n):
            rid = f"{matrix.request_id_prefix}{matrix.row_numbers[r]}"
            if matrix.values[r * names + 1] < 0:
                out.row_errors.add(row=r, request_id=rid, error=status_pb2.Status(code=3, message="sepal_width < 0"))
                out.labels.append(0)
                out.probabilities.extend([0, 0])
                out.prediction_ids.append("")
            else:
                out.labels.append(0)
                out.probabilities.extend([1, 0])
                out.prediction_ids.append(f"p-{rid}")
        return out


def published(outcome: Outcome) -> Publish:
    """What an ACK or REJECT outcome publishes (a RETRY has nothing)."""
    assert outcome.publish is not None
    return outcome.publish


def error_of(p: Publish | None) -> status_pb2.Status:
    """The google.rpc.Status a rejected job's reply (or an error result) carries."""
    assert p is not None
    error = jobs.decode_result(p.type, p.content_type, p.body)
    assert isinstance(error, status_pb2.Status)
    return error


def result_of(p: Publish) -> inference_pb2.PredictResponse:
    result = jobs.decode_result(p.type, p.content_type, p.body)
    assert isinstance(result, inference_pb2.PredictResponse)
    return result


def batch_result_of(p: Publish) -> inference_pb2.PredictBatchResponse:
    result = jobs.decode_result(p.type, p.content_type, p.body)
    assert isinstance(result, inference_pb2.PredictBatchResponse)
    return result


def delivery(tag, job, content_type=jobs.PROTOBUF, message_id=None, **props) -> Delivery:
    return Delivery(tag=tag, body=jobs.encode(job, content_type), content_type=content_type,
                    type=jobs.type_name(job), message_id=message_id or f"m{tag}", **props)


def test_a_window_is_scored_in_one_batch_call_and_each_job_gets_its_result():
    scorer = FakeScorer()
    window = [delivery(1, jobs.predict_job("iris", ROW)),
              delivery(2, jobs.predict_job("iris", ROW), content_type=jobs.JSON, correlation_id="c2"),
              delivery(3, jobs.batch_job("iris", [ROW, (ROW, "own-id")]), reply_to="amq.rabbitmq.reply-to.x")]
    outcomes = handle(window, scorer, TOPO)
    assert scorer.calls == [("limits", "iris", 0), ("batch", "iris", 4)]
    assert [o.action for o in outcomes] == [Action.ACK] * 3
    one, two, three = (published(o) for o in outcomes)
    assert (one.exchange, one.routing_key, one.correlation_id, one.type) == \
        ("t.results", "iris.setosa", "m1", jobs.PREDICT_RESULT)
    assert result_of(one).prediction.request_id == "m1"
    assert (two.content_type, two.correlation_id) == (jobs.JSON, "c2")
    assert result_of(two).prediction.request_id == "m2"
    assert (three.exchange, three.routing_key, three.type) == ("", "amq.rabbitmq.reply-to.x", jobs.PREDICT_BATCH_RESULT)
    batch = batch_result_of(three)
    assert [p.request_id for p in batch.predictions] == ["m3-0", "own-id"]


def test_poison_jobs_are_rejected_with_the_reason_and_good_ones_in_the_same_window_are_acked():
    scorer = FakeScorer()
    nan = dict(ROW, petal_width=float("nan"))
    window = [delivery(1, jobs.predict_job("iris", ROW)),
              Delivery(2, b"\xff\x00not protobuf", jobs.PROTOBUF, jobs.PREDICT, "m2"),
              Delivery(3, b'{"model": "iris", "features": ["abc"]}', jobs.JSON, jobs.PREDICT, "m3"),
              Delivery(4, jobs.encode(jobs.predict_job("iris", ROW)), jobs.PROTOBUF, "predmesh.v1.Other", "m4"),
              delivery(5, jobs.predict_job("iris", dict(ROW, extra=1.0))),
              delivery(6, jobs.predict_job("iris", ROW)),
              delivery(7, jobs.batch_job("iris", [ROW, dict(ROW, extra=1.0)])),
              delivery(11, jobs.batch_job("iris", [ROW, nan])),
              Delivery(8, b"x" * (2 * 1024 * 1024), jobs.JSON, jobs.PREDICT, "m8"),
              Delivery(9, jobs.encode(jobs.predict_job("iris", ROW)), "text/plain", jobs.PREDICT, "m9"),
              Delivery(10, jobs.encode(inference_pb2.PredictResponse(
                  prediction=model_pb2.Prediction(label="x", latency_ms=3))), jobs.PROTOBUF, jobs.PREDICT, "m10")]
    outcomes = handle(window, scorer, TOPO, Limits(max_body_bytes=1024 * 1024))
    actions = {d.tag: o.action for d, o in zip(window, outcomes)}
    assert actions == {1: Action.ACK, 2: Action.REJECT, 3: Action.REJECT, 4: Action.REJECT, 5: Action.REJECT,
                       6: Action.ACK, 7: Action.REJECT, 8: Action.REJECT, 9: Action.REJECT, 10: Action.REJECT,
                       11: Action.REJECT}
    for d, o in zip(window, outcomes):
        if o.action is Action.REJECT:
            dead = published(o)
            assert (dead.exchange, dead.body, dead.message_id) == ("t.dlx", d.body, d.message_id)
            # a PredictResponse sent as a PredictRequest parses into a nonsense model name: NOT_FOUND
            assert dead.headers[jobs.HEADER_STATUS] == ("NOT_FOUND" if d.tag == 10 else "INVALID_ARGUMENT")
            assert dead.headers[jobs.HEADER_STATUS_CODE] == (5 if d.tag == 10 else 3)
            assert dead.headers[jobs.HEADER_DELIVERIES] == 1
            assert dead.headers[jobs.HEADER_ERROR]
    # the server's reason for a single-row job; a batch job's names its row (the job is all or nothing)
    assert published(outcomes[4]).headers[jobs.HEADER_ERROR] == "unknown feature 'extra'"
    assert published(outcomes[6]).headers[jobs.HEADER_ERROR] == "row 1: unknown feature 'extra'"  # tag 7
    assert published(outcomes[7]).headers[jobs.HEADER_ERROR] == \
        "row 1: feature 'petal_width' is nan; send a finite number"  # tag 11
    assert "exceeds the limit" in published(outcomes[8]).headers[jobs.HEADER_ERROR]  # tag 8
    # one call for the window (jobs 1, 5, 6, 7, 11: 7 rows), answered per row: no bisection
    assert [c for c in scorer.calls if c[1] == "iris"] == [("limits", "iris", 0), ("batch", "iris", 7)]


def test_a_batch_job_with_partial_success_is_answered_row_by_row():
    scorer = FakeScorer()
    # JSON has no NaN in a google.protobuf.Value: a string for the number is refused instead
    text: dict[str, float | str] = {**ROW, "petal_width": "abc"}
    nan = dict(ROW, petal_width=float("nan"))
    window = [delivery(1, jobs.batch_job("iris", [ROW, text, (ROW, "own")], partial_success=True),
                       content_type=jobs.JSON),
              delivery(2, jobs.batch_job("iris", [ROW, nan])),
              delivery(3, jobs.batch_job("iris", [ROW], partial_success=True))]
    outcomes = handle(window, scorer, TOPO)
    assert [o.action for o in outcomes] == [Action.ACK, Action.REJECT, Action.ACK]
    one = published(outcomes[0])
    assert (one.routing_key, one.type, one.content_type) == ("iris.batch", jobs.PREDICT_BATCH_RESULT, jobs.JSON)
    result = batch_result_of(one)
    assert not result.predictions and [r.WhichOneof("result") for r in result.results] == [
        "prediction", "error", "prediction"]
    assert [r.request_id for r in result.results] == ["m1-0", "m1-1", "own"]
    assert result.results[1].error.code == 3 and "'petal_width' is a number" in result.results[1].error.message
    assert published(outcomes[1]).headers[jobs.HEADER_ERROR] == \
        "row 1: feature 'petal_width' is nan; send a finite number"
    three = batch_result_of(published(outcomes[2]))
    assert [r.prediction.request_id for r in three.results] == ["m3-0"]
    assert scorer.calls == [("limits", "iris", 0), ("batch", "iris", 6)]


def test_one_bad_job_among_many_costs_no_extra_call():
    scorer = FakeScorer()
    window = [delivery(i, jobs.predict_job("iris", ROW)) for i in range(64)]
    window[37] = delivery(37, jobs.predict_job("iris", dict(ROW, sepal_size=1.0)))
    outcomes = handle(window, scorer, TOPO)
    assert [d.tag for d, o in zip(window, outcomes) if o.action is Action.REJECT] == [37]
    assert sum(o.action is Action.ACK for o in outcomes) == 63
    assert scorer.calls == [("limits", "iris", 0), ("batch", "iris", 64)]


def test_unknown_model_is_not_found_for_its_jobs_only():
    scorer = FakeScorer()
    window = [delivery(1, jobs.predict_job("nope", ROW)), delivery(2, jobs.predict_job("iris", ROW)),
              delivery(3, jobs.predict_job("nope", ROW))]
    outcomes = handle(window, scorer, TOPO)
    assert [o.action for o in outcomes] == [Action.REJECT, Action.ACK, Action.REJECT]
    assert published(outcomes[0]).headers[jobs.HEADER_STATUS] == "NOT_FOUND"
    assert sorted(scorer.calls) == [("batch", "iris", 1), ("limits", "iris", 0), ("limits", "nope", 0)]


@pytest.mark.parametrize("error", [Unavailable("server down"), ResourceExhausted("spool full")])
def test_transient_errors_retry_every_job_and_reject_none(error):
    window = [delivery(i, jobs.predict_job("iris", ROW)) for i in range(5)]
    outcomes = handle(window, FakeScorer(down=error), TOPO)
    assert [o.action for o in outcomes] == [Action.RETRY] * 5
    assert {o.code for o in outcomes} == {error.code} and all(o.publish is None for o in outcomes)


def test_calls_are_cut_to_the_published_limits_and_a_job_over_them_is_rejected_without_a_call():
    scorer = FakeScorer(limits=CallLimits(max_batch_rows=3, max_request_bytes=4 << 20, max_request_id_length=128))
    window = [delivery(i, jobs.predict_job("iris", ROW)) for i in range(7)]
    window.append(delivery(7, jobs.batch_job("iris", [ROW] * 4)))
    window.append(delivery(8, jobs.batch_job("iris", [])))
    outcomes = handle(window, scorer, TOPO, Limits(max_call_rows=500))
    assert [o.action for o in outcomes] == [Action.ACK] * 7 + [Action.REJECT] * 2
    assert "the job's 4 rows exceed the server's limit of 3 rows per call" in \
        published(outcomes[7]).headers[jobs.HEADER_ERROR]
    assert "no rows" in published(outcomes[8]).headers[jobs.HEADER_ERROR]
    assert scorer.calls == [("limits", "iris", 0), ("batch", "iris", 3), ("batch", "iris", 3), ("batch", "iris", 1)]
    # bytes too: a request is cut before its encoding would pass max_request_bytes (a row here is ~100 bytes)
    scorer = FakeScorer(limits=CallLimits(max_batch_rows=1000, max_request_bytes=1000, max_request_id_length=128))
    outcomes = handle([delivery(i, jobs.predict_job("iris", ROW)) for i in range(20)], scorer, TOPO)
    sizes = [n for kind, _, n in scorer.calls if kind == "batch"]
    assert all(o.action is Action.ACK for o in outcomes) and sum(sizes) == 20 and len(sizes) == 3
    assert max(scorer.request_bytes) <= 1000 and min(scorer.request_bytes[:-1]) > 600
    big = delivery(1, jobs.batch_job("iris", [ROW] * 10))
    [outcome] = handle([big], scorer, TOPO)
    assert outcome.action is Action.REJECT and "1000 bytes per request" in published(outcome).headers[jobs.HEADER_ERROR]


def test_a_call_refused_as_a_whole_retries_its_jobs_instead_of_dead_lettering_them():
    # the server's limit shrank after it was read: the call is refused, the jobs are not at fault
    scorer = FakeScorer(limits=CallLimits(max_batch_rows=5, max_request_bytes=0, max_request_id_length=0))
    window = [delivery(i, jobs.predict_job("iris", ROW)) for i in range(5)]
    outcomes = handle(window, scorer, TOPO, Limits(max_call_rows=500))
    assert [o.action for o in outcomes] == [Action.ACK] * 5
    scorer.server_limits = CallLimits(max_batch_rows=2, max_request_bytes=0, max_request_id_length=0)
    stale = type("Stale", (), {"limits": lambda self, m: CallLimits(5, 0, 0),
                               "predict_each": lambda self, m, rows: scorer.predict_each(m, rows)})()
    outcomes = handle(window, stale, TOPO, Limits(max_call_rows=500))
    assert [o.action for o in outcomes] == [Action.RETRY] * 5 and outcomes[0].reason == "INVALID_ARGUMENT"


def test_sdk_scorer_caches_the_limits_per_model_and_rereads_them_after_a_refused_call():
    class FakeClient:
        def __init__(self):
            self.gets = 0
            self.refuse = False

        def get_model(self, model, timeout):
            self.gets += 1
            return type("Info", (), {"limits": CallLimits(10 + self.gets, 0, 0)})()

        def predict_each(self, model, rows, timeout):
            if self.refuse:
                raise InvalidArgument("11 rows exceed the limit of 10")
            return []

    now = [0.0]
    client = FakeClient()
    scorer = SdkScorer(lambda: cast(Client, client), 1.0, limits_ttl_s=60, clock=lambda: now[0])
    assert scorer.limits("iris").max_batch_rows == 11 and scorer.limits("iris").max_batch_rows == 11
    now[0] = 61.0
    assert scorer.limits("iris").max_batch_rows == 12  # expired
    client.refuse = True
    with pytest.raises(InvalidArgument):
        scorer.predict_each("iris", [(ROW, "r")])
    assert scorer.limits("iris").max_batch_rows == 13 and client.gets == 3


def test_undecodable_jobs_are_rejected_even_while_the_server_is_down():
    window = [Delivery(1, b"junk", jobs.JSON, jobs.PREDICT, "m1"), delivery(2, jobs.predict_job("iris", ROW))]
    outcomes = handle(window, FakeScorer(down=Unavailable("down")), TOPO)
    assert [o.action for o in outcomes] == [Action.REJECT, Action.RETRY]


def test_idempotency_keys_come_from_message_id_and_a_job_without_any_is_rejected():
    scorer = FakeScorer()
    no_id = Delivery(1, jobs.encode(jobs.predict_job("iris", ROW)), jobs.PROTOBUF, jobs.PREDICT, None)
    own_id = Delivery(2, jobs.encode(jobs.predict_job("iris", ROW, request_id="r-2")), jobs.PROTOBUF,
                      jobs.PREDICT, None)
    outcomes = handle([no_id, own_id], scorer, TOPO)
    assert [o.action for o in outcomes] == [Action.REJECT, Action.ACK]
    assert "message_id" in published(outcomes[0]).headers[jobs.HEADER_ERROR]
    # a redelivery carries x-delivery-count; the dead letter says how many deliveries the consumer saw
    again = Delivery(3, b"junk", jobs.JSON, jobs.PREDICT, "m3", headers={"x-delivery-count": 2}, redelivered=True)
    assert published(handle([again], scorer, TOPO)[0]).headers[jobs.HEADER_DELIVERIES] == 3


def test_windows_are_split_into_calls_of_bounded_rows_without_splitting_a_job():
    scorer = FakeScorer()
    window = [delivery(i, jobs.predict_job("iris", ROW)) for i in range(7)]
    window.append(delivery(7, jobs.batch_job("iris", [ROW] * 4)))
    outcomes = handle(window, scorer, TOPO, Limits(max_call_rows=3))
    assert all(o.action is Action.ACK for o in outcomes)
    assert scorer.calls == [("limits", "iris", 0), ("batch", "iris", 3), ("batch", "iris", 3), ("batch", "iris", 1),
                            ("batch", "iris", 4)]


def test_json_jobs_follow_the_proto3_json_mapping():
    job = jobs.decode_job(jobs.PREDICT, jobs.JSON, b'{"model": "iris", "features": {"a": "NaN", "b": 1, '
                                                   b'"c": null, "d": true}, "requestId": "r"}')
    assert isinstance(job, inference_pb2.PredictRequest)
    # feature values are google.protobuf.Values: "NaN" is a string (a category), null a missing value
    assert job.request_id == "r" and decode_all(job.features) == {"a": "NaN", "b": 1.0, "c": None, "d": True}
    with pytest.raises(jobs.BadJob, match="proto3 JSON"):
        jobs.decode_job(jobs.PREDICT, jobs.JSON, b'{"model": "iris", "unknown_field": 1}')
    with pytest.raises(jobs.BadJob) as exc:
        jobs.decode_job(None, jobs.JSON, b"{}")
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT and "AMQP type" in exc.value.message


def test_consumer_settings_from_the_environment():
    from consumer.settings import ConsumerSettings
    from predmesh.env import ConfigError

    s = ConsumerSettings.from_env({"PREDMESH_GRPC_ADDR": "127.0.0.1:6000", "PREDMESH_CONSUMER_PREFETCH": "128",
                                   "PREDMESH_AMQP_PREFIX": "x"})
    assert (s.target, s.prefetch, s.amqp.prefix, s.metrics_addr) == ("127.0.0.1:6000", 128, "x", "127.0.0.1:9102")
    assert ConsumerSettings.from_env({"PREDMESH_SERVER_ADDR": "envoy:8080",
                                      "PREDMESH_GRPC_ADDR": "127.0.0.1:6000"}).target == "envoy:8080"
    with pytest.raises(ConfigError, match="PREDMESH_CONSUMER_PREFETCH"):
        ConsumerSettings.from_env({"PREDMESH_CONSUMER_PREFETCH": "0"})
    assert ConsumerSettings.from_env({"PREDMESH_CONSUMER_CONNECTIONS": "64"}).connections == 64
    # each connection is a channel opened at start: 10^20 of them hung the consumer, building them for ever
    for bad, message in (("0", ">= 1"), ("65", "<= 64"), ("99999999999999999999", "<= 64")):
        with pytest.raises(ConfigError, match=f"PREDMESH_CONSUMER_CONNECTIONS={bad} must be {message}"):
            ConsumerSettings.from_env({"PREDMESH_CONSUMER_CONNECTIONS": bad})


def test_a_binary_job_built_for_predmesh_0_2_is_rejected_with_the_upgrade_hint():
    """0.2's features were map<string, double>: an entry's value is a fixed64, which protobuf cannot read as a
    google.protobuf.Value. The job is rejected naming the feature and saying to upgrade, not "unknown fields"."""
    entry = b"\x0a\x0csepal_length" + b"\x11" + struct.pack("<d", 5.1)
    old = b"\x0a\x04iris" + bytes([0x12, len(entry)]) + entry
    with pytest.raises(jobs.BadJob, match=r"feature 'sepal_length' has no value .*predmesh 0\.2.*upgrade"):
        jobs.decode_job(jobs.PREDICT, jobs.PROTOBUF, old)
    batch = b"\x0a\x04iris" + bytes([0x12, len(entry) + 2, 0x0a, len(entry)]) + entry
    with pytest.raises(jobs.BadJob, match=r"feature 'sepal_length' has no value"):
        jobs.decode_job(jobs.PREDICT_BATCH, jobs.PROTOBUF, batch)
    [outcome] = handle([Delivery(1, old, jobs.PROTOBUF, jobs.PREDICT, "m1")], FakeScorer(), TOPO)
    assert outcome.action is Action.REJECT and "upgrade" in published(outcome).headers[jobs.HEADER_ERROR]


def test_a_matrix_job_with_string_columns_reaches_the_server_with_them():
    job = jobs.matrix_job("churn", ["tenure", "senior"], [1.0, 0.0, math.nan, 1.0],
                          string_columns={"contract": ["One year", None]}, partial_success=True)
    delivered = jobs.decode_job(jobs.PREDICT_BATCH, jobs.PROTOBUF, jobs.encode(job))
    assert isinstance(delivered, inference_pb2.PredictBatchRequest)
    assert jobs.decode_job(jobs.PREDICT_BATCH, jobs.JSON, jobs.encode(job, jobs.JSON)) == job
    matrix = jobs.matrix_of(delivered, "m1")
    assert matrix.request_id_prefix == "m1-" and list(matrix.row_numbers) == [0, 1]

    class Recording:
        def predict_matrix(self, model, names, values, **kwargs):
            self.kwargs = kwargs
            return type("Scored", (), {"raw": inference_pb2.PredictionMatrix()})()

    client = Recording()
    SdkScorer(lambda: cast(Client, client), 1.0).predict_matrix("churn", matrix)
    assert client.kwargs["string_columns"] == {"contract": ["One year", None]}
    with pytest.raises(jobs.BadJob, match="string column 'contract' has 1 values for 2 rows"):
        bad = jobs.matrix_job("churn", ["tenure"], [1.0, 2.0], string_columns={"contract": ["x"]})
        jobs.matrix_of(bad, "m2")
    only_strings = jobs.matrix_job("churn", [], [], string_columns={"contract": ["x", "y", None]})
    assert list(jobs.matrix_of(only_strings, "m3").row_numbers) == [0, 1, 2]


@pytest.mark.parametrize("url, message", [
    # taken for a broker before, and retried for ever as "Name or service not known" (publish: for 30 s)
    ("http://broker:5672/", "scheme must be amqp:// or amqps://"),
    ("127.0.0.1:5672", "scheme must be amqp:// or amqps://"),
    ("amqp://guest:secret@127.0.0.1:port/%2F", "Port could not be cast"),
    ("amqp:///%2F", "names no host"),
])
def test_a_broker_url_that_is_not_amqp_is_refused_naming_the_variable(url, message):
    from consumer.settings import AmqpSettings, ConsumerSettings
    from predmesh.env import ConfigError

    for reader in (AmqpSettings.from_env, ConsumerSettings.from_env):
        with pytest.raises(ConfigError, match=f"^PREDMESH_AMQP_URL .*{message}") as exc:
            reader({"PREDMESH_AMQP_URL": url})
        assert "secret" not in str(exc.value)
    for good in ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqps://u:p@broker.example/vhost", "amqp://localhost"):
        assert AmqpSettings.from_env({"PREDMESH_AMQP_URL": good}).url == good


def test_predmesh_publish_refuses_a_url_that_is_not_amqp_at_once(monkeypatch, capsys):
    from cli import publish

    monkeypatch.setenv("PREDMESH_AMQP_URL", "http://broker:5672/")
    assert publish.main(["--model", "iris", "--features", '{"a": 1}']) == 2
    assert capsys.readouterr().err.strip() == ("predmesh publish: PREDMESH_AMQP_URL http://broker:5672/: scheme must "
                                               "be amqp:// or amqps:// (amqp://user:pass@host:5672/%2F)")
