"""The OpenAPI document states the bounds, credentials and error answers the server and Envoy enforce: the values
match the server's own constants, the name pattern accepts exactly the names the server does, and every
operation lists its statuses (tests/integration/envoy/test_openapi_truth.py provokes each through Envoy)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from database import repo
from gateway import api_rules
from gateway.api_rules import ApiLimits
from gateway.descriptor import ADMIN_SERVICES, PUBLIC_SERVICES, build_descriptor
from gateway.openapi import generate
from gateway.settings import GatewaySettings
from inference import bounds
from inference.errors import InvalidName
from inference.rpc import analytics, auth, servicer
from inference.settings import ServerSettings


@pytest.fixture(scope="module")
def descriptor(tmp_path_factory) -> Path:
    return build_descriptor(tmp_path_factory.mktemp("desc") / "predmesh.binpb")


def test_the_documented_bounds_are_the_servers_constants():
    assert (api_rules.MAX_NAME, api_rules.MAX_ID, api_rules.MAX_LABEL, api_rules.MAX_TOKEN) == (
        bounds.MAX_NAME, bounds.MAX_ID, bounds.MAX_LABEL, bounds.MAX_TOKEN)
    assert (api_rules.MAX_PAGE, api_rules.MAX_FEEDBACK_ITEMS, api_rules.MAX_RUN_KEY, api_rules.MAX_RUN_MESSAGE) == (
        analytics.MAX_PAGE, analytics.MAX_FEEDBACK_ITEMS, analytics.MAX_RUN_KEY, analytics.MAX_RUN_MESSAGE)
    assert api_rules.MAX_REASON == servicer.MAX_REASON
    assert api_rules.DEFAULT_MAX_BATCH_ROWS == ServerSettings.max_batch_rows == GatewaySettings.max_batch_rows
    assert {m.rsplit(".", 1)[1] for m in api_rules.WRITE_METHODS} == set(auth.WRITE_METHODS)
    assert (api_rules.SERIES_STEP, api_rules.MAX_SERIES_BUCKETS) == (analytics.SERIES_STEP, repo.MAX_SERIES_BUCKETS)


@pytest.mark.parametrize("name", ["iris", "a", "A9", "a.b", "a-.b", "a.", "x_y-z.1", "a" * 64, "a..b", "", ".a",
                                  "-a", "a/b", "a b", "a" * 65, "a:b", "é", "a\n", "a...", "1..", "a._.b"])
def test_the_name_pattern_accepts_exactly_what_check_name_accepts(name):
    try:
        bounds.check_name("model", name)
        accepted = True
    except InvalidName:
        accepted = False
    rule = api_rules.NAME
    pattern, low, high = str(rule["pattern"]), int(rule["minLength"]), int(rule["maxLength"])  # type: ignore[call-overload]
    ecma = pattern.replace("$", r"\Z")  # ECMA-262's $ ends the input; Python's also matches before a \n
    documented = (re.search(ecma, name) is not None
                  and low <= len(name) <= high)
    assert documented == accepted, name


def test_operations_state_credentials_limits_and_every_status(descriptor):
    doc = generate(descriptor.read_bytes(), PUBLIC_SERVICES, title="t",
                   limits=ApiLimits(max_batch_rows=500, max_body_bytes=4096, rate_limit_rps=0))
    ops = {op["operationId"]: op for ops in doc["paths"].values() for op in ops.values()}
    secured = {name for name, op in ops.items() if op.get("security")}
    assert secured == {"AnalyticsService_SubmitFeedback", "AnalyticsService_SubmitFeedbackBatch",
                       "AnalyticsService_RecordBatchRun"}
    assert doc["components"]["securitySchemes"]["bearer"] == {**api_rules.SECURITY_SCHEMES["bearer"]}
    for name, op in ops.items():
        codes = set(op["responses"])
        assert {"200", "400", "404", "415", "429", "431", "503", "504"} <= codes, name
        assert ("401" in codes and "403" in codes) == (name in secured), name
        assert ("413" in codes) == ("requestBody" in op), name
        # 409: a request_id (idempotency key) reused for a different request, on the calls that take one
        assert ("409" in codes) == (name in {"InferenceService_Predict", "InferenceService_PredictBatch"}), name
        # Envoy's own answers are text/plain lines, the server's google.rpc.Status JSON
        assert set(op["responses"]["400"]["content"]) == {"application/json", "text/plain"}
        assert set(op["responses"]["431"]["content"]) == {"text/plain"}
    assert "413" in ops["InferenceService_Predict"]["responses"]
    assert "4096 bytes" in ops["InferenceService_Predict"]["responses"]["413"]["description"]
    assert "rate limit" not in ops["InferenceService_Predict"]["responses"]["429"]["description"]
    batch = ops["InferenceService_PredictBatch"]["requestBody"]["content"]["application/json"]["schema"]
    assert batch["properties"]["rows"]["maxItems"] == 500
    assert batch["oneOf"] == [{"required": ["rows"], "properties": {"rows": {"minItems": 1}}},
                              {"required": ["matrix"]}]
    predict = ops["InferenceService_Predict"]
    assert predict["parameters"][0]["schema"]["pattern"] == api_rules.NAME_PATTERN
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["features"] and body["properties"]["request_id"]["maxLength"] == 128
    page = next(p for p in ops["AnalyticsService_ListPredictions"]["parameters"] if p["name"] == "page_size")
    assert (page["schema"]["minimum"], page["schema"]["maximum"]) == (0, 1000)
    request_id = next(p for p in ops["AnalyticsService_ListPredictions"]["parameters"] if p["name"] == "request_id")
    assert request_id["schema"]["maxLength"] == 128 and "exact match" in request_id["description"]
    bucket = next(p for p in ops["AnalyticsService_GetStats"]["parameters"] if p["name"] == "bucket_seconds")
    assert (bucket["schema"]["minimum"], bucket["schema"]["multipleOf"]) == (0, 60)
    assert "2000 buckets" in bucket["description"]
    schemas = doc["components"]["schemas"]
    assert schemas["predmesh.v1.BatchRun"]["required"] == ["run_key", "kind", "model", "status"]
    assert schemas["predmesh.v1.BatchRowResult"]["oneOf"] == [{"required": ["prediction"]},
                                                             {"required": ["error"]}]
    assert "oneOf" not in schemas["predmesh.v1.BatchRun"]  # proto3 optional (accuracy) is no choice
    items = ops["AnalyticsService_SubmitFeedbackBatch"]["requestBody"]["content"]["application/json"]["schema"]
    assert (items["properties"]["items"]["minItems"], items["properties"]["items"]["maxItems"]) == (1, 1000)


def test_the_admin_document_needs_a_token_on_every_operation(descriptor):
    doc = generate(descriptor.read_bytes(), ADMIN_SERVICES, title="admin")
    ops = [op for ops in doc["paths"].values() for op in ops.values()]
    # ReloadModel, ListModelVersions, RolloutModel, PinModel, RollbackModel, GetDesiredState
    assert len(ops) == 6 and all(op["security"] == [{"bearer": []}] for op in ops)
    assert all({"401", "403"} <= set(op["responses"]) for op in ops)
    assert "bearer" in doc["components"]["securitySchemes"]
