"""Every attempt of a batch run is kept (RecordBatchRun / ListBatchRuns on a real server, PostgreSQL and SQLite):
RUNNING with attempt 0 starts attempt n+1, a record naming the attempt finishes it, a finished attempt is never
changed (FAILED_PRECONDITION naming key and attempt), and the listing shows every attempt with its own outcome."""
from __future__ import annotations

import grpc
import pytest

from predmesh.v1 import analytics_pb2 as pb
from predmesh.v1 import analytics_pb2_grpc
from tests.support.procs import ServerProc, with_token

KEY = "nightly/iris/2026-11-25"


@pytest.fixture
def analytics(model_store, tmp_path, empty_db_url):
    with ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DATABASE_URL": empty_db_url}) as proc, \
            grpc.insecure_channel(proc.target) as channel:
        yield analytics_pb2_grpc.AnalyticsServiceStub(with_token(channel))


def record(analytics, status, attempt=0, key=KEY, **fields) -> pb.RecordBatchRunResponse:
    run = pb.BatchRun(run_key=key, kind="nightly", model="iris", run_date="2026-11-25", status=status,
                      attempt=attempt, **fields)
    return analytics.RecordBatchRun(pb.RecordBatchRunRequest(run=run), timeout=10)


def refused(analytics, status, attempt, **fields) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        record(analytics, status, attempt, **fields)
    return info.value.code(), info.value.details() or ""


def test_a_failed_attempt_is_kept_beside_the_next_one(analytics):
    first = record(analytics, pb.BATCH_RUN_STATUS_RUNNING, input="/data/day.csv", message="scoring")
    assert first.created and first.run.attempt == 1 and first.run.input == "/data/day.csv"
    assert not first.run.HasField("finished_at")
    failed = record(analytics, pb.BATCH_RUN_STATUS_FAILED, 1, rows=120, message="Score failed: server down")
    assert not failed.created and failed.run.attempt == 1 and failed.run.HasField("finished_at")
    assert failed.run.input == "/data/day.csv" and failed.run.started_at == first.run.started_at
    second = record(analytics, pb.BATCH_RUN_STATUS_RUNNING, input="/data/day.csv")
    assert second.created and second.run.attempt == 2
    done = record(analytics, pb.BATCH_RUN_STATUS_SUCCEEDED, 2, rows=300, rejected=2, model_version="1",
                  message="300 rows scored")
    assert done.run.status == pb.BATCH_RUN_STATUS_SUCCEEDED and done.run.attempt == 2

    runs = analytics.ListBatchRuns(pb.ListBatchRunsRequest(run_key=KEY), timeout=10).runs
    assert [(r.attempt, r.status, r.rows, r.rejected, r.message) for r in runs] == [
        (2, pb.BATCH_RUN_STATUS_SUCCEEDED, 300, 2, "300 rows scored"),
        (1, pb.BATCH_RUN_STATUS_FAILED, 120, 0, "Score failed: server down")]
    assert all(r.HasField("finished_at") and r.input == "/data/day.csv" for r in runs)
    assert runs[0].model_version == "1" and runs[1].model_version == ""
    # the unfiltered listing has both too; another key's attempts are numbered from 1
    other = record(analytics, pb.BATCH_RUN_STATUS_SUCCEEDED, key="nightly/iris/2026-11-26")
    assert other.created and other.run.attempt == 1  # a finish with no attempt running: a new finished attempt
    listed = analytics.ListBatchRuns(pb.ListBatchRunsRequest(model="iris"), timeout=10).runs
    assert [(r.run_key, r.attempt) for r in listed] == [("nightly/iris/2026-11-26", 1), (KEY, 2), (KEY, 1)]


def test_a_finished_attempt_is_never_changed(analytics):
    record(analytics, pb.BATCH_RUN_STATUS_RUNNING)
    record(analytics, pb.BATCH_RUN_STATUS_SUCCEEDED, 1, rows=10)
    for status in (pb.BATCH_RUN_STATUS_FAILED, pb.BATCH_RUN_STATUS_SUCCEEDED, pb.BATCH_RUN_STATUS_RUNNING):
        code, details = refused(analytics, status, 1, rows=99, message="again")
        assert code == grpc.StatusCode.FAILED_PRECONDITION, (code, details)
        assert KEY in details and "attempt 1" in details and "finished" in details
    code, details = refused(analytics, pb.BATCH_RUN_STATUS_SUCCEEDED, 7)
    assert code == grpc.StatusCode.NOT_FOUND and "attempt 7" in details and KEY in details
    assert refused(analytics, pb.BATCH_RUN_STATUS_RUNNING, -1)[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert refused(analytics, pb.BATCH_RUN_STATUS_RUNNING, 0, input="x" * 1025)[0] == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert refused(analytics, pb.BATCH_RUN_STATUS_RUNNING, 0, input="a\nb")[0] == grpc.StatusCode.INVALID_ARGUMENT
    [run] = analytics.ListBatchRuns(pb.ListBatchRunsRequest(run_key=KEY), timeout=10).runs
    assert (run.attempt, run.status, run.rows, run.message) == (1, pb.BATCH_RUN_STATUS_SUCCEEDED, 10, "")
    # a finish without a number finishes the latest running attempt, not a finished one
    record(analytics, pb.BATCH_RUN_STATUS_RUNNING)
    record(analytics, pb.BATCH_RUN_STATUS_RUNNING)
    finished = record(analytics, pb.BATCH_RUN_STATUS_FAILED, message="killed")
    assert finished.run.attempt == 3 and not finished.created
    runs = analytics.ListBatchRuns(pb.ListBatchRunsRequest(run_key=KEY), timeout=10).runs
    assert [(r.attempt, r.status) for r in runs] == [
        (3, pb.BATCH_RUN_STATUS_FAILED), (2, pb.BATCH_RUN_STATUS_RUNNING), (1, pb.BATCH_RUN_STATUS_SUCCEEDED)]


def test_concurrent_starts_of_one_key_get_distinct_numbers(analytics):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(6) as pool:
        started = list(pool.map(lambda _: record(analytics, pb.BATCH_RUN_STATUS_RUNNING).run.attempt, range(6)))
    assert sorted(started) == [1, 2, 3, 4, 5, 6]
    runs = analytics.ListBatchRuns(pb.ListBatchRunsRequest(run_key=KEY), timeout=10).runs
    assert sorted(r.attempt for r in runs) == [1, 2, 3, 4, 5, 6]
