"""Raw bytes on every method of every service the server registers: undecodable requests are INVALID_ARGUMENT,
nothing a client sends is INTERNAL or UNKNOWN, and the server keeps serving."""
from __future__ import annotations

import random
import struct

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
# Undecodable for some request types only: invalid UTF-8 in string field 1 (or in field 1 of message field 2); a
# feature map entry whose google.protobuf.Value holds invalid UTF-8 as string_value (Predict, PredictStream) or a
# FeatureRow's entry that does (PredictBatch: field 2 → field 1 → entry → Value.string_value).
SOMETIMES = [b"\x0a\x02\xc3\x28", b"\x12\x04\x0a\x02\xc3\x28",
             b"\x12\x09\x0a\x01x\x12\x04\x1a\x02\xc3\x28",
             b"\x12\x0b\x0a\x09\x0a\x01x\x12\x04\x1a\x02\xc3\x28"]
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


# -- the typed contract on the wire: map<string, google.protobuf.Value> and FeatureMatrix.string_columns ----------
def _tag(field: int, wire: int) -> bytes:
    return bytes([field << 3 | wire])


def _varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _len(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload


def _entry(name: str, value: bytes) -> bytes:
    """A features map entry: key (field 1), then the value's encoding as field 2 (a Value, or a 0.2 double)."""
    return _len(1, name.encode()) + value


# petal_width's value, as each client mistake encodes it, and the words the refusal must hold
VALUES = {
    # a predmesh 0.2 client: map<string, double>, the double as field 2 with wire type fixed64
    "0.2 double": (_tag(2, 1) + struct.pack("<d", 0.2), "has no value"),
    "no kind": (_len(2, b""), "has no value"),
    "list": (_len(2, _len(6, _len(1, _tag(2, 1) + struct.pack("<d", 0.2)))), "is a list"),
    "struct": (_len(2, _len(5, b"")), "petal_width"),
    "string": (_len(2, _len(3, b"abc")), "is a number; got the string 'abc'"),
    "bool": (_len(2, _tag(4, 0) + b"\x01"), "is a number; got true"),
    "null": (_len(2, _tag(1, 0) + b"\x00"), "is missing (null)"),
}


def _typed_payloads(value: bytes) -> dict[str, tuple[bool, bytes]]:
    """The feature-carrying methods: (streaming, request bytes) with petal_width's value encoded as given."""
    entries = _iris_entries_with(value)
    features = b"".join(_len(2, e) for e in entries)  # PredictRequest / PredictStreamRequest field 2
    row = b"".join(_len(1, e) for e in entries)  # FeatureRow field 1
    return {"/predmesh.v1.InferenceService/Predict": (False, _len(1, b"iris") + features),
            "/predmesh.v1.InferenceService/PredictStream": (True, _len(1, b"iris") + features),
            "/predmesh.v1.InferenceService/PredictBatch": (False, _len(1, b"iris") + _len(2, row))}


def _iris_entries_with(value: bytes) -> list[bytes]:
    entries = [_entry(n, _len(2, _tag(2, 1) + struct.pack("<d", v))) for n, v in IRIS_ROW.items()
               if n != "petal_width"]
    return [*entries, _entry("petal_width", value)]


@pytest.mark.parametrize("case", list(VALUES))
def test_hand_encoded_feature_values_on_every_feature_method_are_invalid_argument_naming_it(full_server, case):
    """Bytes a client could send for the typed feature map (each decodes): the feature named, never INTERNAL."""
    _, target = full_server
    value, words = VALUES[case]
    with grpc.insecure_channel(target) as channel:
        for path, (streaming, payload) in _typed_payloads(value).items():
            try:
                if streaming:
                    stream: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(path)
                    [raw] = list(stream(iter([payload]), timeout=5))
                    answer = inference_pb2.PredictStreamResponse.FromString(raw)
                    assert answer.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], (path, answer)
                    message = answer.error.message
                else:
                    unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)
                    unary(payload, timeout=5)
                    raise AssertionError(f"{path} accepted {case}")
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, case, err.code(), err.details())
                message = err.details() or ""
            assert "petal_width" in message and words in message, (path, case, message)


def _string_column(name: str, values: list[bytes], missing: tuple[int, ...] = ()) -> bytes:
    body = _len(1, name.encode()) + b"".join(_len(2, v) for v in values)
    if missing:
        body += _len(3, bytes(missing))
    return _len(5, body)


@pytest.mark.parametrize("column, undecodable, words", [
    (_string_column("petal_width", [b"\xc3\x28"]), True, ""),                       # invalid UTF-8
    (_string_column("petal_width", [b"wide"]), False, "petal_width"),                # a string for a number
    (_string_column("petal_width", [b"a", b"b"]), False, "petal_width"),             # one value per row
    (_string_column("petal_width", [b""], (5,)), False, "petal_width"),               # missing_rows out of range
])
def test_hand_encoded_string_columns_are_invalid_argument(full_server, column, undecodable, words):
    _, target = full_server
    names = [n for n in IRIS_ROW if n != "petal_width"]
    matrix = b"".join(_len(1, n.encode()) for n in names)
    matrix += _len(2, b"".join(struct.pack("<d", IRIS_ROW[n]) for n in names)) + column
    payload = _len(1, b"iris") + _len(3, matrix)
    assert _decodes(inference_pb2.PredictBatchRequest, payload) is not undecodable
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as err:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/predmesh.v1.InferenceService/PredictBatch")
        call(payload, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert words in (err.value.details() or "")
