"""Writes of monitoring data need a credential: SubmitFeedback, SubmitFeedbackBatch and RecordBatchRun on the
real server process (PREDMESH_WRITER_TOKEN) refuse anonymous callers (UNAUTHENTICATED, nothing stored) and a
read-only token (PERMISSION_DENIED), take the writer and the admin token, and reads stay open. A server with no
writer and no admin token refuses writes saying how to configure them; PREDMESH_OPEN_WRITES=1 opens them and is
announced at start."""
from __future__ import annotations

import grpc
import pytest

from predmesh import AsyncClient, Client
from predmesh.errors import PermissionDenied, Unauthenticated
from predmesh.v1 import analytics_pb2 as pb
from predmesh.v1 import analytics_pb2_grpc
from tests.conftest import IRIS_ROW
from tests.support.procs import ADMIN_TOKEN, READONLY_TOKEN, WRITER_TOKEN, ServerProc, wait_for


def bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def stored_prediction(target: str, request_id: str) -> str:
    with Client(target, timeout=5) as client:
        pid = client.predict("iris", IRIS_ROW, request_id=request_id).prediction_id
        wait_for(lambda: any(p.prediction.prediction_id == pid for p in client.list_predictions()), 10,
                 what="the prediction stored")
    return pid


def writes(pid: str, key: str):
    """(method name, request) of every write of monitoring data; the feedback says the setosa row is virginica."""
    return [
        ("SubmitFeedback", pb.SubmitFeedbackRequest(prediction_id=pid, label="virginica")),
        ("SubmitFeedbackBatch", pb.SubmitFeedbackBatchRequest(
            items=[pb.FeedbackItem(prediction_id=pid, label="virginica")])),
        ("RecordBatchRun", pb.RecordBatchRunRequest(run=pb.BatchRun(
            run_key=key, kind="nightly", model="iris", status=pb.BATCH_RUN_STATUS_FAILED))),
    ]


def code_of(stub, method: str, request, metadata) -> tuple[grpc.StatusCode, str]:
    try:
        getattr(stub, method)(request, timeout=10, metadata=metadata)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def test_writes_need_the_writer_or_admin_token_and_reads_stay_open(model_store, tmp_path):
    with ServerProc(model_store, tmp_path / "server.log") as server:
        pid = stored_prediction(server.target, "auth-1")
        with grpc.insecure_channel(server.target) as channel:
            stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
            for method, request in writes(pid, "nightly/iris/2026-12-01"):
                code, details = code_of(stub, method, request, ())
                assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in details, (method, details)
                assert code_of(stub, method, request, bearer("not-a-token"))[0] == grpc.StatusCode.UNAUTHENTICATED
                code, details = code_of(stub, method, request, (("authorization", f"Basic {WRITER_TOKEN}"),))
                assert code == grpc.StatusCode.UNAUTHENTICATED, (method, details)
                code, details = code_of(stub, method, request, bearer(READONLY_TOKEN))
                assert code == grpc.StatusCode.PERMISSION_DENIED and "read-only" in details, (method, details)
            # nothing an anonymous or read-only caller sent was stored
            stats = stub.GetStats(pb.GetStatsRequest(model="iris"), timeout=10)
            assert [q.feedback_count for q in stats.quality] in ([], [0]), stats.quality
            assert list(stub.ListBatchRuns(pb.ListBatchRunsRequest(), timeout=10).runs) == []

            for token in (WRITER_TOKEN, ADMIN_TOKEN):
                for method, request in writes(pid, f"nightly/iris/{token}"):
                    code, details = code_of(stub, method, request, bearer(token))
                    assert code == grpc.StatusCode.OK, (method, token, details)
            # reads need no token
            [quality] = stub.GetStats(pb.GetStatsRequest(model="iris"), timeout=10).quality
            assert (quality.feedback_count, quality.accuracy) == (1, 0.0)
            assert len(stub.ListBatchRuns(pb.ListBatchRunsRequest(), timeout=10).runs) == 2
            assert len(stub.ListPredictions(pb.ListPredictionsRequest(), timeout=10).predictions) == 1


async def _async_writes(target: str, pid: str) -> None:
    async with AsyncClient(target, timeout=5) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.submit_feedback(pid, "setosa")
        with pytest.raises(Unauthenticated):
            await anonymous.record_batch_run("score/iris/aio", kind="score", model="iris", status="succeeded")
    async with AsyncClient(target, timeout=5, writer_token=READONLY_TOKEN) as reader:
        with pytest.raises(PermissionDenied):
            await reader.submit_feedback_batch({pid: "setosa"})
    async with AsyncClient(target, timeout=5, writer_token=WRITER_TOKEN) as writer:
        assert (await writer.submit_feedback(pid, "setosa")).correct
        assert (await writer.submit_feedback_batch({pid: "setosa"})).recorded == 1
        assert (await writer.record_batch_run("score/iris/aio", kind="score", model="iris",
                                              status="succeeded")).created


