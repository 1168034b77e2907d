"""handle() on the jobs that used to stall, go unanswered or break the connection: matrix jobs, jobs larger than
the server's message limit, rejected jobs with a reply_to, and dead letters of jobs with huge headers."""
from __future__ import annotations

import grpc

from consumer.handler import (
    MAX_COPIED_HEADER_BYTES,
    Action,
    Delivery,
    batch_bytes,
    bounded_headers,
    handle,
    header_bytes,
    request_bytes,
)
from consumer.worker import PUBLISHED_AT, published_at
from predmesh import jobs
from predmesh.errors import ResourceExhausted
from predmesh.types import CallLimits
from predmesh.v1 import inference_pb2
from predmesh.values import Features
from tests.unit.consumer.test_consumer_handler import (
    ROW,
    TOPO,
    FakeScorer,
    batch_result_of,
    delivery,
    error_of,
    published,
)

TOO_LARGE = "Received message larger than max (5000000 vs. 4194304)"


class MatrixScorer(FakeScorer):
    """FakeScorer that refuses calls of more than `message_rows` rows as the gRPC message limit does."""

    def __init__(self, message_rows: int = 10**9, **kwargs):
        super().__init__(**kwargs)
        self.message_rows = message_rows

    def predict_each(self, model, rows):
        if len(rows) > self.message_rows:
            self.calls.append(("batch", model, len(rows)))
            raise ResourceExhausted(TOO_LARGE)
        return super().predict_each(model, rows)

    def predict_matrix(self, model, matrix):
        if len(matrix.feature_names) and len(matrix.values) // len(matrix.feature_names) > self.message_rows:
            self.matrices.append(matrix)
            raise ResourceExhausted(TOO_LARGE)
        return super().predict_matrix(model, matrix)


class BusyScorer(FakeScorer):
    """FakeScorer whose every scoring call is refused as a busy server does (RESOURCE_EXHAUSTED, transient)."""

    def predict_each(self, model, rows):
        raise ResourceExhausted("server busy; retry later")


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
    assert published(one).type == jobs.PREDICT_BATCH_RESULT and published(one).routing_key == "iris.batch"
    result = batch_result_of(published(one))
    assert list(result.matrix.prediction_ids) == ["p-m1-0", "p-m1-1", "p-m1-2"]
    [sent] = scorer.matrices
    assert sent.request_id_prefix == "m1-" and list(sent.row_numbers) == [0, 1, 2]


def test_a_matrix_job_keeps_its_own_request_id_prefix_and_row_numbers():
    scorer = MatrixScorer()
    job = matrix_job([list(ROW.values())] * 2)
    job.matrix.request_id_prefix = "file-7:"
    job.matrix.row_numbers.extend([10, 11])
    [outcome] = handle([delivery(1, job, content_type=jobs.JSON)], scorer, TOPO)
    result = batch_result_of(published(outcome))
    assert list(result.matrix.prediction_ids) == ["p-file-7:10", "p-file-7:11"]


def test_a_matrix_job_with_a_refused_row_is_rejected_naming_it_unless_it_asked_for_partial_success():
    bad = [[5.1, -1.0, 1.4, 0.2], [5.1, 3.5, 1.4, 0.2]]
    whole, each = handle([delivery(1, matrix_job(bad)), delivery(2, matrix_job(bad, partial_success=True))],
                         MatrixScorer(), TOPO)
    assert whole.action is Action.REJECT
    assert published(whole).headers[jobs.HEADER_ERROR] == "row 0: sepal_width < 0"
    assert each.action is Action.ACK
    result = batch_result_of(published(each))
    assert [e.row for e in result.matrix.row_errors] == [0]


def test_malformed_matrix_jobs_are_rejected_with_the_reason_without_a_call():
    ragged = matrix_job([[1.0, 2.0, 3.0]])
    empty = matrix_job([])
    scorer = MatrixScorer()
    outcomes = handle([delivery(1, ragged), delivery(2, empty)], scorer, TOPO)
    assert [o.action for o in outcomes] == [Action.REJECT, Action.REJECT]
    assert "not a multiple" in published(outcomes[0]).headers[jobs.HEADER_ERROR]
    assert "no rows" in published(outcomes[1]).headers[jobs.HEADER_ERROR]
    assert not scorer.matrices


