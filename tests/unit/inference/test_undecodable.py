"""Raw bytes on every method of every service the server registers: undecodable requests are INVALID_ARGUMENT,
nothing a client sends is INTERNAL or UNKNOWN, and the server keeps serving."""
from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory

from inference.process.persistence import Persistence, PersistenceSettings
from predmesh.v1 import inference_pb2, inference_pb2_grpc
from predmesh.values import encode
from tests.conftest import IRIS_ROW

# Bytes no protobuf parser accepts as any message: a reserved wire type, truncated varint / length / fixed64,
# an end-group tag without a start.
UNDECODABLE = [b"\xff", b"\x0f", b"\x08\x80", b"\x0a\x05ab", b"\x11\x00\x00", b"\x0c"]
# Undecodable for some request types only: invalid UTF-8 in string field 1 (or in field 1 of message field 2).
SOMETIMES = [b"\x0a\x02\xc3\x28", b"\x12\x04\x0a\x02\xc3\x28"]
CLIENT_MISTAKE_FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}


@pytest.fixture
def full_server(model_store, tmp_path):
    """An in-process server with every service, analytics included (SQLite persistence)."""
    from prometheus_client import CollectorRegistry

    from inference.metrics import ServerMetrics
    from inference.rpc.server import InferenceServer
    from inference.settings import ServerSettings

    registry = CollectorRegistry()
    persistence = Persistence(PersistenceSettings(database_url=f"sqlite:///{tmp_path / 'p.db'}",
                                                  spool_dir=tmp_path / "spool"), registry)
    settings = ServerSettings(grpc_addr="127.0.0.1:0", metrics_addr="", model_store=model_store,
                              drain_seconds=0, grace_seconds=1)
    server = InferenceServer(settings, recorder=persistence.recorder, metrics=ServerMetrics(registry))
    persistence.attach(server)
    port = server.start()
    yield server, f"127.0.0.1:{port}"
    server.stop(grace=0)


def _methods(service_names):
    pool = descriptor_pool.Default()
    for service in service_names:
        for method in pool.FindServiceByName(service).methods:
            yield (f"/{service}/{method.name}", method.client_streaming, method.server_streaming,
                   message_factory.GetMessageClass(method.input_type))


def _decodes(cls, payload: bytes) -> bool:
    try:
        cls.FromString(payload)
    except Exception:
        return False
    return True


def _call(channel, path, client_streaming, server_streaming, payload: bytes) -> grpc.StatusCode:
    try:
        if not client_streaming and not server_streaming:
            channel.unary_unary(path)(payload, timeout=5)
        elif not client_streaming:
            call = channel.unary_stream(path)(payload, timeout=2)
            for _ in call:  # answered: decoded (Health/Watch would stream until the deadline: stop here)
                call.cancel()
                break
        elif server_streaming:
            for _ in channel.stream_stream(path)(iter([payload]), timeout=2):
                pass
        else:
            channel.stream_unary(path)(iter([payload]), timeout=2)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_undecodable_bytes_on_every_method_are_invalid_argument(full_server):
    server, target = full_server
    services = [*server.services, "grpc.reflection.v1alpha.ServerReflection"]
    methods = list(_methods(services))
    assert len(methods) >= 20  # inference 5, admin 2, analytics 3, OIP 8, health 2, reflection
    rng = random.Random(1234)
    random_payloads = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))) for _ in range(12)]
    outcomes: dict[str, set[str]] = {}
    undecodable = 0
    with grpc.insecure_channel(target) as channel:
        for path, client_streaming, server_streaming, cls in methods:
            for payload in UNDECODABLE + SOMETIMES + random_payloads:
                code = _call(channel, path, client_streaming, server_streaming, payload)
                assert code not in CLIENT_MISTAKE_FORBIDDEN, (path, payload, code)
                if not _decodes(cls, payload):  # what the server's own parser refuses is the client's mistake
                    assert code == grpc.StatusCode.INVALID_ARGUMENT, (path, payload, code)
                    undecodable += 1
                else:
                    assert payload not in UNDECODABLE, (path, payload)
                outcomes.setdefault(path, set()).add(code.name)
        answer = inference_pb2_grpc.InferenceServiceStub(channel).Predict(
            inference_pb2.PredictRequest(model="iris", features=encode(IRIS_ROW)), timeout=5)
    assert answer.prediction.label == "setosa"
    assert undecodable >= len(methods) * len(UNDECODABLE)
    print(f"{len(methods)} methods x {len(UNDECODABLE) + len(SOMETIMES) + len(random_payloads)} payloads: "
          f"{undecodable} undecodable, all INVALID_ARGUMENT; {sum(len(v) for v in outcomes.values())} distinct "
          "(method, status) outcomes, none INTERNAL/UNKNOWN")


def test_a_stream_that_turns_undecodable_midway_answers_the_good_messages_then_invalid_argument(full_server):
    _, target = full_server
    good = inference_pb2.PredictStreamRequest(model="iris", features=encode(IRIS_ROW),
                                              request_id="s-1").SerializeToString()
    with grpc.insecure_channel(target) as channel:
        stream: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            "/predmesh.v1.InferenceService/PredictStream")
        call = stream(iter([good, b"\xff", good]), timeout=5)
        answers = []
        with pytest.raises(grpc.RpcError) as info:
            for raw in call:
                answers.append(inference_pb2.PredictStreamResponse.FromString(raw))  # noqa: PERF401 - keeps answers before the error
    assert [a.request_id for a in answers] == ["s-1"]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
