"""T10 gateway policies against a scripted upstream: headers and deadlines the server sees, retries only on
UNAVAILABLE, no unknown JSON field reaching the server, circuit breaker overflow, local rate limit (429)."""
from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from predmesh.v1 import inference_pb2, model_pb2
from tests.conftest import IRIS_ROW
from tests.support.gateway import GatewayProc

pytestmark = pytest.mark.envoy

PREDICT = "/predmesh.v1.InferenceService/Predict"


class ScriptedUpstream:
    """An in-process gRPC server whose Predict behaves by model name and records what arrived."""

    def __init__(self):
        self.seen: list[dict] = []
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(32))
        handler = grpc.method_handlers_generic_handler("predmesh.v1.InferenceService", {
            "Predict": grpc.unary_unary_rpc_method_handler(self.predict, request_deserializer=None,
                                                           response_serializer=None)})
        self.server.add_generic_rpc_handlers([handler])
        hs = health.HealthServicer()
        hs.set("predmesh.v1.InferenceService", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(hs, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{self.port}"

    def predict(self, raw: bytes, context) -> bytes:
        request = inference_pb2.PredictRequest.FromString(raw)
        metadata = dict(context.invocation_metadata())
        record = {"model": request.model, "raw_len": len(raw), "known_len": len(request.SerializeToString()),
                  "transport": metadata.get("x-predmesh-transport"), "remaining": context.time_remaining(),
                  "cancelled": False}
        with self.lock:
            self.seen.append(record)
            self.attempts[request.request_id] += 1
            attempt = self.attempts[request.request_id]
        if request.model == "flaky" and attempt == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try another replica")
        if request.model == "broken":
            context.abort(grpc.StatusCode.INTERNAL, "boom")
        if request.model == "slow":
            done = threading.Event()
            context.add_callback(done.set)
            record["cancelled"] = done.wait(3.0)
        return inference_pb2.PredictResponse(prediction=model_pb2.Prediction(
            request_id=request.request_id, model=request.model, label="ok")).SerializeToString()

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.stop(0)


@pytest.fixture(scope="module")
def upstream():
    with ScriptedUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    with GatewayProc([upstream.target], tmp_path_factory.mktemp("gw-policies"),
                     env={"PREDMESH_GATEWAY_TIMEOUT_S": "1"}) as gateway:
        yield gateway


def call(gw, model: str, request_id: str, **body) -> requests.Response:
    return requests.post(f"{gw.url}/v1/models/{model}:predict", timeout=10,
                         json={"features": IRIS_ROW, "request_id": request_id, **body})


# a deadline travels as grpc-timeout, rounded up to its unit, and the server counts it from its own receipt: what
# the server sees may exceed the sent timeout by a little (0.8006 s for 0.8 s once), never by the 0.2 s that tell
# the client's 0.8 s from the route's 1.0 s
ROUNDING_S = 0.01


def last(upstream, model: str) -> dict:
    return [r for r in upstream.seen if r["model"] == model][-1]


def test_rest_calls_are_marked_rest_and_carry_the_route_deadline(gw, upstream):
    resp = call(gw, "echo", "h1")
    assert resp.status_code == 200
    seen = last(upstream, "echo")
    assert seen["transport"] == "rest"
    assert 0 < seen["remaining"] <= 1.0 + ROUNDING_S  # the route timeout reached the server as its gRPC deadline


def test_native_grpc_through_envoy_is_not_marked_rest(gw, upstream):
    with grpc.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
        predict: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(PREDICT)
        predict(inference_pb2.PredictRequest(model="native", request_id="n1").SerializeToString(), timeout=0.8)
    seen = last(upstream, "native")
    assert seen["transport"] is None
    assert 0 < seen["remaining"] <= 0.8 + ROUNDING_S  # the client's own deadline passes through


def test_unknown_json_field_never_reaches_the_server(gw, upstream):
    resp = call(gw, "extra", "x1", surprise={"nested": [1, 2, 3]}, another="field")
    assert resp.status_code == 200
    seen = last(upstream, "extra")
    assert seen["raw_len"] == seen["known_len"]  # no unknown fields in the bytes the server received


def test_route_timeout_is_504_and_the_server_sees_the_cancellation(gw, upstream):
    started = time.monotonic()
    resp = call(gw, "slow", "s1")
    elapsed = time.monotonic() - started
    assert resp.status_code == 504
    assert elapsed < 2.0
    deadline = time.monotonic() + 5
    while not last(upstream, "slow")["cancelled"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert last(upstream, "slow")["cancelled"]


def test_unavailable_is_retried_on_another_attempt(gw, upstream):
    resp = call(gw, "flaky", "f1")
    assert resp.status_code == 200
    assert upstream.attempts["f1"] == 2


def test_internal_is_not_retried(gw, upstream):
    resp = call(gw, "broken", "b1")
    assert resp.status_code == 500 and resp.json()["code"] == 13
    assert upstream.attempts["b1"] == 1


def test_circuit_breaker_sheds_concurrent_slow_calls(upstream, tmp_path):
    env = {"PREDMESH_GATEWAY_MAX_REQUESTS": "2", "PREDMESH_GATEWAY_MAX_PENDING": "1",
           "PREDMESH_GATEWAY_TIMEOUT_S": "0.5"}
    with GatewayProc([upstream.target], tmp_path / "gw", env=env) as small:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda i: call(small, "slow", f"cbs{i}"), range(8)))
    overflow = [r for r in responses if r.status_code == 503]
    assert overflow, Counter(r.status_code for r in responses)
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overflow)
    assert {r.status_code for r in responses} <= {503, 504}  # slow ones time out, the rest overflow


def test_local_rate_limit_answers_429(upstream, tmp_path):
    with GatewayProc([upstream.target], tmp_path / "gw", env={"PREDMESH_GATEWAY_RATE_LIMIT_RPS": "5"}) as limited:
        time.sleep(1.1)  # a full bucket
        codes = [call(limited, "echo", f"rl{i}").status_code for i in range(15)]
    assert codes[:5] == [200] * 5
    assert codes.count(429) >= 5