def test_a_call_over_the_message_limit_is_split_per_job_and_a_job_too_large_alone_is_dead_lettered():
    """RESOURCE_EXHAUSTED "larger than max" is not transient: the window's jobs are scored one call each, and the
    one that is too large on its own is dead-lettered (never held and retried without end)."""
    scorer = MatrixScorer(message_rows=50)
    big = jobs.batch_job("iris", [ROW] * 60)
    window = [delivery(1, jobs.predict_job("iris", ROW)), delivery(2, big), delivery(3, jobs.predict_job("iris", ROW))]
    outcomes = handle(window, scorer, TOPO)
    assert [o.action for o in outcomes] == [Action.ACK, Action.REJECT, Action.ACK]
    too_large = published(outcomes[1]).headers
    assert outcomes[1].reason == "too_large" and too_large[jobs.HEADER_STATUS] == "RESOURCE_EXHAUSTED"
    assert "split it into smaller jobs" in too_large[jobs.HEADER_ERROR]
    assert [c for c in scorer.calls if c[0] == "batch"] == [("batch", "iris", 62), ("batch", "iris", 1),
                                                            ("batch", "iris", 60), ("batch", "iris", 1)]


def test_other_resource_exhausted_errors_are_still_held_and_retried():
    [outcome] = handle([delivery(1, jobs.predict_job("iris", ROW))], BusyScorer(), TOPO)
    assert outcome.action is Action.RETRY and outcome.error == "server busy; retry later"


def test_a_rejected_job_with_reply_to_gets_an_error_result_in_its_encoding():
    window = [delivery(1, jobs.predict_job("nope", ROW), reply_to="amq.rabbitmq.reply-to.abc", correlation_id="c1"),
              delivery(2, jobs.predict_job("iris", dict(ROW, petal_width="abc")), content_type=jobs.JSON,
                       reply_to="callers"),
              delivery(3, jobs.predict_job("nope", ROW))]
    one, two, three = handle(window, FakeScorer(), TOPO)
    assert one.action is Action.REJECT and one.reply is not None
    assert (one.reply.exchange, one.reply.routing_key, one.reply.correlation_id) == (
        "", "amq.rabbitmq.reply-to.abc", "c1")
    assert one.reply.type == jobs.ERROR_RESULT == "google.rpc.Status"
    error = error_of(one.reply)
    assert error.code == grpc.StatusCode.NOT_FOUND.value[0] and "nope" in error.message
    assert two.reply is not None and two.reply.content_type == jobs.JSON and two.reply.correlation_id == "m2"
    error = error_of(two.reply)
    assert error.code == 3 and "petal_width" in error.message
    assert three.reply is None  # no reply_to: the dead letter alone


def test_an_undecodable_job_with_reply_to_is_answered_with_the_decoder_error():
    d = Delivery(tag=1, body=b"\x00garbage", content_type="text/plain", type=jobs.PREDICT, message_id="m1",
                 reply_to="callers")
    [outcome] = handle([d], FakeScorer(), TOPO)
    assert outcome.reply is not None and outcome.reply.content_type == jobs.PROTOBUF
    error = error_of(outcome.reply)
    assert error.code == 3 and "content_type" in error.message


def test_a_dead_letter_keeps_small_headers_and_drops_the_oversized_ones_saying_which():
    headers = {"trace": "abc", "big": "x" * 128 * 1024, "also-big": ["y" * 1000] * 20, "n": 7}
    d = delivery(1, jobs.predict_job("nope", ROW), headers=headers)
    [outcome] = handle([d], FakeScorer(), TOPO)
    sent = published(outcome).headers
    assert sent["trace"] == "abc" and sent["n"] == 7 and published(outcome).body == d.body
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


def test_batch_bytes_is_request_bytes_of_the_rows_without_building_them():
    """The size a batch job adds to a call, read from its encoded rows: the same figure as request_bytes of the
    rows jobs.job_rows builds (own request ids or message_id-<row>, every kind of value, an empty row)."""
    rows: list[Features | tuple[Features, str]] = [
        ROW, ({**ROW, "note": "é" * 200, "flag": True, "gap": None}, "own-id-" + "x" * 300), ({}, ""), ({"": 0.0}, "r")]
    job = jobs.batch_job("iris", rows + [ROW] * 200)
    for message_id in ("m", "a-much-longer-message-id-" * 5):
        assert batch_bytes(job, message_id) == request_bytes(jobs.job_rows(job, message_id))
    # stop_above: counting ends once the total passes it (the job is too large whatever the rest adds)
    whole = batch_bytes(job, "m")
    assert batch_bytes(job, "m", stop_above=whole) == whole
    assert whole // 2 < batch_bytes(job, "m", stop_above=whole // 2) < whole


