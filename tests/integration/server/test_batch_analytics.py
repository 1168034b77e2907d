"""The batch additions to AnalyticsService against a real server process, on PostgreSQL and SQLite:
SubmitFeedbackBatch (recorded/correct counts, ids not stored yet), RecordBatchRun (a finish completes the running
attempt of its key; tests/integration/server/test_batch_attempts.py has the attempts) and
ListBatchRuns (newest first, paged); every client mistake is INVALID_ARGUMENT, never INTERNAL."""
from __future__ import annotations

import time

import grpc
import pytest

from predmesh.v1 import analytics_pb2 as pb
from predmesh.v1 import analytics_pb2_grpc, inference_pb2, inference_pb2_grpc
from predmesh.values import encode
from tests.conftest import IRIS_ROW
from tests.support.procs import WRITER_TOKEN, ServerProc, wait_for, with_token

VERSICOLOR = {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 4.2, "petal_width": 1.3}


@pytest.fixture
def stubs(model_store, tmp_path, empty_db_url):
    with ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DATABASE_URL": empty_db_url}) as proc, \
            grpc.insecure_channel(proc.target) as channel:
        yield (inference_pb2_grpc.InferenceServiceStub(channel),
               analytics_pb2_grpc.AnalyticsServiceStub(with_token(channel)))  # a writer (feedback, runs)


def code_of(call, request) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value.code(), info.value.details()


def test_feedback_batch_records_counts_and_reports_unknown_ids(stubs):
    inference, analytics = stubs
    rows = [inference_pb2.FeatureRow(features=encode(row), request_id=f"fbb-{i}")
            for i, row in enumerate([IRIS_ROW, IRIS_ROW, VERSICOLOR])]
    preds = inference.PredictBatch(inference_pb2.PredictBatchRequest(model="iris", rows=rows), timeout=10).predictions
    wait_for(lambda: analytics.GetStats(pb.GetStatsRequest(), timeout=10).total == 3, 10, what="3 rows stored")
    missing = "00000000-0000-0000-0000-000000000000"
    items = [pb.FeedbackItem(prediction_id=preds[0].prediction_id, label=preds[0].label),
             pb.FeedbackItem(prediction_id=preds[1].prediction_id, label="virginica"),  # wrong
             pb.FeedbackItem(prediction_id=missing, label="setosa"),
             pb.FeedbackItem(prediction_id=preds[2].prediction_id, label=preds[2].label)]
    answer = analytics.SubmitFeedbackBatch(pb.SubmitFeedbackBatchRequest(items=items), timeout=10)
    assert (answer.recorded, answer.correct, list(answer.not_found)) == (3, 2, [missing])
    [q] = analytics.GetStats(pb.GetStatsRequest(model="iris"), timeout=10).quality
    assert (q.feedback_count, q.accuracy) == (3, pytest.approx(2 / 3))
    # the same labels again overwrite (one feedback per prediction); a fix moves accuracy to 1
    items[1] = pb.FeedbackItem(prediction_id=preds[1].prediction_id, label=preds[1].label)
    again = analytics.SubmitFeedbackBatch(pb.SubmitFeedbackBatchRequest(items=items), timeout=10)
    assert (again.recorded, again.correct) == (3, 3)
    [q] = analytics.GetStats(pb.GetStatsRequest(model="iris"), timeout=10).quality
    assert (q.feedback_count, q.accuracy) == (3, 1.0)
    # client mistakes: INVALID_ARGUMENT with a message naming the item, and nothing recorded
    cases = [
        [],
        [pb.FeedbackItem(prediction_id="", label="setosa")],
        [pb.FeedbackItem(prediction_id="x" * 129, label="setosa")],
        [pb.FeedbackItem(prediction_id="a\x00b", label="setosa")],
        [pb.FeedbackItem(prediction_id=preds[0].prediction_id, label="")],
        [pb.FeedbackItem(prediction_id=preds[0].prediction_id, label="se\x00tosa")],
        [pb.FeedbackItem(prediction_id=preds[0].prediction_id, label="setosa")] * 1001,
        [pb.FeedbackItem(prediction_id=preds[2].prediction_id, label="virginica"),
         pb.FeedbackItem(prediction_id=preds[0].prediction_id, label="dog")],
    ]
    for bad in cases:
        code, details = code_of(analytics.SubmitFeedbackBatch, pb.SubmitFeedbackBatchRequest(items=bad))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (bad[:1], code, details)
    [q] = analytics.GetStats(pb.GetStatsRequest(model="iris"), timeout=10).quality
    assert (q.feedback_count, q.accuracy) == (3, 1.0)  # the refused batch with "dog" changed nothing


