"""What outside testing broke, on a real server process: SIGTERM after hostile streams, stray entries in the
model store, crafted tree artifacts, hostile notes on fleet changes."""
from __future__ import annotations

import os
import threading
import time

import grpc
import pytest

from predmesh.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from predmesh.values import encode
from tests.conftest import IRIS_ROW
from tests.support.pg import TempSchema
from tests.support.procs import ADMIN_TOKEN, ServerProc

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
STREAM = "/predmesh.v1.InferenceService/PredictStream"


def _predict(target: str) -> inference_pb2.PredictResponse:
    with grpc.insecure_channel(target) as channel:
        return inference_pb2_grpc.InferenceServiceStub(channel).Predict(
            inference_pb2.PredictRequest(model="iris", features=encode(IRIS_ROW)), timeout=10)


def test_sigterm_after_undecodable_and_abandoned_streams_exits_within_drain_plus_grace(model_store, tmp_path):
    """Undecodable PredictStream messages, and streams whose client never half-closes, must not hold the stop."""
    drain, grace = 1.0, 2.0
    env = {"PREDMESH_DRAIN_SECONDS": str(drain), "PREDMESH_GRACE_SECONDS": str(grace)}
    with ServerProc(model_store, tmp_path / "server.log", env=env) as proc:
        channel = grpc.insecure_channel(proc.target)
        stream: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(STREAM)
        forever = threading.Event()
        good = inference_pb2.PredictStreamRequest(model="iris", features=encode(IRIS_ROW)).SerializeToString()

        def held_open(first: bytes):
            yield first
            forever.wait()  # never half-close

        calls = [stream(iter([b"\xff", b"\x0a\x05ab"]), timeout=60) for _ in range(4)]
        calls += [stream(held_open(payload), timeout=60) for payload in (b"\xff", good, good)]
        codes = []
        for call in calls[:4]:
            try:
                list(call)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
        assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 4
        time.sleep(0.5)  # the held-open streams are in their handlers now
        assert _predict(proc.target).prediction.label == "setosa"  # still serving
        started = time.monotonic()
        code = proc.terminate(timeout=drain + grace + 20)
        took = time.monotonic() - started
        forever.set()
        channel.close()
    assert code == 0, proc.log()[-2000:]
    # drain + grace + the stop margin (5 s) + interpreter start/stop slack
    assert took < drain + grace + 8, f"SIGTERM took {took:.1f} s"
    print(f"SIGTERM with 4 undecodable and 3 held-open streams: exited in {took:.1f} s "
          f"(drain {drain} s + grace {grace} s)")


def test_a_crafted_tree_is_refused_on_reload_and_skipped_at_start(model_store, tmp_path):
    """Version 3: RandomForest whose first tree has a child index out of range (scikit-learn segfaults on it),
    correctly hashed. Reload: FAILED_PRECONDITION, the process lives and serves version 2; a restart falls back
    to version 2 (the newest good one)."""
    from tests.support import artifacts

    with ServerProc(model_store, tmp_path / "run1.log") as proc:
        artifacts.crafted_forest(model_store, "iris", "1", "3", artifacts.TREE_DEFECTS["left child out of range"])
        with grpc.insecure_channel(proc.target) as channel:
            admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                admin.ReloadModel(admin_pb2.ReloadModelRequest(model="iris", version="3"), metadata=ADMIN,
                                  timeout=30)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "child index out of range" in (info.value.details() or "")
            with pytest.raises(grpc.RpcError) as info:  # "newest" is version 3 too
                admin.ReloadModel(admin_pb2.ReloadModelRequest(model="iris"), metadata=ADMIN, timeout=30)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert proc.alive()
        answer = _predict(proc.target)
        assert answer.prediction.model_version == "2" and answer.prediction.label == "setosa"
    with ServerProc(model_store, tmp_path / "run2.log") as proc:
        assert _predict(proc.target).prediction.model_version == "2"
    assert "version 3 cannot serve, trying an older one" in proc.log()


def test_stray_entries_in_the_model_store_are_skipped_and_never_listed(model_store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    import shutil

    shutil.copytree(model_store / "iris" / "2", outside / "7")  # a valid version, but outside the store
    shutil.copytree(model_store / "iris", outside / "elsewhere")
    (model_store / "lost+found").mkdir()
    (model_store / "README.txt").write_text("not a model\n")
    (model_store / "escape").symlink_to(outside / "elsewhere")  # a model directory leading outside
    (model_store / "iris" / "7").symlink_to(outside / "7")  # a version directory leading outside
    (model_store / "dangling").symlink_to(tmp_path / "missing")
    os.mkfifo(model_store / "fifo")
    with ServerProc(model_store, tmp_path / "server.log") as proc:
        assert _predict(proc.target).prediction.model_version == "2"
        with grpc.insecure_channel(proc.target) as channel:
            admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
            versions = admin.ListModelVersions(admin_pb2.ListModelVersionsRequest(model="iris"), metadata=ADMIN,
                                               timeout=10)
            assert [v.version for v in versions.versions] == ["2", "1"]
            models = inference_pb2_grpc.InferenceServiceStub(channel).ListModels(
                inference_pb2.ListModelsRequest(), timeout=10)
            assert [m.name for m in models.models] == ["iris"]
            with pytest.raises(grpc.RpcError) as info:
                admin.ListModelVersions(admin_pb2.ListModelVersionsRequest(model="escape"), metadata=ADMIN,
                                        timeout=10)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as info:
                admin.ReloadModel(admin_pb2.ReloadModelRequest(model="iris", version="7"), metadata=ADMIN,
                                  timeout=10)
            assert info.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
    log = proc.log()
    assert "skipping 'lost+found'" in log and "skipping 'escape'" in log


@pytest.mark.postgres
def test_a_fleet_change_note_that_is_not_printable_text_is_invalid_argument(model_store, tmp_path):
    """RolloutModel, PinModel and RollbackModel stored and logged reason and changed_by as sent: a NUL was INTERNAL
    on PostgreSQL, a newline forged a line of the server log, any length was kept."""
    with TempSchema() as schema:
        env = {"PREDMESH_DATABASE_URL": schema.url, "PREDMESH_SPOOL_DIR": str(tmp_path / "spool")}
        with ServerProc(model_store, tmp_path / "server.log", env=env) as proc:
            with grpc.insecure_channel(proc.target) as channel:
                admin = admin_pb2_grpc.ModelAdminServiceStub(channel)
                calls = (
                    lambda **note: admin.RolloutModel(admin_pb2.RolloutModelRequest(model="iris", version="1", **note),
                                                      metadata=ADMIN, timeout=10),
                    lambda **note: admin.PinModel(admin_pb2.PinModelRequest(model="iris", version="1", **note),
                                                  metadata=ADMIN, timeout=10),
                    lambda **note: admin.RollbackModel(admin_pb2.RollbackModelRequest(model="iris", **note),
                                                       metadata=ADMIN, timeout=10),
                )
                for call in calls:
                    for field, value in (("reason", "a\x00b"), ("changed_by", "\x00"),
                                         ("reason", "ok\n2026-12-07 12:00:00,000 INFO 1 forged: line"),
                                         ("changed_by", "\x1b[2J"), ("reason", "r" * 1025), ("changed_by", "b" * 129)):
                        with pytest.raises(grpc.RpcError) as refused:
                            call(**{field: value})
                        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
                        assert field in (refused.value.details() or "")
                calls[0](reason="nightly retrain", changed_by="ops@host")  # printable notes still pass
            log = proc.log()
    assert "forged: line" not in log and "failed unexpectedly" not in log
