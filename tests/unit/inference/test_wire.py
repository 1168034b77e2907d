"""Feature map entries without a value (what Envoy sends for JSON null) are refused, by method, with the key named;
canonical messages never are."""
from __future__ import annotations

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference.rpc import wire
from predmesh.v1 import inference_pb2
from tests.conftest import IRIS_ROW


def _entry(key: str, value: float | None) -> bytes:
    body = b"\x0a" + bytes([len(key)]) + key.encode()
    if value is not None:
        body += inference_pb2.PredictRequest(features={"k": value}).SerializeToString()[-9:]  # tag 0x11 + double
    return body


def _features(field: int, row: dict) -> bytes:
    out = b""
    for key, value in row.items():
        entry = _entry(key, value)
        out += bytes([(field << 3) | 2, len(entry)]) + entry
    return out


def _predict_bytes(row: dict) -> bytes:
    return b"\x0a\x04iris" + _features(2, row)


def test_an_entry_without_value_is_named():
    data = _predict_bytes({**IRIS_ROW, "petal_width": None})
    message = inference_pb2.PredictRequest.FromString(data)
    assert message.features["petal_width"] == 0.0  # what protobuf alone would score
    assert "'petal_width' has no value" in (wire.check_features(data, message) or "")
    ok = _predict_bytes(IRIS_ROW)
    assert wire.check_features(ok, inference_pb2.PredictRequest.FromString(ok)) is None


def test_batch_rows_name_the_row():
    rows = [_features(1, IRIS_ROW), _features(1, {**IRIS_ROW, "sepal_width": None})]
    data = b"\x0a\x04iris" + b"".join(bytes([0x12, len(r)]) + r for r in rows)
    message = inference_pb2.PredictBatchRequest.FromString(data)
    problem = wire.check_rows(data, message)
    assert isinstance(problem, str) and problem.startswith("rows[1]: feature 'sepal_width'")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=20), st.floats(allow_nan=True), max_size=8), st.text(max_size=40))
def test_canonical_messages_are_never_refused(features, request_id):
    message = inference_pb2.PredictRequest(model="m", features=features, request_id=request_id)
    data = message.SerializeToString()
    assert wire.check_features(data, inference_pb2.PredictRequest.FromString(data)) is None
    batch = inference_pb2.PredictBatchRequest(model="m", rows=[inference_pb2.FeatureRow(features=features)] * 2)
    data = batch.SerializeToString()
    assert wire.check_rows(data, inference_pb2.PredictBatchRequest.FromString(data)) is None


def test_over_grpc_every_predict_method_refuses_a_valueless_entry(inproc_server):
    _, target = inproc_server
    data = _predict_bytes({**IRIS_ROW, "petal_length": None})
    batch_row = _features(1, {**IRIS_ROW, "petal_length": None})
    batch = b"\x0a\x04iris" + bytes([0x12, len(batch_row)]) + batch_row
    with grpc.insecure_channel(target) as channel:
        for method, payload in (("Predict", data), ("PredictBatch", batch)):
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                f"/predmesh.v1.InferenceService/{method}")
            with pytest.raises(grpc.RpcError) as info:
                call(payload, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "'petal_length' has no value" in (info.value.details() or "")
        # a stream answers the refused message in order and goes on
        good = inference_pb2.PredictStreamRequest(model="iris", features=IRIS_ROW, request_id="s-2")
        bad = data + b"\x1a\x03s-1"  # request_id = "s-1"
        stream: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
            "/predmesh.v1.InferenceService/PredictStream")
        answers = [inference_pb2.PredictStreamResponse.FromString(raw)
                   for raw in stream(iter([bad, good.SerializeToString()]), timeout=5)]
        assert [a.request_id for a in answers] == ["s-1", "s-2"]
        assert answers[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "'petal_length' has no value" in answers[0].error.message
        assert answers[1].prediction.label == "setosa"