def test_a_job_over_the_published_limits_is_rejected_without_building_its_rows(monkeypatch):
    """100,000 empty rows (200 kB, under the body limit) over a 1 MiB request limit: rejected from the encoded
    rows' sizes; jobs.job_rows (1.5 s of Python for such a job) runs only for the jobs that are scored."""
    built: list[int] = []
    job_rows = jobs.job_rows

    def counting(job, message_id):
        rows = job_rows(job, message_id)
        built.append(len(rows))
        return rows

    monkeypatch.setattr(jobs, "job_rows", counting)
    empty = inference_pb2.PredictBatchRequest(model="iris")
    for _ in range(100_000):
        empty.rows.add()
    scorer = FakeScorer(limits=CallLimits(max_batch_rows=200_000, max_request_bytes=1 << 20,
                                          max_request_id_length=128))
    window = [delivery(1, jobs.predict_job("iris", ROW)), delivery(2, empty),
              delivery(3, jobs.batch_job("iris", [ROW] * 9000)), delivery(4, jobs.batch_job("iris", [ROW] * 3))]
    outcomes = handle(window, scorer, TOPO)
    assert [o.action for o in outcomes] == [Action.ACK, Action.REJECT, Action.REJECT, Action.ACK]
    for outcome in outcomes[1:3]:
        assert outcome.reason == "too_large"
        assert "exceed the server's limit of 1048576 bytes per request" in published(outcome).headers[jobs.HEADER_ERROR]
    assert built == [1, 3]
    assert [c for c in scorer.calls if c[0] == "batch"] == [("batch", "iris", 4)]


class RaisingModelScorer(FakeScorer):
    """FakeScorer in front of a model that raises on one value (a user's pipeline): a call holding a row with
    sepal_length 666 fails whole with INTERNAL, as the server answers an exception it did not foresee; with
    `broken`, every call does (a broken server)."""

    def __init__(self, broken: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.broken = broken

    def predict_each(self, model, rows):
        from google.protobuf.struct_pb2 import Value

        from predmesh.errors import PredmeshError
        from predmesh.values import decode

        def poisoned(features) -> bool:
            value = features.get("sepal_length")
            return (decode(value) if isinstance(value, Value) else value) == 666.0

        if self.broken or any(poisoned(f) for f, _ in rows):
            self.calls.append(("batch", model, len(rows)))
            raise PredmeshError("internal error; the server log has the details", grpc.StatusCode.INTERNAL)
        return super().predict_each(model, rows)


def test_a_job_the_model_fails_on_is_dead_lettered_alone_not_held_with_its_window():
    """An INTERNAL on a call of several jobs held them all for retry: the job the model raised on failed every
    window it joined (pausing the consumer a backoff each time) until its hold time ended and its window-mates went
    to the dead letters with it. Each job is now scored alone: the one that fails alone while the others are
    scored is dead-lettered with the reason, the others are answered."""
    scorer = RaisingModelScorer()
    poison = {**ROW, "sepal_length": 666.0}
    window = [delivery(1, jobs.predict_job("iris", ROW)), delivery(2, jobs.predict_job("iris", poison),
                                                                   reply_to="amq.rabbitmq.reply-to.x"),
              delivery(3, jobs.batch_job("iris", [ROW, ROW]))]
    outcomes = handle(window, scorer, TOPO)
    assert [o.action for o in outcomes] == [Action.ACK, Action.REJECT, Action.ACK]
    headers = published(outcomes[1]).headers
    assert outcomes[1].reason == "job_fault" and headers[jobs.HEADER_STATUS] == "INTERNAL"
    assert "while 2 other job(s) of its call were scored" in headers[jobs.HEADER_ERROR]
    assert error_of(outcomes[1].reply).code == grpc.StatusCode.INTERNAL.value[0]
    assert [c for c in scorer.calls if c[0] == "batch"] == [("batch", "iris", 4), ("batch", "iris", 1),
                                                            ("batch", "iris", 1), ("batch", "iris", 2)]


def test_a_server_failing_every_job_alone_keeps_them_all_held():
    """The other side of the rule: when every job fails alone, the server is at fault, and nothing is
    dead-lettered (a broken server must not empty the queue into the dead letters)."""
    scorer = RaisingModelScorer(broken=True)
    window = [delivery(i, jobs.predict_job("iris", ROW)) for i in range(1, 4)]
    outcomes = handle(window, scorer, TOPO)
    assert [o.action for o in outcomes] == [Action.RETRY] * 3
    assert {o.code for o in outcomes} == {grpc.StatusCode.INTERNAL}
