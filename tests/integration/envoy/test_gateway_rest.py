"""REST through a real Envoy: every route equals its gRPC call, the status table (T07 REST side), T10 hardening."""
from __future__ import annotations

import json

import grpc
import pytest
import requests
from google.protobuf import json_format

from gateway.descriptor import ADMIN_SERVICES, build_descriptor
from gateway.openapi import generate
from predmesh import Client
from predmesh.v1 import admin_pb2, admin_pb2_grpc, analytics_pb2, analytics_pb2_grpc, inference_pb2, inference_pb2_grpc
from predmesh.values import encode
from tests.conftest import IRIS_ROW
from tests.support.gateway import GatewayProc, rest
from tests.support.procs import ADMIN_TOKEN, READONLY_TOKEN, WRITER_TOKEN, ServerProc

pytestmark = pytest.mark.envoy

MAX_BATCH_ROWS = 10
MAX_BODY = 16 * 1024


@pytest.fixture(scope="module")
def mesh(trained_store, tmp_path_factory):
    """One inference server and one gateway in front of it (module scope: Envoy starts once)."""
    tmp = tmp_path_factory.mktemp("gw-rest")
    env = {"PREDMESH_MAX_BATCH_ROWS": str(MAX_BATCH_ROWS), "PREDMESH_MAX_MESSAGE_BYTES": str(64 * 1024),
           "PREDMESH_DATABASE_URL": f"sqlite:///{tmp}/predmesh.db"}
    with ServerProc(trained_store, tmp / "server.log", env=env) as server:
        with GatewayProc([server.target], tmp / "gw", env={"PREDMESH_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY)}) as gw:
            yield server, gw


def _channel(target):
    return grpc.insecure_channel(target)


def as_json(message) -> dict:
    """A message as Envoy prints it: proto field names, default values included."""
    return json.loads(json_format.MessageToJson(message, preserving_proto_field_name=True,
                                                always_print_fields_with_no_presence=True))


def drop_latency(doc):
    """latency_ms is measured per call, so it is the one field that legitimately differs."""
    if isinstance(doc, dict):
        return {k: drop_latency(v) for k, v in doc.items() if k != "latency_ms"}
    if isinstance(doc, list):
        return [drop_latency(v) for v in doc]
    return doc


def grpc_call(target, stub_cls, method, request, metadata=()):
    """(status name, response JSON or None) of a direct gRPC call to the server."""
    with _channel(target) as channel:
        try:
            return "OK", as_json(getattr(stub_cls(channel), method)(request, timeout=5, metadata=metadata))
        except grpc.RpcError as err:
            return err.code().name, None


HTTP_OF = {"OK": 200, "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
           "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
           "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "INTERNAL": 500, "UNKNOWN": 500,
           "DATA_LOSS": 500, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


def route_cases():
    """operationId → (listener, HTTP method, path, JSON body or None, query, headers, gRPC stub, method, request)."""
    row = dict(IRIS_ROW)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    writer = {"authorization": f"Bearer {WRITER_TOKEN}"}  # writes of monitoring data
    return {
        "InferenceService_Predict": (
            "public", "POST", "/v1/models/iris:predict", {"features": row, "request_id": "parity-1"}, None, {},
            inference_pb2_grpc.InferenceServiceStub, "Predict",
            inference_pb2.PredictRequest(model="iris", features=encode(row), request_id="parity-1")),
        "InferenceService_PredictBatch": (
            "public", "POST", "/v1/models/iris:predictBatch",
            {"rows": [{"features": row, "request_id": "parity-b1"},
                      {"features": {**row, "petal_length": 5.0, "petal_width": 1.8}, "request_id": "parity-b2"}]},
            None, {}, inference_pb2_grpc.InferenceServiceStub, "PredictBatch",
            inference_pb2.PredictBatchRequest(model="iris", rows=[
                inference_pb2.FeatureRow(features=encode(row), request_id="parity-b1"),
                inference_pb2.FeatureRow(features=encode({**row, "petal_length": 5.0, "petal_width": 1.8}),
                                         request_id="parity-b2")])),
        "InferenceService_ListModels": (
            "public", "GET", "/v1/models", None, None, {}, inference_pb2_grpc.InferenceServiceStub, "ListModels",
            inference_pb2.ListModelsRequest()),
        "InferenceService_GetModel": (
            "public", "GET", "/v1/models/iris", None, None, {}, inference_pb2_grpc.InferenceServiceStub,
            "GetModel", inference_pb2.GetModelRequest(model="iris")),
        "AnalyticsService_ListPredictions": (
            "public", "GET", "/v1/predictions", None, {"model": "iris", "page_size": 5}, {},
            analytics_pb2_grpc.AnalyticsServiceStub, "ListPredictions",
            analytics_pb2.ListPredictionsRequest(model="iris", page_size=5)),
        "AnalyticsService_CountPredictions": (
            "public", "GET", "/v1/predictions:count", None, {"model": "iris", "request_id_prefix": "batch-"}, {},
            analytics_pb2_grpc.AnalyticsServiceStub, "CountPredictions",
            analytics_pb2.CountPredictionsRequest(model="iris", request_id_prefix="batch-")),
        "AnalyticsService_GetStats": (
            "public", "GET", "/v1/stats", None, {"model": "iris"}, {}, analytics_pb2_grpc.AnalyticsServiceStub,
            "GetStats", analytics_pb2.GetStatsRequest(model="iris")),
        "AnalyticsService_SubmitFeedback": (
            "public", "POST", "/v1/predictions/no-such-prediction:feedback", {"label": "setosa"}, None, writer,
            analytics_pb2_grpc.AnalyticsServiceStub, "SubmitFeedback",
            analytics_pb2.SubmitFeedbackRequest(prediction_id="no-such-prediction", label="setosa")),
        "AnalyticsService_SubmitFeedbackBatch": (
            "public", "POST", "/v1/predictions:batchFeedback",
            {"items": [{"prediction_id": "no-such-prediction", "label": "setosa"}]}, None, writer,
            analytics_pb2_grpc.AnalyticsServiceStub, "SubmitFeedbackBatch",
            analytics_pb2.SubmitFeedbackBatchRequest(
                items=[analytics_pb2.FeedbackItem(prediction_id="no-such-prediction", label="setosa")])),
        # a run without a status is refused: the same INVALID_ARGUMENT both ways (an OK upsert differs in
        # `created` and `updated_at` between the two calls; test_batch_runs_over_rest covers that path)
        "AnalyticsService_RecordBatchRun": (
            "public", "POST", "/v1/batchRuns", {"run_key": "parity-run", "kind": "nightly", "model": "iris"}, None,
            writer, analytics_pb2_grpc.AnalyticsServiceStub, "RecordBatchRun",
            analytics_pb2.RecordBatchRunRequest(run=analytics_pb2.BatchRun(run_key="parity-run", kind="nightly",
                                                                           model="iris"))),
        "AnalyticsService_ListBatchRuns": (
            "public", "GET", "/v1/batchRuns", None, {"model": "iris", "page_size": 5}, {},
            analytics_pb2_grpc.AnalyticsServiceStub, "ListBatchRuns",
            analytics_pb2.ListBatchRunsRequest(model="iris", page_size=5)),
        "ModelAdminService_ListModelVersions": (
            "admin", "GET", "/v1/models/iris/versions", None, None, auth, admin_pb2_grpc.ModelAdminServiceStub,
            "ListModelVersions", admin_pb2.ListModelVersionsRequest(model="iris")),
        "ModelAdminService_ReloadModel": (
            "admin", "POST", "/v1/models/iris:reload", {}, None, auth, admin_pb2_grpc.ModelAdminServiceStub,
            "ReloadModel", admin_pb2.ReloadModelRequest(model="iris")),
        # the desired-state changes are parity-checked on their refusals (a success is stamped with its time)
        "ModelAdminService_RolloutModel": (
            "admin", "POST", "/v1/models/iris:rollout", {"version": "99"}, None, auth,
            admin_pb2_grpc.ModelAdminServiceStub, "RolloutModel",
            admin_pb2.RolloutModelRequest(model="iris", version="99")),
        "ModelAdminService_PinModel": (
            "admin", "POST", "/v1/models/iris:pin", {"version": ""}, None, auth,
            admin_pb2_grpc.ModelAdminServiceStub, "PinModel", admin_pb2.PinModelRequest(model="iris")),
        "ModelAdminService_RollbackModel": (
            "admin", "POST", "/v1/models/nosuchmodel:rollback", {}, None, auth,
            admin_pb2_grpc.ModelAdminServiceStub, "RollbackModel",
            admin_pb2.RollbackModelRequest(model="nosuchmodel")),
        "ModelAdminService_GetDesiredState": (
            "admin", "GET", "/v1/models/iris/desired", None, None, auth, admin_pb2_grpc.ModelAdminServiceStub,
            "GetDesiredState", admin_pb2.GetDesiredStateRequest(model="iris")),
    }


def test_route_cases_cover_every_annotated_rpc(mesh):
    """A new google.api.http rule in the protos fails this test until it gets a parity case here."""
    _, gw = mesh
    public = rest("GET", gw.url + "/openapi.json").json()
    admin = generate(build_descriptor(gw.work_dir / "admin-check.binpb").read_bytes(), ADMIN_SERVICES,
                     title="admin")
    operations = {op["operationId"] for doc in (public, admin) for ops in doc["paths"].values()
                  for op in ops.values()}
    assert operations == set(route_cases())


@pytest.mark.parametrize("operation", sorted(route_cases()))
def test_rest_route_gives_the_same_answer_as_grpc(mesh, operation):
    server, gw = mesh
    listener, method, path, body, query, headers, stub, rpc_name, request = route_cases()[operation]
    base = gw.url if listener == "public" else gw.admin_url
    code, expected = grpc_call(server.target, stub, rpc_name, request, metadata=tuple(headers.items()))
    resp = rest(method, base + path, json=body, params=query, headers=headers)
    assert resp.status_code == HTTP_OF[code], (code, resp.text)
    assert resp.headers["content-type"] == "application/json"
    if code == "OK":
        assert drop_latency(resp.json()) == drop_latency(expected)
    else:
        status = resp.json()
        assert status["code"] == grpc.StatusCode[code].value[0]
        assert status["message"]


# --- T07, REST side: the status-code contract table -----------------------------------------------------------
def _features(**overrides):
    return {**IRIS_ROW, **overrides}


_FEEDBACK = json.dumps({"label": "setosa"})
_FEEDBACK_BATCH = json.dumps({"items": [{"prediction_id": "no-such-id", "label": "setosa"}]})
_RUN_WITHOUT_STATUS = json.dumps({"run_key": "auth-run", "kind": "nightly", "model": "iris"})  # 400 once let in

STATUS_TABLE = [
    # (case, listener, method, path, raw JSON body, headers, HTTP status, gRPC code in the JSON body or None)
    ("wrong feature count", "public", "POST", "/v1/models/iris:predict",
     json.dumps({"features": {"sepal_length": 5.1, "sepal_width": 3.5}}), {}, 400, 3),
    ("extra feature", "public", "POST", "/v1/models/iris:predict",
     json.dumps({"features": _features(colour=1.0)}), {}, 400, 3),
    ("NaN as a string", "public", "POST", "/v1/models/iris:predict",
     json.dumps({"features": _features(sepal_length="NaN")}), {}, 400, 3),
    ("Infinity as a string", "public", "POST", "/v1/models/iris:predict",
     json.dumps({"features": _features(petal_width="Infinity")}), {}, 400, 3),
    ("-Infinity as a string", "public", "POST", "/v1/models/iris:predict",
     json.dumps({"features": _features(petal_width="-Infinity")}), {}, 400, 3),
    ("1e309 overflows a double", "public", "POST", "/v1/models/iris:predict",
     '{"features": {"sepal_length": 1e309, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}}',
     {}, 400, None),
    ("features omitted", "public", "POST", "/v1/models/iris:predict", json.dumps({"request_id": "x"}), {}, 400, 3),
    ("absurd magnitude", "public", "POST", "/v1/models/iris:predict",
     json.dumps({"features": _features(sepal_length=1e12)}), {}, 400, 3),
    ("negative magnitude", "public", "POST", "/v1/models/iris:predict",
     json.dumps({"features": _features(petal_length=-500.0)}), {}, 400, 3),
    ("string feature value", "public", "POST", "/v1/models/iris:predict",
     json.dumps({"features": _features(sepal_length="abc")}), {}, 400, None),
    ("malformed JSON", "public", "POST", "/v1/models/iris:predict", '{"features": ', {}, 400, None),
    ("unknown model", "public", "POST", "/v1/models/nope:predict", json.dumps({"features": IRIS_ROW}), {}, 404, 5),
    ("unknown model (GET)", "public", "GET", "/v1/models/nope", None, {}, 404, 5),
    ("too many rows", "public", "POST", "/v1/models/iris:predictBatch",
     json.dumps({"rows": [{"features": IRIS_ROW}] * (MAX_BATCH_ROWS + 1)}), {}, 400, 3),
    ("empty batch", "public", "POST", "/v1/models/iris:predictBatch", json.dumps({"rows": []}), {}, 400, 3),
    ("admin: no token", "admin", "POST", "/v1/models/iris:reload", "{}", {}, 401, 16),
    ("admin: bad token", "admin", "POST", "/v1/models/iris:reload", "{}",
     {"authorization": "Bearer not-the-token"}, 401, 16),
    ("admin: read-only token reloads", "admin", "POST", "/v1/models/iris:reload", "{}",
     {"authorization": f"Bearer {READONLY_TOKEN}"}, 403, 7),
    ("admin: read-only token lists", "admin", "GET", "/v1/models/iris/versions", None,
     {"authorization": f"Bearer {READONLY_TOKEN}"}, 200, None),
    ("admin: unknown version", "admin", "POST", "/v1/models/iris:reload", json.dumps({"version": "999"}),
     {"authorization": f"Bearer {ADMIN_TOKEN}"}, 404, 5),
    # writes of monitoring data on the public listener: the Authorization header reaches the server (Envoy passes
    # it through as gRPC metadata); no token 401, read-only 403, writer and admin pass to the request's own checks
    ("admin route on the public listener", "public", "POST", "/v1/models/iris:reload", "{}",
     {"authorization": f"Bearer {ADMIN_TOKEN}"}, 404, None),
    ("admin list on the public listener", "public", "GET", "/v1/models/iris/versions", None,
     {"authorization": f"Bearer {ADMIN_TOKEN}"}, 404, None),
    *(  # writes of monitoring data on the public listener: the Authorization header reaches the server (Envoy
        # passes it through as gRPC metadata); no or a bad token 401, read-only 403, writer and admin pass on to the
        # request's own checks (an unknown prediction 404, a stored batch 200, a run without a status 400)
        (f"{what}: {who}", "public", "POST", path, body, {"authorization": f"Bearer {token}"} if token else {},
         *(outcome if role in ("writer", "admin") else (401, 16) if role in ("none", "bad") else (403, 7)))
        for what, path, body, outcome in (
            ("feedback", "/v1/predictions/no-such-id:feedback", _FEEDBACK, (404, 5)),
            ("batch feedback", "/v1/predictions:batchFeedback", _FEEDBACK_BATCH, (200, None)),
            ("batch run", "/v1/batchRuns", _RUN_WITHOUT_STATUS, (400, 3)))
        for role, who, token in (("none", "no token", None), ("bad", "bad token", "not-the-token"),
                                 ("read-only", "read-only token", READONLY_TOKEN),
                                 ("writer", "writer token", WRITER_TOKEN), ("admin", "admin token", ADMIN_TOKEN))
    ),
]


@pytest.mark.parametrize("case", STATUS_TABLE, ids=[c[0] for c in STATUS_TABLE])
def test_status_code_table_rest(mesh, case):
    _, gw = mesh
    _name, listener, method, path, body, headers, http_status, grpc_code = case
    base = gw.url if listener == "public" else gw.admin_url
    resp = rest(method, base + path, data=body, headers={"content-type": "application/json", **headers})
    assert resp.status_code == http_status, resp.text
    if grpc_code is not None:
        # errors from the server are a JSON google.rpc.Status (convert_grpc_status)
        assert resp.headers["content-type"] == "application/json"
        status = resp.json()
        assert status["code"] == grpc_code and status["message"] and status["details"] == []


def test_grpc_errors_map_to_the_same_codes_as_rest(mesh):
    """The gRPC side of a few table rows, through the same server, so both columns come from one process."""
    server, _ = mesh
    cases = [
        (inference_pb2.PredictRequest(model="iris", features=encode({"sepal_length": 5.1})), "INVALID_ARGUMENT"),
        (inference_pb2.PredictRequest(model="iris", features=encode(_features(sepal_length=float("nan")))),
         "INVALID_ARGUMENT"),
        (inference_pb2.PredictRequest(model="iris", features=encode(_features(sepal_length=float("inf")))),
         "INVALID_ARGUMENT"),
        (inference_pb2.PredictRequest(model="iris", features=encode(_features(sepal_length=1e12))),
         "INVALID_ARGUMENT"),
        (inference_pb2.PredictRequest(model="nope", features=encode(IRIS_ROW)), "NOT_FOUND"),
    ]
    for request, code in cases:
        got, _ = grpc_call(server.target, inference_pb2_grpc.InferenceServiceStub, "Predict", request)
        assert got == code, request


# --- T10: gateway hardening -----------------------------------------------------------------------------------
def test_batch_runs_over_rest(mesh):
    """RecordBatchRun and ListBatchRuns through Envoy: the body is the run; the answer is the stored run."""
    _, gw = mesh
    run = {"run_key": "rest/iris/2026-11-20", "kind": "nightly", "run_date": "2026-11-20", "model": "iris",
           "model_version": "2", "rows": "1000", "rejected": "2", "accuracy": 0.96, "duration_seconds": 3.5,
           "status": "BATCH_RUN_STATUS_SUCCEEDED", "message": "1000 rows, 2 rejected"}
    writer = {"authorization": f"Bearer {WRITER_TOKEN}"}
    first = rest("POST", gw.url + "/v1/batchRuns", json={**run, "status": "BATCH_RUN_STATUS_RUNNING",
                                                         "input": "/data/day.csv"}, headers=writer)
    assert first.status_code == 200, first.text
    assert first.json()["created"] is True and first.json()["run"]["accuracy"] == 0.96
    assert first.json()["run"]["attempt"] == 1 and first.json()["run"]["input"] == "/data/day.csv"
    again = rest("POST", gw.url + "/v1/batchRuns", json={**run, "rows": "1001", "attempt": 1}, headers=writer)
    assert again.status_code == 200 and again.json()["created"] is False and "finished_at" in again.json()["run"]
    twice = rest("POST", gw.url + "/v1/batchRuns", json={**run, "attempt": 1}, headers=writer)
    assert twice.status_code == 400 and "attempt 1" in twice.json()["message"], twice.text  # FAILED_PRECONDITION
    listed = rest("GET", gw.url + "/v1/batchRuns", params={"run_key": run["run_key"]}).json()["runs"]
    assert len(listed) == 1 and listed[0]["rows"] == "1001" and listed[0]["status"] == "BATCH_RUN_STATUS_SUCCEEDED"
    assert listed[0]["input"] == "/data/day.csv"
    bad = rest("POST", gw.url + "/v1/batchRuns", json={**run, "accuracy": 2.0}, headers=writer)
    assert bad.status_code == 400 and "accuracy" in bad.json()["message"]


def test_batch_rows_are_answered_one_by_one_over_rest_with_partial_success(mesh):
    """The JSON shape of per-row results: rows form (results[i]: prediction or a google.rpc.Status error, a JSON
    null refusing only its row), matrix form (row_errors beside the columns), and the limits in GetModel."""
    _, gw = mesh
    rows = [{"features": IRIS_ROW, "request_id": "rest-each-1"},
            {"features": {**IRIS_ROW, "petal_width": None}, "request_id": "rest-each-2"},
            {"features": {**IRIS_ROW, "sepal_length": "NaN"}, "request_id": "rest-each-3"},
            {"features": {**IRIS_ROW, "colour": 1.0}, "request_id": "rest-each-4"}]
    resp = rest("POST", gw.url + "/v1/models/iris:predictBatch", json={"rows": rows, "partial_success": True})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["predictions"] == [] and len(body["results"]) == 4
    first, null, nan, extra = body["results"]
    assert set(first) == {"request_id", "prediction"} and first["request_id"] == "rest-each-1"
    assert first["prediction"]["label"] == "setosa" and first["prediction"]["request_id"] == "rest-each-1"
    for result, text in ((null, "feature 'petal_width' is missing (null)"),
                         (nan, "feature 'sepal_length' is a number; got the string 'NaN'"),
                         (extra, "unknown feature 'colour'")):
        assert set(result) == {"request_id", "error"}
        assert result["error"]["code"] == 3 and text in result["error"]["message"], result
        assert result["error"]["details"] == []
    # the camelCase JSON name opts in too; without it one refused row is the call's 400, naming the row
    assert rest("POST", gw.url + "/v1/models/iris:predictBatch",
                json={"rows": rows, "partialSuccess": True}).status_code == 200
    whole = rest("POST", gw.url + "/v1/models/iris:predictBatch", json={"rows": rows})
    assert whole.status_code == 400 and whole.json()["message"].startswith("row 1: feature 'petal_width'")

    names = list(IRIS_ROW)
    values = [*IRIS_ROW.values(), *([1e12] * 4), *IRIS_ROW.values()]
    resp = rest("POST", gw.url + "/v1/models/iris:predictBatch", json={
        "matrix": {"feature_names": names, "values": values, "request_id_prefix": "rest-m-",
                   "row_numbers": [1, 2, 3]}, "partial_success": True})
    assert resp.status_code == 200, resp.text
    m = resp.json()["matrix"]
    assert len(m["labels"]) == 3 and len(m["probabilities"]) == 3 * len(m["classes"])
    assert m["prediction_ids"][1] == "" and m["prediction_ids"][0] and m["prediction_ids"][2]
    [error] = m["row_errors"]
    assert error["row"] == 1 and error["request_id"] == "rest-m-2" and error["error"]["code"] == 3
    assert "plausible range" in error["error"]["message"]

    limits = rest("GET", gw.url + "/v1/models/iris").json()["model"]["limits"]
    assert limits == {"max_batch_rows": MAX_BATCH_ROWS, "max_request_bytes": 64 * 1024,
                      "max_request_id_length": 128}


def test_unknown_path_is_404_not_503(mesh):
    _, gw = mesh
    for method, path in (("GET", "/v2/nothing"), ("POST", "/v1/models/iris:explode"), ("DELETE", "/v1/models/iris")):
        assert rest(method, gw.url + path).status_code == 404, (method, path)


def test_json_in_any_spelling_or_none_is_transcoded_and_any_other_type_is_415(mesh):
    """The content-type route: application/json in any case, with parameters, or no content type at all reaches
    the transcoder; every other declared type is 415 (the plain spelling is decided before the regex runs)."""
    _, gw = mesh
    body = json.dumps({"features": IRIS_ROW})
    for kind, status in (("application/json", 200), ("Application/JSON", 200), ("application/json; charset=utf-8", 200),
                         ("application/json ;charset=utf-8", 200), (None, 200), ("text/plain", 415),
                         ("application/jsonx", 415), ("application/json-patch+json", 415), ("", 415)):
        resp = rest("POST", gw.url + "/v1/models/iris:predict", data=body,
                    headers={} if kind is None else {"content-type": kind})
        assert resp.status_code == status, (kind, resp.status_code, resp.text[:200])


def test_unknown_query_parameter_is_400(mesh):
    _, gw = mesh
    resp = rest("GET", gw.url + "/v1/models", params={"foo": "1"})
    assert resp.status_code == 400 and "foo" in resp.text


def test_body_over_the_limit_is_413(mesh):
    _, gw = mesh
    rows = [{"features": IRIS_ROW, "request_id": f"r{i:06d}"} for i in range(400)]
    body = json.dumps({"rows": rows})
    assert len(body) > MAX_BODY
    resp = rest("POST", gw.url + "/v1/models/iris:predictBatch", data=body,
                headers={"content-type": "application/json"})
    assert resp.status_code == 413


def test_grpc_message_over_the_server_limit_is_resource_exhausted(mesh):
    """Native gRPC through Envoy reaches the server's max_receive_message_length (64 KiB here)."""
    _, gw = mesh
    from predmesh.errors import ResourceExhausted
    rows = [({**IRIS_ROW}, "x" * 1000) for _ in range(100)]
    with Client(f"127.0.0.1:{gw.port}", timeout=5) as client:
        with pytest.raises(ResourceExhausted):
            client.predict_batch("iris", rows)


def test_extra_json_field_is_dropped_by_envoy_and_the_call_succeeds(mesh):
    """Pinned, documented behaviour (Envoy #46623): unknown JSON fields are ignored, 200. A future Envoy that
    rejects them will fail this test, so the change is noticed."""
    _, gw = mesh
    resp = rest("POST", gw.url + "/v1/models/iris:predict",
                json={"features": IRIS_ROW, "request_id": "extra-1", "not_a_field": {"x": 1}})
    assert resp.status_code == 200
    assert resp.json()["prediction"]["request_id"] == "extra-1"


def test_body_field_conflicting_with_the_path_is_400(mesh):
    _, gw = mesh
    resp = rest("POST", gw.url + "/v1/models/iris:predict", json={"model": "other", "features": IRIS_ROW})
    assert resp.status_code == 400


def test_admin_grpc_is_not_reachable_on_the_public_listener(mesh):
    _, gw = mesh
    with grpc.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            admin_pb2_grpc.ModelAdminServiceStub(channel).ReloadModel(
                admin_pb2.ReloadModelRequest(model="iris"), timeout=5, metadata=ADMIN)
    assert err.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNKNOWN)
    assert err.value.code() != grpc.StatusCode.OK


def test_native_grpc_passes_through_the_public_listener(mesh):
    _, gw = mesh
    with Client(f"127.0.0.1:{gw.port}", timeout=5) as client:
        assert client.predict("iris", IRIS_ROW).label == "setosa"


def _transport_counts(server) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("predmesh_predictions_total{"):
            labels, _, value = line.partition("} ")
            transport = labels.split('transport="')[1].split('"')[0]
            counts[transport] = counts.get(transport, 0) + float(value)
    return counts


def test_transport_is_rest_for_transcoded_calls_and_grpc_for_native_ones(mesh):
    server, gw = mesh
    before = _transport_counts(server)
    # a REST client cannot pretend to be another transport: the gateway overwrites the header
    assert rest("POST", gw.url + "/v1/models/iris:predict", json={"features": IRIS_ROW},
                headers={"x-predmesh-transport": "queue"}).status_code == 200
    with Client(f"127.0.0.1:{gw.port}", timeout=5) as client:
        client.predict("iris", IRIS_ROW)
    after = _transport_counts(server)
    assert after.get("rest", 0) - before.get("rest", 0) == 1
    assert after.get("grpc", 0) - before.get("grpc", 0) == 1
    assert after.get("queue", 0) == before.get("queue", 0)


def test_openapi_document_is_served(mesh):
    _, gw = mesh
    resp = rest("GET", gw.url + "/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    doc = resp.json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/models/{model}:predict" in doc["paths"]
    assert not any("reload" in p or "versions" in p for p in doc["paths"])  # admin stays off the public doc
    assert (gw.work_dir / "openapi.json").is_file()


def test_no_model_loaded_is_503_with_a_json_status(model_store, tmp_path):
    """T07 row 'no model loaded': the model is known but no version can load → UNAVAILABLE → 503 + JSON status.
    The only replica is NOT_SERVING, so Envoy is in panic mode and still forwards (rather than a bare 503)."""

    from tests.support.procs import health_status, wait_for

    for artifact in model_store.rglob("model.skops"):
        artifact.write_bytes(b"not a model")
    server = ServerProc(model_store, tmp_path / "server.log")
    server.spawn()
    try:
        wait_for(lambda: health_status(server.target) is not None, 30, what="server answering health")
        gw = GatewayProc([server.target], tmp_path / "gw").start(healthy=0)
        try:
            resp = rest("POST", gw.url + "/v1/models/iris:predict", json={"features": IRIS_ROW})
            assert resp.status_code == 503 and resp.headers["content-type"] == "application/json"
            assert resp.json()["code"] == 14 and "no loaded version" in resp.json()["message"]
        finally:
            gw.stop()
    finally:
        server.close()


def test_a_header_that_is_not_utf8_is_answered_and_logs_no_traceback(mesh):
    """HTTP allows Latin-1 header values; Envoy passes them on as gRPC metadata, and grpcio logged a traceback at
    ERROR for each such call (a client could fill the server's log). The call is answered (401: not a token)."""
    server, gw = mesh
    before = len(server.log())
    resp = requests.post(gw.url + "/v1/predictions/no-such-id:feedback", data=json.dumps({"label": "setosa"}),
                         headers={"content-type": "application/json", "authorization": b"Bearer \xe9\xe9"}, timeout=10)
    assert resp.status_code == 401, resp.text
    written = server.log()[before:]
    assert "Invalid encoding on" in written          # still said, once, as a warning
    assert "Traceback" not in written and "ERROR" not in written, written
