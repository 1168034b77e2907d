"""Every status code of the inference and admin services, against an in-process server and the real SDK."""
from __future__ import annotations

import math

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from predmesh import (
    Client,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from predmesh.values import encode
from tests.conftest import IRIS_ROW
from tests.support.procs import ADMIN_TOKEN, READONLY_TOKEN


@pytest.fixture
def client(inproc_server):
    _, target = inproc_server
    with Client(target, timeout=5) as c:
        yield c


def test_predict_answers_with_label_probabilities_and_version(client):
    p = client.predict("iris", IRIS_ROW, request_id="req-1")
    assert p.label == "setosa" and p.model == "iris" and p.model_version == "2"
    assert set(p.probabilities) == {"setosa", "versicolor", "virginica"}
    assert abs(sum(p.probabilities.values()) - 1) < 1e-9
    assert p.request_id == "req-1" and p.prediction_id
    again = client.predict("iris", IRIS_ROW, request_id="req-1")
    assert again.prediction_id == p.prediction_id, "a retried request keeps its prediction_id"
    assert client.predict("iris", IRIS_ROW).request_id != client.predict("iris", IRIS_ROW).request_id


@pytest.mark.parametrize("features, field", [
    ({k: v for k, v in IRIS_ROW.items() if k != "sepal_width"}, "sepal_width"),
    ({**IRIS_ROW, "extra": 1.0}, "extra"),
    ({**IRIS_ROW, "petal_width": math.nan}, "petal_width"),
    ({**IRIS_ROW, "petal_width": math.inf}, "petal_width"),
    ({**IRIS_ROW, "sepal_length": 1e300}, "sepal_length"),
])
def test_bad_features_are_invalid_argument_naming_the_field(client, features, field):
    with pytest.raises(InvalidArgument, match=field):
        client.predict("iris", features)


def test_unknown_model_is_not_found(client):
    with pytest.raises(NotFound, match="nope"):
        client.predict("nope", IRIS_ROW)
    with pytest.raises(NotFound):
        client.get_model("nope")


def test_batch_limits_and_row_errors(client):
    assert len(client.predict_batch("iris", [IRIS_ROW] * 10)) == 10
    with pytest.raises(InvalidArgument, match="11 rows exceed the limit of 10"):
        client.predict_batch("iris", [IRIS_ROW] * 11)
    with pytest.raises(InvalidArgument, match="row 1: feature 'petal_width' is nan"):
        client.predict_batch("iris", [IRIS_ROW, {**IRIS_ROW, "petal_width": math.nan}])
    with pytest.raises(InvalidArgument, match="rows is empty"):
        client.predict_batch("iris", [])


def test_batch_in_columns_scores_like_rows_with_ids_from_prefix_and_row_numbers(client):
    from inference.scoring.convert import ids
    names = list(IRIS_ROW)
    rows = [{k: v + 0.1 * i for k, v in IRIS_ROW.items()} for i in range(4)]
    by_row = client.predict_batch("iris", [(r, f"col-{n}") for r, n in zip(rows, (3, 5, 8, 13))])
    order = names[::-1]  # any order of the feature names
    m = client.predict_matrix("iris", order, [r[k] for r in rows for k in order], request_id_prefix="col-",
                              row_numbers=[3, 5, 8, 13])
    assert m.model == "iris" and m.model_version == "2" and len(m) == 4
    assert list(m.prediction_ids) == [p.prediction_id for p in by_row] == [ids(f"col-{n}")[1] for n in (3, 5, 8, 13)]
    assert [m.classes[i] for i in m.labels] == [p.label for p in by_row]
    k = len(m.classes)
    assert [dict(zip(m.classes, m.probabilities[i * k:(i + 1) * k])) for i in range(4)] == [
        p.probabilities for p in by_row]
    fresh = client.predict_matrix("iris", names, [IRIS_ROW[k] for k in names] * 2)
    assert len(set(fresh.prediction_ids)) == 2  # no prefix: fresh ids per row


@pytest.mark.parametrize("call, message", [
    (lambda c, n, v: c.predict_matrix("iris", n, v * 11), "11 rows exceed the limit of 10"),
    (lambda c, n, v: c.predict_matrix("iris", n, v[:-1]), "whole number"),
    (lambda c, n, v: c.predict_matrix("iris", n, []), "whole number"),
    (lambda c, n, v: c.predict_matrix("iris", [*n[:-1], "extra"], v), "unknown feature 'extra'"),
    (lambda c, n, v: c.predict_matrix("iris", n[:-1], v[:-1]), "feature 'petal_width' is missing"),
    (lambda c, n, v: c.predict_matrix("iris", n, [*v, *v[:-1], math.nan]), "row 1: feature 'petal_width' is nan"),
    (lambda c, n, v: c.predict_matrix("iris", n, v * 2, request_id_prefix="x-", row_numbers=[1]),
     "row_numbers holds 1 numbers for 2 rows"),
    (lambda c, n, v: c.predict_matrix("iris", n, v, row_numbers=[1]), "needs a request_id_prefix"),
    (lambda c, n, v: c.predict_matrix("iris", n, v, request_id_prefix="x" * 130, row_numbers=[1]),
     "request_id_prefix is 130 characters"),
])
def test_batch_in_columns_refuses_what_it_cannot_score(client, call, message):
    names = list(IRIS_ROW)
    with pytest.raises(InvalidArgument, match=message):
        call(client, names, [IRIS_ROW[k] for k in names])


def test_batch_with_both_rows_and_columns_is_invalid(inproc_server):
    from predmesh.v1 import inference_pb2, inference_pb2_grpc
    _, target = inproc_server
    request = inference_pb2.PredictBatchRequest(model="iris",
                                                rows=[inference_pb2.FeatureRow(features=encode(IRIS_ROW))])
    request.matrix.feature_names.extend(IRIS_ROW)
    request.matrix.values.extend(IRIS_ROW.values())
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as err:
        inference_pb2_grpc.InferenceServiceStub(channel).PredictBatch(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not both" in (err.value.details() or "")


def test_oversized_message_is_resource_exhausted(client):
    huge = {f"f{i:05d}": 1.0 for i in range(6000)}  # > 64 KiB on the wire
    with pytest.raises(ResourceExhausted):
        client.predict("iris", huge)


def test_stream_answers_every_row_and_keeps_going_after_a_bad_one(client):
    rows = [(IRIS_ROW, "a"), ({"x": 1.0}, "b"), ({**IRIS_ROW, "petal_length": 5.0, "petal_width": 2.0}, "c")]
    answers = list(client.predict_stream("iris", rows))
    assert [a.request_id for a in answers] == ["a", "b", "c"]
    assert answers[0].prediction.label == "setosa"
    assert answers[1].prediction is None and isinstance(answers[1].error, InvalidArgument)
    assert answers[1].error.code == grpc.StatusCode.INVALID_ARGUMENT and "'x'" in answers[1].error.message
    assert answers[2].prediction.label == "virginica"


def test_list_and_get_model_describe_the_schema(client):
    [info] = client.list_models()
    assert info.name == "iris" and info.version == "2" and info.serving
    assert [f.name for f in info.features] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert info.features[0].min == pytest.approx(4.3) and info.features[0].max == pytest.approx(7.9)
    assert list(info.classes) == ["setosa", "versicolor", "virginica"]
    assert len(info.sha256) == 64 and info.metrics["holdout_accuracy"] > 0.8
    assert client.get_model("iris") == info
    # the training distribution: per feature mean, std and decile edges; per class share, mean and std
    f = info.features[2]
    assert f.min < f.quantiles[0] <= f.mean <= f.quantiles[-1] < f.max and f.std > 0
    assert list(f.quantiles) == sorted(f.quantiles) and len(f.quantiles) == 9
    assert [c.label for c in info.class_profiles] == list(info.classes)
    assert sum(c.share for c in info.class_profiles) == pytest.approx(1.0)
    setosa, _, virginica = info.class_profiles
    assert setosa.mean[2] < 2.0 < 5.0 < virginica.mean[2] and len(setosa.std) == 4


def test_admin_requires_a_token(inproc_server):
    _, target = inproc_server
    with Client(target) as anonymous:
        with pytest.raises(Unauthenticated, match="missing"):
            anonymous.reload_model("iris")
    with Client(target, admin_token="wrong") as bad:
        with pytest.raises(Unauthenticated, match="invalid token"):
            bad.list_model_versions("iris")
    with Client(target, admin_token=READONLY_TOKEN) as reader:
        assert [v.version for v in reader.list_model_versions("iris")] == ["2", "1"]
        with pytest.raises(PermissionDenied):
            reader.reload_model("iris", "1")
    with Client(target, admin_token=ADMIN_TOKEN) as admin:
        result = admin.reload_model("iris", "1")
        assert result.model.version == "1" and result.previous_version == "2"
        assert result.model.estimator == "RandomForestClassifier"
        with pytest.raises(NotFound):
            admin.reload_model("iris", "42")
        with pytest.raises(InvalidArgument, match="not a valid name"):  # a name that cannot exist: client's mistake
            admin.reload_model("iris", "../1")
        with pytest.raises(InvalidArgument, match="empty"):
            admin.reload_model("", "1")


def test_unexpected_failure_is_internal_with_a_generic_message(inproc_server, client, monkeypatch, caplog):
    server, _ = inproc_server
    model = server.registry.get("iris")
    monkeypatch.setattr(model.batcher, "_score_fn", lambda m: 1 / 0)
    with pytest.raises(Internal) as exc:
        client.predict("iris", IRIS_ROW)
    assert "ZeroDivision" not in exc.value.message and "server log" in exc.value.message
    assert "ZeroDivisionError" in caplog.text


def test_known_model_without_loadable_version_is_unavailable(model_store, tmp_path):
    from prometheus_client import CollectorRegistry

    from inference.metrics import ServerMetrics
    from inference.rpc.server import InferenceServer
    from inference.settings import ServerSettings

    for version in ("1", "2"):
        (model_store / "iris" / version / "model.skops").write_bytes(b"garbage")
    server = InferenceServer(ServerSettings(grpc_addr="127.0.0.1:0", metrics_addr="", model_store=model_store,
                                            drain_seconds=0), metrics=ServerMetrics(CollectorRegistry()))
    port = server.start()
    try:
        with Client(f"127.0.0.1:{port}", timeout=2) as c:
            with pytest.raises(Unavailable, match="no loaded version"):
                c.predict("iris", IRIS_ROW)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop(grace=0)


def test_health_and_reflection(inproc_server):
    _, target = inproc_server
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "predmesh.v1.InferenceService", "predmesh.v1.ModelAdminService"):
            assert stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status == \
                health_pb2.HealthCheckResponse.SERVING
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"predmesh.v1.InferenceService", "predmesh.v1.ModelAdminService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= services
