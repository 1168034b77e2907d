"""handle() on the jobs that used to stall, go unanswered or break the connection: matrix jobs, jobs larger than
the server's message limit, rejected jobs with a reply_to, and dead letters of jobs with huge headers."""
from __future__ import annotations

import grpc
from google.rpc import status_pb2

from consumer.handler import MAX_COPIED_HEADER_BYTES, Action, Delivery, bounded_headers, handle, header_bytes
from consumer.worker import PUBLISHED_AT, published_at
from predmesh import jobs
from predmesh.errors import InvalidArgument, ResourceExhausted
from predmesh.v1 import inference_pb2
from tests.unit.consumer.test_consumer_handler import ROW, TOPO, FakeScorer, delivery

TOO_LARGE = "Received message larger than max (5000000 vs. 4194304)"


class MatrixScorer(FakeScorer):
    """FakeScorer that also scores matrices (row 1 of a matrix whose second value is negative is refused) and
    refuses calls of more than `message_rows` rows as the gRPC message limit does."""

    def __init__(self, message_rows: int = 10**9, **kwargs):
        super().__init__(**kwargs)
        self.message_rows = message_rows
        self.matrices: list[inference_pb2.FeatureMatrix] = []

    def predict_each(self, model, rows):
        if len(rows) > self.message_rows:
            self.calls.append(("batch", model, len(rows)))
            raise ResourceExhausted(TOO_LARGE)
        return super().predict_each(model, rows)

    def predict_matrix(self, model, matrix):
        self.matrices.append(matrix)
        names = len(matrix.feature_names)
        n = len(matrix.values) // names
        if n > self.message_rows:
            raise ResourceExhausted(TOO_LARGE)
        if set(matrix.feature_names) != set(ROW):
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


def matrix_job(rows: list[list[float]], **kwargs) -> inference_pb2.PredictBatchRequest:
    job = inference_pb2.PredictBatchRequest(model="iris", **kwargs)
    job.matrix.feature_names.extend(ROW)
    for row in rows:
        job.matrix.values.extend(row)
    return job


def test_a_matrix_job_is_scored_and_answered_in_columns_with_ids_from_its_message_id():
    scorer = MatrixScorer()
    window = [delivery(1, matrix_job([list(ROW.values())] * 3)), delivery(2, jobs.predict_job("iris", ROW))]
    one, two = handle(window, scorer, TOPO)
    assert one.action is Action.ACK and two.action is Action.ACK
    assert one.publish.type == jobs.PREDICT_BATCH_RESULT and one.publish.routing_key == "iris.batch"
    result = jobs.decode_result(one.publish.type, one.publish.content_type, one.publish.body)
    assert list(result.matrix.prediction_ids) == ["p-m1-0", "p-m1-1", "p-m1-2"]
    [sent] = scorer.matrices
    assert sent.request_id_prefix == "m1-" and list(sent.row_numbers) == [0, 1, 2]


def test_a_matrix_job_keeps_its_own_request_id_prefix_and_row_numbers():
    scorer = MatrixScorer()
    job = matrix_job([list(ROW.values())] * 2)
    job.matrix.request_id_prefix = "file-7:"
    job.matrix.row_numbers.extend([10, 11])
    [outcome] = handle([delivery(1, job, content_type=jobs.JSON)], scorer, TOPO)
    result = jobs.decode_result(outcome.publish.type, outcome.publish.content_type, outcome.publish.body)
    assert list(result.matrix.prediction_ids) == ["p-file-7:10", "p-file-7:11"]


def test_a_matrix_job_with_a_refused_row_is_rejected_naming_it_unless_it_asked_for_partial_success():
    bad = [[5.1, -1.0, 1.4, 0.2], [5.1, 3.5, 1.4, 0.2]]
    whole, each = handle([delivery(1, matrix_job(bad)), delivery(2, matrix_job(bad, partial_success=True))],
                         MatrixScorer(), TOPO)
    assert whole.action is Action.REJECT
    assert whole.publish.headers[jobs.HEADER_ERROR] == "row 0: sepal_width < 0"
    assert each.action is Action.ACK
    result = jobs.decode_result(each.publish.type, each.publish.content_type, each.publish.body)
    assert [e.row for e in result.matrix.row_errors] == [0]


def test_malformed_matrix_jobs_are_rejected_with_the_reason_without_a_call():
    ragged = matrix_job([[1.0, 2.0, 3.0]])
    empty = matrix_job([])
    scorer = MatrixScorer()
    outcomes = handle([delivery(1, ragged), delivery(2, empty)], scorer, TOPO)
    assert [o.action for o in outcomes] == [Action.REJECT, Action.REJECT]
    assert "not a multiple" in outcomes[0].publish.headers[jobs.HEADER_ERROR]
    assert "no rows" in outcomes[1].publish.headers[jobs.HEADER_ERROR]
    assert not scorer.matrices