def test_the_sdk_sends_the_writer_token_else_the_admin_token_with_writes_only(model_store, tmp_path):
    import asyncio

    with ServerProc(model_store, tmp_path / "server.log") as server:
        pid = stored_prediction(server.target, "auth-sdk")
        with Client(server.target, timeout=5) as anonymous:
            with pytest.raises(Unauthenticated, match="Bearer"):
                anonymous.submit_feedback(pid, "setosa")
            with pytest.raises(Unauthenticated):
                anonymous.submit_feedback_batch({pid: "setosa"})
            with pytest.raises(Unauthenticated):
                anonymous.record_batch_run("score/iris/sdk", kind="score", model="iris", status="succeeded")
        with Client(server.target, timeout=5, writer_token=READONLY_TOKEN) as reader:
            with pytest.raises(PermissionDenied):
                reader.record_batch_run("score/iris/sdk", kind="score", model="iris", status="succeeded")
        with Client(server.target, timeout=5, writer_token=WRITER_TOKEN) as writer:
            assert writer.submit_feedback(pid, "setosa").correct
            assert writer.record_batch_run("score/iris/sdk", kind="score", model="iris", status="succeeded").created
            with pytest.raises(Unauthenticated):  # admin calls never carry the writer token
                writer.reload_model("iris")
        with Client(server.target, timeout=5, admin_token=WRITER_TOKEN) as misused:
            with pytest.raises(PermissionDenied):  # the writer token is not an admin token
                misused.reload_model("iris")
        with Client(server.target, timeout=5, admin_token=ADMIN_TOKEN) as admin:  # admin may write too
            assert admin.submit_feedback_batch({pid: "versicolor"}).recorded == 1
        asyncio.run(_async_writes(server.target, pid))


def test_a_non_admin_token_is_told_which_admin_change_it_may_not_make(model_store, tmp_path):
    """A read-only or writer token on RolloutModel, PinModel or RollbackModel was told "this token may not reload;
    reloading needs the admin token": each refusal now names the call's own action."""
    with ServerProc(model_store, tmp_path / "server.log") as server:
        for token in (READONLY_TOKEN, WRITER_TOKEN):
            with Client(server.target, timeout=5, admin_token=token) as client:
                for call, action in ((lambda: client.rollout_model("iris", "1"), "roll out"),
                                     (lambda: client.pin_model("iris", "1"), "pin"),
                                     (lambda: client.rollback_model("iris"), "roll back"),
                                     (lambda: client.reload_model("iris"), "reload")):
                    with pytest.raises(PermissionDenied) as refused:
                        call()
                    assert refused.value.message == f"this token may not {action}; that needs the admin token"


def test_without_writer_and_admin_tokens_writes_are_refused_with_how_to_configure(model_store, tmp_path):
    env = {"PREDMESH_ADMIN_TOKEN": "", "PREDMESH_READONLY_TOKEN": "", "PREDMESH_WRITER_TOKEN": ""}
    with ServerProc(model_store, tmp_path / "server.log", env=env) as server:
        pid = stored_prediction(server.target, "auth-none")
        with grpc.insecure_channel(server.target) as channel:
            stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
            for method, request in writes(pid, "nightly/iris/none"):
                code, details = code_of(stub, method, request, bearer("anything"))
                assert code == grpc.StatusCode.UNAUTHENTICATED, (method, details)
                assert "PREDMESH_WRITER_TOKEN" in details and "PREDMESH_OPEN_WRITES=1" in details, details
            assert stub.GetStats(pb.GetStatsRequest(), timeout=10).total == 1
        log = server.log()
    assert "writes of monitoring data are refused" in log and "PREDMESH_WRITER_TOKEN" in log


def test_open_writes_accepts_anonymous_writes_and_is_announced_at_start(model_store, tmp_path):
    env = {"PREDMESH_ADMIN_TOKEN": "", "PREDMESH_READONLY_TOKEN": "", "PREDMESH_WRITER_TOKEN": "",
           "PREDMESH_OPEN_WRITES": "1"}
    with ServerProc(model_store, tmp_path / "server.log", env=env) as server:
        pid = stored_prediction(server.target, "auth-open")
        with Client(server.target, timeout=5) as anonymous:
            assert not anonymous.submit_feedback(pid, "virginica").correct
            assert anonymous.record_batch_run("nightly/iris/open", kind="nightly", model="iris",
                                              status="failed").created
        log = server.log()
    [line] = [line for line in log.splitlines() if "PREDMESH_OPEN_WRITES" in line]
    assert "WARNING" in line and "without a token" in line, line