def run(key: str, **fields) -> pb.BatchRun:
    base = {"run_key": key, "kind": "nightly", "model": "iris", "status": pb.BATCH_RUN_STATUS_RUNNING}
    return pb.BatchRun(**{**base, **fields})


def test_batch_runs_upsert_by_key_and_list_newest_first(stubs):
    _, analytics = stubs
    record = analytics.RecordBatchRun
    first = record(pb.RecordBatchRunRequest(run=run("nightly/iris/2026-11-25", run_date="2026-11-25")), timeout=10)
    assert first.created and first.run.status == pb.BATCH_RUN_STATUS_RUNNING
    assert not first.run.HasField("accuracy")
    done = record(pb.RecordBatchRunRequest(run=run(
        "nightly/iris/2026-11-25", run_date="2026-11-25", model_version="2", rows=1000, rejected=3, accuracy=0.97,
        duration_seconds=4.5, status=pb.BATCH_RUN_STATUS_SUCCEEDED, message="1000 rows, 3 rejected")), timeout=10)
    assert not done.created
    assert done.run.started_at == first.run.started_at  # kept from the first recording
    assert (done.run.rows, done.run.rejected, done.run.accuracy, done.run.model_version) == (1000, 3, 0.97, "2")
    time.sleep(0.01)
    for day in ("2026-11-26", "2026-11-27"):
        record(pb.RecordBatchRunRequest(run=run(f"nightly/iris/{day}", run_date=day,
                                                status=pb.BATCH_RUN_STATUS_FAILED, message="server down")),
               timeout=10)
        time.sleep(0.01)
    stated = run("score/other/abc", kind="score", model="other")
    stated.started_at.seconds = int(time.time()) + 3600  # the caller states when it started
    stored = record(pb.RecordBatchRunRequest(run=stated), timeout=10).run
    assert stored.started_at.seconds == stated.started_at.seconds
    listed = analytics.ListBatchRuns(pb.ListBatchRunsRequest(model="iris"), timeout=10)
    assert [r.run_date for r in listed.runs] == ["2026-11-27", "2026-11-26", "2026-11-25"]
    assert listed.runs[2].accuracy == 0.97 and listed.runs[0].status == pb.BATCH_RUN_STATUS_FAILED
    pages, token = [], ""
    while True:
        page = analytics.ListBatchRuns(pb.ListBatchRunsRequest(page_size=2, page_token=token), timeout=10)
        pages.append([r.run_key for r in page.runs])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2]
    keys = [k for page in pages for k in page]
    assert pages[0][0] == "score/other/abc" and keys.count("nightly/iris/2026-11-25") == 1
    assert [r.run_key for r in analytics.ListBatchRuns(pb.ListBatchRunsRequest(kind="score"), timeout=10).runs] \
        == ["score/other/abc"]
    bad_runs = [
        run(""), run("k" * 129), run("a\x00b"), run("k", kind=""), run("k", model=""), run("k", model="../x"),
        run("k", model_version="a b"), run("k", run_date="2026-13-01"), run("k", run_date="yesterday"),
        run("k", status=pb.BATCH_RUN_STATUS_UNSPECIFIED), run("k", status=42), run("k", rows=-1),
        run("k", rows=2**40), run("k", rejected=-5), run("k", accuracy=1.5), run("k", accuracy=float("nan")),
        run("k", duration_seconds=float("inf")), run("k", duration_seconds=-1), run("k", message="x" * 1025),
        run("k", message="line\nbreak"),
    ]
    for bad in bad_runs:
        code, details = code_of(record, pb.RecordBatchRunRequest(run=bad))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (bad, code, details)
    huge = run("k")
    huge.started_at.seconds = 2**40
    assert code_of(record, pb.RecordBatchRunRequest(run=huge))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(record, pb.RecordBatchRunRequest())[0] == grpc.StatusCode.INVALID_ARGUMENT
    for bad_request in (pb.ListBatchRunsRequest(page_size=-1), pb.ListBatchRunsRequest(page_size=1001),
                        pb.ListBatchRunsRequest(page_token="garbage"), pb.ListBatchRunsRequest(page_token="x\x00"),
                        pb.ListBatchRunsRequest(model="a/b")):
        assert code_of(analytics.ListBatchRuns, bad_request)[0] == grpc.StatusCode.INVALID_ARGUMENT, bad_request