def test_a_call_over_the_message_limit_is_split_per_job_and_a_job_too_large_alone_is_dead_lettered():
    """RESOURCE_EXHAUSTED "larger than max" is not transient: the window's jobs are scored one call each, and the
    one that is too large on its own is dead-lettered (never held and retried without end)."""
    scorer = MatrixScorer(message_rows=50)
    big = jobs.batch_job("iris", [ROW] * 60)
    window = [delivery(1, jobs.predict_job("iris", ROW)), delivery(2, big), delivery(3, jobs.predict_job("iris", ROW))]
    outcomes = handle(window, scorer, TOPO)
    assert [o.action for o in outcomes] == [Action.ACK, Action.REJECT, Action.ACK]
    assert outcomes[1].reason == "too_large" and outcomes[1].publish.headers[jobs.HEADER_STATUS] == "RESOURCE_EXHAUSTED"
    assert "split it into smaller jobs" in outcomes[1].publish.headers[jobs.HEADER_ERROR]
    assert [c for c in scorer.calls if c[0] == "batch"] == [("batch", "iris", 62), ("batch", "iris", 1),
                                                            ("batch", "iris", 60), ("batch", "iris", 1)]


def test_other_resource_exhausted_errors_are_still_held_and_retried():
    scorer = FakeScorer(down=None)
    scorer.predict_each = lambda model, rows: (_ for _ in ()).throw(ResourceExhausted("server busy; retry later"))
    [outcome] = handle([delivery(1, jobs.predict_job("iris", ROW))], scorer, TOPO)
    assert outcome.action is Action.RETRY and outcome.error == "server busy; retry later"


def test_a_rejected_job_with_reply_to_gets_an_error_result_in_its_encoding():
    window = [delivery(1, jobs.predict_job("nope", ROW), reply_to="amq.rabbitmq.reply-to.abc", correlation_id="c1"),
              delivery(2, jobs.predict_job("iris", dict(ROW, petal_width=float("nan"))), content_type=jobs.JSON,
                       reply_to="callers"),
              delivery(3, jobs.predict_job("nope", ROW))]
    one, two, three = handle(window, FakeScorer(), TOPO)
    assert one.action is Action.REJECT and one.reply is not None
    assert (one.reply.exchange, one.reply.routing_key, one.reply.correlation_id) == (
        "", "amq.rabbitmq.reply-to.abc", "c1")
    assert one.reply.type == jobs.ERROR_RESULT == "google.rpc.Status"
    error = jobs.decode_result(one.reply.type, one.reply.content_type, one.reply.body)
    assert isinstance(error, status_pb2.Status)
    assert error.code == grpc.StatusCode.NOT_FOUND.value[0] and "nope" in error.message
    assert two.reply.content_type == jobs.JSON and two.reply.correlation_id == "m2"
    error = jobs.decode_result(two.reply.type, two.reply.content_type, two.reply.body)
    assert error.code == 3 and "petal_width" in error.message
    assert three.reply is None  # no reply_to: the dead letter alone


def test_an_undecodable_job_with_reply_to_is_answered_with_the_decoder_error():
    d = Delivery(tag=1, body=b"\x00garbage", content_type="text/plain", type=jobs.PREDICT, message_id="m1",
                 reply_to="callers")
    [outcome] = handle([d], FakeScorer(), TOPO)
    assert outcome.reply is not None and outcome.reply.content_type == jobs.PROTOBUF
    error = jobs.decode_result(outcome.reply.type, outcome.reply.content_type, outcome.reply.body)
    assert error.code == 3 and "content_type" in error.message


def test_a_dead_letter_keeps_small_headers_and_drops_the_oversized_ones_saying_which():
    headers = {"trace": "abc", "big": "x" * 128 * 1024, "also-big": ["y" * 1000] * 20, "n": 7}
    d = delivery(1, jobs.predict_job("nope", ROW), headers=headers)
    [outcome] = handle([d], FakeScorer(), TOPO)
    sent = outcome.publish.headers
    assert sent["trace"] == "abc" and sent["n"] == 7 and outcome.publish.body == d.body
    assert "big" not in sent and "also-big" not in sent
    assert sent[jobs.HEADER_DROPPED] == "big,also-big"
    assert header_bytes(dict(sent)) < MAX_COPIED_HEADER_BYTES + 2048
    assert sent[jobs.HEADER_STATUS] == "NOT_FOUND"


def test_bounded_headers_keeps_everything_under_the_limit():
    headers = {f"h{i}": "v" * 100 for i in range(10)}
    assert bounded_headers(headers) == (headers, [])


def test_end_to_end_latency_falls_back_to_the_amqp_timestamp():
    with_header = Delivery(tag=1, body=b"", headers={PUBLISHED_AT: 1_700_000_000_500}, timestamp=1)
    assert published_at(with_header) == 1_700_000_000.5
    assert published_at(Delivery(tag=1, body=b"", timestamp=1_700_000_000)) == 1_700_000_000.0
    assert published_at(Delivery(tag=1, body=b"")) is None
