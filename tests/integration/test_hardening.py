"""What outside testing broke, on a real server process: SIGTERM after hostile streams, stray entries in the
model store, crafted tree artifacts."""
from __future__ import annotations

import os
import threading
import time

import grpc
import pytest

from predmesh.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from tests.conftest import IRIS_ROW
from tests.support.procs import ADMIN_TOKEN, ServerProc

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
STREAM = "/predmesh.v1.InferenceService/PredictStream"


def _predict(target: str) -> inference_pb2.PredictResponse:
    with grpc.insecure_channel(target) as channel:
        return inference_pb2_grpc.InferenceServiceStub(channel).Predict(
            inference_pb2.PredictRequest(model="iris", features=IRIS_ROW), timeout=10)


def test_sigterm_after_undecodable_and_abandoned_streams_exits_within_drain_plus_grace(model_store, tmp_path):
    """Undecodable PredictStream messages, and streams whose client never half-closes, must not hold the stop."""
    drain, grace = 1.0, 2.0
    env = {"PREDMESH_DRAIN_SECONDS": str(drain), "PREDMESH_GRACE_SECONDS": str(grace)}
    with ServerProc(model_store, tmp_path / "server.log", env=env) as proc:
        channel = grpc.insecure_channel(proc.target)
        stream = channel.stream_stream(STREAM)
        forever = threading.Event()
        good = inference_pb2.PredictStreamRequest(model="iris", features=IRIS_ROW).SerializeToString()

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
