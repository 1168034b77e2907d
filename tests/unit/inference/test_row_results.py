"""PredictBatch with partial_success: every row answered on its own (rows and matrix forms), the valid rows scored
and recorded, call-level problems still failing the call; the limits GetModel publishes; both SDK clients."""
from __future__ import annotations

import asyncio
import math

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from database.records import PredictionBatch
from inference.metrics import ServerMetrics
from inference.rpc.server import InferenceServer
from inference.scoring.convert import ids
from inference.settings import ServerSettings
from predmesh import AsyncClient, CallLimits, Client, InvalidArgument, NotFound, ResourceExhausted
from predmesh.v1 import inference_pb2
from predmesh.values import encode
from tests.conftest import IRIS_ROW
from tests.support.procs import ADMIN_TOKEN
from tests.support.recorder import ListRecorder

NAMES = list(IRIS_ROW)
VIRGINICA = {**IRIS_ROW, "petal_length": 5.0, "petal_width": 2.0}


@pytest.fixture
def served(model_store):
    recorder = ListRecorder()
    settings = ServerSettings(grpc_addr="127.0.0.1:0", metrics_addr="", model_store=model_store, drain_seconds=0,
                              grace_seconds=1, max_batch_rows=10, max_message_bytes=64 * 1024,
                              admin_token=ADMIN_TOKEN)
    server = InferenceServer(settings, recorder=recorder, metrics=ServerMetrics(CollectorRegistry()))
    port = server.start()
    with Client(f"127.0.0.1:{port}", timeout=5) as client:
        yield client, recorder, f"127.0.0.1:{port}"
    server.stop(grace=0)


def test_rows_each_answered_on_its_own_and_only_the_valid_ones_recorded(served):
    client, recorder, _ = served
    rows = [(IRIS_ROW, "a"), ({**IRIS_ROW, "petal_width": math.nan}, "b"), ({"x": 1.0}, "c"), (VIRGINICA, "d"),
            ({**IRIS_ROW, "sepal_length": 1e300}, "e"), (IRIS_ROW, "f" * 200)]
    answers = client.predict_each("iris", rows)
    assert [a.request_id for a in answers] == ["a", "b", "c", "d", "e", ""]  # an over-long id is not echoed
    assert [a.prediction.label if a.prediction else None for a in answers] == [
        "setosa", None, None, "virginica", None, None]
    assert answers[0].prediction.prediction_id == ids("a")[1] and answers[0].error is None
    errors = [a.error for a in answers]
    assert all(isinstance(e, InvalidArgument) and e.code == grpc.StatusCode.INVALID_ARGUMENT
               for e in (errors[1], errors[2], errors[4], errors[5]))
    # the message the row alone is refused with (Predict): it names the feature; the row is named by its place
    assert errors[1].message == "feature 'petal_width' is nan; send a finite number"
    assert "unknown feature 'x'" in errors[2].message and not errors[2].message.startswith("row")
    assert "'sepal_length'" in errors[4].message and "plausible range" in errors[4].message
    assert "request_id" in errors[5].message
    with pytest.raises(InvalidArgument) as alone:
        client.predict("iris", {**IRIS_ROW, "petal_width": math.nan})
    assert alone.value.message == errors[1].message
    assert recorder.request_ids() == ["a", "d"]


def test_without_partial_success_one_refused_row_still_fails_the_whole_call(served):
    client, recorder, _ = served
    with pytest.raises(InvalidArgument, match="row 1: feature 'petal_width' is nan"):
        client.predict_batch("iris", [(IRIS_ROW, "a"), ({**IRIS_ROW, "petal_width": math.nan}, "b")])
    with pytest.raises(InvalidArgument, match="row 1: feature 'petal_width' is nan"):
        client.predict_matrix("iris", NAMES, [IRIS_ROW[k] for k in NAMES] + [1.0, 1.0, 1.0, math.nan])
    assert recorder.records == []


def test_every_row_refused_is_an_answer_not_an_error_and_records_nothing(served):
    client, recorder, _ = served
    answers = client.predict_each("iris", [({"x": 1.0}, "a"), ({**IRIS_ROW, "petal_width": math.inf}, "b")])
    assert [type(a.error) for a in answers] == [InvalidArgument, InvalidArgument]
    m = client.predict_matrix("iris", NAMES, [math.nan] * 4, request_id_prefix="p-", row_numbers=[7],
                              partial_success=True)
    assert list(m.prediction_ids) == [""] and set(m.errors) == {0}
    assert recorder.records == []


@pytest.mark.parametrize("call, error, message", [
    (lambda c: c.predict_each("nope", [IRIS_ROW]), NotFound, "nope"),
    (lambda c: c.predict_each("iris", [IRIS_ROW] * 11), InvalidArgument, "11 rows exceed the limit of 10"),
    (lambda c: c.predict_each("iris", []), InvalidArgument, "rows is empty"),
    (lambda c: c.predict_each("iris", [{f"f{i:05d}": 1.0 for i in range(6000)}]), ResourceExhausted, None),
    (lambda c: c.predict_matrix("iris", NAMES, [1.0] * 44, partial_success=True), InvalidArgument,
     "11 rows exceed the limit of 10"),
    (lambda c: c.predict_matrix("iris", [*NAMES[:-1], "extra"], [1.0] * 4, partial_success=True), InvalidArgument,
     "unknown feature 'extra'"),
    (lambda c: c.predict_matrix("iris", NAMES, [1.0] * 5, partial_success=True), InvalidArgument, "whole number"),
])
def test_problems_of_the_call_itself_still_fail_the_call(served, call, error, message):
    client, recorder, _ = served
    with pytest.raises(error, match=message):
        call(client)
    assert recorder.records == []