def test_sdk_batch_calls_on_client_and_async_client(model_store, tmp_path):
    """The SDK methods (defined once in predmesh.calls) on both clients: typed results, errors as exceptions."""
    import asyncio

    from predmesh import AsyncClient, Client, InvalidArgument
    with ServerProc(model_store, tmp_path / "server.log") as proc, \
            Client(proc.target, transport="batch", timeout=10, writer_token=WRITER_TOKEN) as client:
        preds = client.predict_batch("iris", [(IRIS_ROW, "sdk-1"), (VERSICOLOR, "sdk-2")])
        wait_for(lambda: client.get_stats().by_transport.get("batch") == 2, 10, what="2 rows stored")
        result = client.submit_feedback_batch({preds[0].prediction_id: "setosa", preds[1].prediction_id: "setosa",
                                               "not-stored-yet": "setosa"})
        assert (result.recorded, result.correct, result.not_found) == (2, 1, ("not-stored-yet",))
        with pytest.raises(InvalidArgument, match="not a class"):
            client.submit_feedback_batch([(preds[0].prediction_id, "dog")])
        recorded = client.record_batch_run("score/iris/f00d", kind="score", model="iris", status="succeeded",
                                           model_version=preds[0].model_version, rows=2, rejected=1,
                                           duration_seconds=0.5, message="2 rows scored, 1 rejected")
        assert recorded.created and recorded.run.accuracy is None and recorded.run.status == "succeeded"
        assert recorded.run.started_at is not None and recorded.run.rows == 2

        async def use_async():
            async with AsyncClient(proc.target, transport="batch", timeout=10, writer_token=WRITER_TOKEN) as aclient:
                again = await aclient.record_batch_run("score/iris/f00d", kind="score", model="iris",
                                                       status="failed", message="rerun failed", accuracy=0.5)
                page = await aclient.list_batch_runs(kind="score")
                fb = await aclient.submit_feedback_batch([(preds[1].prediction_id, "versicolor")])
                return again, page, fb

        again, page, fb = asyncio.run(use_async())
        # no attempt of the key was running: the failure is a new attempt, the succeeded one is kept
        assert again.created and again.run.status == "failed" and again.run.accuracy == 0.5
        assert again.run.attempt == 2 and recorded.run.attempt == 1
        assert [(r.run_key, r.attempt) for r in page] == [("score/iris/f00d", 2), ("score/iris/f00d", 1)]
        assert page.items[0].message == "rerun failed" and page.items[1].status == "succeeded"
        assert (fb.recorded, fb.correct, fb.not_found) == (1, 1, ())
        with pytest.raises(ValueError, match="status"):
            client.record_batch_run("k", kind="score", model="iris", status="done")


def test_count_predictions_counts_the_stored_rows_of_a_request_id_prefix(stubs):
    """CountPredictions: the rows of one model whose request id starts with the prefix, exactly (a longer id that
    shares the start of the prefix, another model's rows, older rows before start_time do not count); the SDK's
    count_predictions; a missing model or prefix is INVALID_ARGUMENT."""
    from datetime import UTC, datetime, timedelta

    inference, analytics = stubs
    rows = [inference_pb2.FeatureRow(features=encode(IRIS_ROW), request_id=rid)
            for rid in ("batch-ab12-0", "batch-ab12-1", "batch-ab12-10", "batch-ab1-0", "Batch-ab12-2")]
    inference.PredictBatch(inference_pb2.PredictBatchRequest(model="iris", rows=rows), timeout=10)
    wait_for(lambda: analytics.GetStats(pb.GetStatsRequest(), timeout=10).total == 5, 10, what="5 rows stored")

    def count(prefix: str, model: str = "iris", **fields) -> int:
        return analytics.CountPredictions(pb.CountPredictionsRequest(model=model, request_id_prefix=prefix,
                                                                     **fields), timeout=10).count
    assert count("batch-ab12-") == 3  # not batch-ab1-0, nor Batch-ab12-2 (case counts)
    assert count("batch-ab1") == 4 and count("batch-ab12-1") == 2 and count("nope") == 0
    assert count("batch-ab12-", model="other") == 0
    future = pb.CountPredictionsRequest().start_time
    future.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    assert count("batch-ab12-", start_time=future) == 0
    for bad in (pb.CountPredictionsRequest(request_id_prefix="batch-"), pb.CountPredictionsRequest(model="iris"),
                pb.CountPredictionsRequest(model="iris", request_id_prefix="x" * 129)):
        code, details = code_of(analytics.CountPredictions, bad)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (bad, details)


def test_sdk_count_predictions(model_store, tmp_path):
    from predmesh import Client
    with ServerProc(model_store, tmp_path / "server.log") as proc, Client(proc.target, timeout=10) as client:
        client.predict_batch("iris", [(IRIS_ROW, "sdk-count-1"), (VERSICOLOR, "sdk-count-2")])
        wait_for(lambda: client.count_predictions("iris", "sdk-count-") == 2, 10, what="2 rows counted")
        assert client.count_predictions("iris", "sdk-count-2") == 1
