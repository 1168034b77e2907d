"""A feature without a value is refused naming the feature, on every Predict method, with the upgrade hint: a map
entry with only its key (an empty google.protobuf.Value), and the doubles a client built for predmesh 0.2 sends
(`map<string, double>`: each entry's field 2 a fixed64, which protobuf cannot read as a Value, so it keeps the whole
entry as an unknown field). The bytes are built by hand, as such a client sends them."""
from __future__ import annotations

import struct

import grpc
import pytest

from predmesh.v1 import inference_pb2
from predmesh.values import encode, unreadable_features
from tests.conftest import IRIS_ROW


def _entry(key: str, value: float | None, old: bool) -> bytes:
    """One features map entry: the key, then (old) a 0.2 double, or a google.protobuf.Value, or (None) nothing."""
    body = b"\x0a" + bytes([len(key)]) + key.encode()
    if value is None:
        return body
    if old:
        return body + b"\x11" + struct.pack("<d", value)  # field 2, wire type 1 (fixed64): a double
    payload = encode({key: value})[key].SerializeToString()
    return body + b"\x12" + bytes([len(payload)]) + payload


def _features(field: int, row: dict, old: bool = False) -> bytes:
    out = b""
    for key, value in row.items():
        entry = _entry(key, value, old)
        out += bytes([(field << 3) | 2, len(entry)]) + entry
    return out


def _predict(row: dict, old: bool = False) -> bytes:
    return b"\x0a\x04iris" + _features(2, row, old)


def test_the_hand_built_bytes_are_what_they_claim():
    ok = inference_pb2.PredictRequest.FromString(_predict(IRIS_ROW))
    assert ok == inference_pb2.PredictRequest(model="iris", features=encode(IRIS_ROW))
    old = inference_pb2.PredictRequest.FromString(_predict(IRIS_ROW, old=True))
    assert not old.features and unreadable_features(old) == list(IRIS_ROW)
    assert unreadable_features(ok) == []
    valueless = inference_pb2.PredictRequest.FromString(_predict({"a": None}))
    assert valueless.features["a"].WhichOneof("kind") is None


@pytest.mark.parametrize("what, data, problem", [
    ("an entry without a value", _predict({**IRIS_ROW, "petal_length": None}), "'petal_length' has no value"),
    ("a predmesh 0.2 request", _predict(IRIS_ROW, old=True), "'sepal_length' has no value"),
])
def test_every_predict_method_refuses_a_feature_without_a_value(inproc_server, what, data, problem):
    _, target = inproc_server
    entries = data[len(b"\x0a\x04iris"):]  # the features map entries (field 2 of PredictRequest) …
    row = b""
    i = 0
    while i < len(entries):  # … as a FeatureRow's (field 1)
        size = entries[i + 1]
        row += bytes([0x0a, size]) + entries[i + 2:i + 2 + size]
        i += 2 + size
    batch = b"\x0a\x04iris" + bytes([0x12, len(row)]) + row
    with grpc.insecure_channel(target) as channel:
        for method, payload in (("Predict", data), ("PredictBatch", batch)):
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                f"/predmesh.v1.InferenceService/{method}")
            with pytest.raises(grpc.RpcError) as info:
                call(payload, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, what
            assert problem in (info.value.details() or "")
            assert "predmesh 0.2" in (info.value.details() or "") and "upgrade" in (info.value.details() or "")
        # a stream answers the refused message in order and goes on
        good = inference_pb2.PredictStreamRequest(model="iris", features=encode(IRIS_ROW), request_id="s-2")
        bad = data + b"\x1a\x03s-1"  # request_id = "s-1"
        stream: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            "/predmesh.v1.InferenceService/PredictStream")
        answers = [inference_pb2.PredictStreamResponse.FromString(raw)
                   for raw in stream(iter([bad, good.SerializeToString()]), timeout=5)]
        assert [a.request_id for a in answers] == ["s-1", "s-2"]
        assert answers[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert problem in answers[0].error.message
        assert answers[1].prediction.label == "setosa"