def test_matrix_refused_rows_keep_their_place_and_the_others_are_scored_as_one_batch(served):
    client, recorder, _ = served
    rows = [IRIS_ROW, {**IRIS_ROW, "petal_width": math.nan}, VIRGINICA, {**IRIS_ROW, "sepal_width": -1e9}, IRIS_ROW]
    values = [r[k] for r in rows for k in NAMES]
    m = client.predict_matrix("iris", NAMES, values, request_id_prefix="m-", row_numbers=[10, 11, 12, 13, 14],
                              partial_success=True)
    assert len(m) == 5 and sorted(m.errors) == [1, 3]
    assert m.errors[1].message == "feature 'petal_width' is nan; send a finite number"
    assert "'sepal_width'" in m.errors[3].message and not m.errors[3].message.startswith("row")
    assert [(e.row, e.request_id, e.error.code) for e in m.raw.row_errors] == [(1, "m-11", 3), (3, "m-13", 3)]
    assert list(m.prediction_ids) == [ids("m-10")[1], "", ids("m-12")[1], "", ids("m-14")[1]]
    k = len(m.classes)
    assert [m.classes[m.labels[i]] for i in (0, 2, 4)] == ["setosa", "virginica", "setosa"]
    assert list(m.probabilities[k:2 * k]) == [0.0] * k and list(m.labels)[1] == 0
    # the scored rows are recorded as one batch of exactly those rows, and score as they do alone (m-12 sent
    # again is a retry of the same request: its stored answer, nothing recorded twice)
    alone = client.predict_matrix("iris", NAMES, values[8:12], request_id_prefix="m-", row_numbers=[12])
    assert list(m.probabilities[2 * k:3 * k]) == pytest.approx(list(alone.probabilities), abs=1e-12)
    assert list(alone.prediction_ids) == [ids("m-12")[1]]
    [batch] = recorder.records
    assert isinstance(batch, PredictionBatch) and batch.request_ids == ["m-10", "m-12", "m-14"]
    assert np.array_equal(batch.features[1], values[8:12])
    # without a prefix the server generates ids for the scored rows only; a refused row has none
    fresh = client.predict_matrix("iris", NAMES, values, partial_success=True)
    assert [e.request_id for e in fresh.raw.row_errors] == ["", ""] and all(fresh.prediction_ids[i] for i in (0, 2))


def test_a_row_with_a_valueless_feature_is_refused_alone_with_partial_success(served):
    _, recorder, target = served
    # a map entry with its key and no value: a google.protobuf.Value with no kind (what a predmesh 0.2 client's
    # double entry parses as too)
    valueless = b"\x0a\x0d\x0a\x0bpetal_width"
    first = inference_pb2.FeatureRow(features=encode(IRIS_ROW), request_id="ok").SerializeToString()
    second = inference_pb2.FeatureRow(features=encode({k: v for k, v in IRIS_ROW.items() if k != "petal_width"}),
                                      request_id="null").SerializeToString() + valueless
    assert len(first) < 128 and len(second) < 128  # one-byte lengths below
    body = b"\x0a\x04iris" + b"\x12" + bytes([len(first)]) + first + b"\x12" + bytes([len(second)]) + second
    partial = body + b"\x20\x01"  # partial_success = true
    parsed = inference_pb2.PredictBatchRequest.FromString(partial)
    assert parsed.rows[1].features["petal_width"].WhichOneof("kind") is None
    with grpc.insecure_channel(target) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, inference_pb2.PredictBatchResponse] = channel.unary_unary(
            "/predmesh.v1.InferenceService/PredictBatch",
            response_deserializer=inference_pb2.PredictBatchResponse.FromString)
        answer = call(partial, timeout=5)
        assert [r.WhichOneof("result") for r in answer.results] == ["prediction", "error"]
        refused = answer.results[1]
        assert refused.request_id == "null" and refused.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert refused.error.message.startswith("feature 'petal_width' has no value")
        # without partial_success the same rows refuse the call, naming the row
        with pytest.raises(grpc.RpcError) as err:
            call(body, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "row 1: feature 'petal_width' has no value" in \
            (err.value.details() or "")
    assert recorder.request_ids() == ["ok"]


def test_get_model_and_list_models_publish_the_call_limits(served):
    client, _, _ = served
    info = client.get_model("iris")
    assert info.limits == CallLimits(max_batch_rows=10, max_request_bytes=64 * 1024, max_request_id_length=128)
    assert client.list_models()[0].limits == info.limits
    with Client(client.target, timeout=5, admin_token=ADMIN_TOKEN) as admin:
        assert {v.limits for v in admin.list_model_versions("iris")} == {info.limits}
        assert admin.reload_model("iris").model.limits == info.limits


def test_the_async_client_has_the_same_per_row_calls(served):
    _, _, target = served

    async def main():
        async with AsyncClient(target, timeout=5) as client:
            each = await client.predict_each("iris", [(IRIS_ROW, "a"), ({"x": 1.0}, "b")])
            m = await client.predict_matrix("iris", NAMES, [math.nan] * 4 + [IRIS_ROW[k] for k in NAMES],
                                            partial_success=True)
            return each, m, (await client.get_model("iris")).limits

    each, m, limits = asyncio.run(main())
    assert each[0].prediction.label == "setosa" and isinstance(each[1].error, InvalidArgument)
    assert set(m.errors) == {0} and m.prediction_ids[1]
    assert limits.max_batch_rows == 10
