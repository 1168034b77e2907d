"""The OpenAPI document's constraints are real: through a real Envoy, a request breaking each documented bound
(length, count, range, pattern, required field, either/or, credentials, body and header size, content type,
malformed JSON) gets the status the document lists for it, with a body of the content type it lists."""
from __future__ import annotations

import time

import pytest
import requests

from tests.conftest import IRIS_ROW
from tests.support.gateway import GatewayProc
from tests.support.procs import ADMIN_TOKEN, READONLY_TOKEN, WRITER_TOKEN, ServerProc

pytestmark = pytest.mark.envoy

ROW = dict(IRIS_ROW)
WRITER = {"authorization": f"Bearer {WRITER_TOKEN}"}
READONLY = {"authorization": f"Bearer {READONLY_TOKEN}"}
RUN = {"run_key": "k", "kind": "nightly", "model": "iris", "status": "BATCH_RUN_STATUS_SUCCEEDED"}
JSON, TEXT = "application/json", "text/plain"


def run(**changes):
    return {k: v for k, v in {**RUN, **changes}.items() if v is not None}


# (what is broken, listener, method, documented path, path, kwargs, status, content type)
CASES = [
    ("model name pattern", "public", "post", "/v1/models/{model}:predict", "/v1/models/a..b:predict",
     {"json": {"features": ROW}}, 400, JSON),
    ("model name maxLength", "public", "get", "/v1/models/{model}", "/v1/models/" + "a" * 65, {}, 400, JSON),
    ("features required", "public", "post", "/v1/models/{model}:predict", "/v1/models/iris:predict",
     {"json": {"request_id": "r"}}, 400, JSON),
    ("request_id maxLength", "public", "post", "/v1/models/{model}:predict", "/v1/models/iris:predict",
     {"json": {"features": ROW, "request_id": "x" * 129}}, 400, JSON),
    ("rows maxItems", "public", "post", "/v1/models/{model}:predictBatch", "/v1/models/iris:predictBatch",
     {"json": {"rows": [{"features": {}}] * 1001}}, 400, JSON),  # under the body limit
    ("rows or matrix: neither", "public", "post", "/v1/models/{model}:predictBatch",
     "/v1/models/iris:predictBatch", {"json": {"partial_success": True}}, 400, JSON),
    ("rows or matrix: both", "public", "post", "/v1/models/{model}:predictBatch", "/v1/models/iris:predictBatch",
     {"json": {"rows": [{"features": ROW}], "matrix": {"feature_names": list(ROW), "values": list(ROW.values()),
                                                       "row_numbers": ["0"]}}}, 400, JSON),
    ("row request_id maxLength", "public", "post", "/v1/models/{model}:predictBatch",
     "/v1/models/iris:predictBatch", {"json": {"rows": [{"features": ROW, "request_id": "x" * 129}]}}, 400, JSON),
    ("page_size maximum", "public", "get", "/v1/predictions", "/v1/predictions", {"params": {"page_size": 1001}},
     400, JSON),
    ("page_size minimum", "public", "get", "/v1/batchRuns", "/v1/batchRuns", {"params": {"page_size": -1}},
     400, JSON),
    ("label filter maxLength", "public", "get", "/v1/predictions", "/v1/predictions",
     {"params": {"label": "x" * 129}}, 400, JSON),
    ("page_token maxLength", "public", "get", "/v1/predictions", "/v1/predictions",
     {"params": {"page_token": "x" * 513}}, 400, JSON),
    ("model filter pattern", "public", "get", "/v1/stats", "/v1/stats", {"params": {"model": "a b"}}, 400, JSON),
    ("unknown query parameter", "public", "get", "/v1/predictions", "/v1/predictions",
     {"params": {"nope": "1"}}, 400, TEXT),
    ("enum name", "public", "get", "/v1/predictions", "/v1/predictions", {"params": {"transport": "fax"}},
     400, TEXT),
    ("malformed JSON", "public", "post", "/v1/models/{model}:predict", "/v1/models/iris:predict",
     {"data": "{", "headers": {"content-type": JSON}}, 400, TEXT),
    ("int64 as empty string", "public", "post", "/v1/batchRuns", "/v1/batchRuns",
     {"json": run(rows=""), "headers": WRITER}, 400, TEXT),
    ("content type", "public", "post", "/v1/models/{model}:predict", "/v1/models/iris:predict",
     {"data": "x", "headers": {"content-type": "text/plain"}}, 415, TEXT),
    ("body size", "public", "post", "/v1/models/{model}:predict", "/v1/models/iris:predict",
     {"json": {"features": ROW, "request_id": "x" * 70_000}}, 413, TEXT),
    ("header size", "public", "get", "/v1/models", "/v1/models", {"headers": {"x-big": "y" * 40_000}}, 431, TEXT),
    ("no token", "public", "post", "/v1/predictions/{prediction_id}:feedback", "/v1/predictions/p:feedback",
     {"json": {"label": "setosa"}}, 401, JSON),
    ("wrong token", "public", "post", "/v1/predictions:batchFeedback", "/v1/predictions:batchFeedback",
     {"json": {"items": [{"prediction_id": "p", "label": "a"}]}, "headers": {"authorization": "Bearer nope"}},
     401, JSON),
    ("read-only token", "public", "post", "/v1/batchRuns", "/v1/batchRuns", {"json": run(), "headers": READONLY},
     403, JSON),
    ("feedback label required", "public", "post", "/v1/predictions/{prediction_id}:feedback",
     "/v1/predictions/p:feedback", {"json": {}, "headers": WRITER}, 400, JSON),
    ("prediction_id maxLength", "public", "post", "/v1/predictions/{prediction_id}:feedback",
     "/v1/predictions/" + "p" * 129 + ":feedback", {"json": {"label": "a"}, "headers": WRITER}, 400, JSON),
    ("items minItems", "public", "post", "/v1/predictions:batchFeedback", "/v1/predictions:batchFeedback",
     {"json": {"items": []}, "headers": WRITER}, 400, JSON),
    ("items maxItems", "public", "post", "/v1/predictions:batchFeedback", "/v1/predictions:batchFeedback",
     {"json": {"items": [{"prediction_id": "p", "label": "a"}] * 1001}, "headers": WRITER}, 400, JSON),
    ("item label minLength", "public", "post", "/v1/predictions:batchFeedback", "/v1/predictions:batchFeedback",
     {"json": {"items": [{"prediction_id": "p", "label": ""}]}, "headers": WRITER}, 400, JSON),
    ("run_key maxLength", "public", "post", "/v1/batchRuns", "/v1/batchRuns",
     {"json": run(run_key="k" * 129), "headers": WRITER}, 400, JSON),
    ("run status required", "public", "post", "/v1/batchRuns", "/v1/batchRuns",
     {"json": run(status=None), "headers": WRITER}, 400, JSON),
    ("run kind pattern", "public", "post", "/v1/batchRuns", "/v1/batchRuns",
     {"json": run(kind="a/b"), "headers": WRITER}, 400, JSON),
    ("run accuracy maximum", "public", "post", "/v1/batchRuns", "/v1/batchRuns",
     {"json": run(accuracy=1.5), "headers": WRITER}, 400, JSON),
    ("run duration minimum", "public", "post", "/v1/batchRuns", "/v1/batchRuns",
     {"json": run(duration_seconds=-1), "headers": WRITER}, 400, JSON),
    ("run message maxLength", "public", "post", "/v1/batchRuns", "/v1/batchRuns",
     {"json": run(message="m" * 1025), "headers": WRITER}, 400, JSON),
    ("run_date pattern", "public", "post", "/v1/batchRuns", "/v1/batchRuns",
     {"json": run(run_date="27.11.2026"), "headers": WRITER}, 400, JSON),
    ("admin: no token", "admin", "post", "/v1/models/{model}:reload", "/v1/models/iris:reload", {"json": {}},
     401, JSON),
    ("admin: read-only token reloads", "admin", "post", "/v1/models/{model}:reload", "/v1/models/iris:reload",
     {"json": {}, "headers": READONLY}, 403, JSON),
    ("admin: version pattern", "admin", "post", "/v1/models/{model}:reload", "/v1/models/iris:reload",
     {"json": {"version": "../x"}, "headers": {"authorization": f"Bearer {ADMIN_TOKEN}"}}, 400, JSON),
]


@pytest.fixture(scope="module")
def gateway(trained_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("truth")
    with ServerProc(trained_store, tmp / "server.log") as server, \
            GatewayProc([server.target], tmp / "gw", env={"PREDMESH_GATEWAY_RATE_LIMIT_RPS": "0"}) as gw:
        docs = {"public": requests.get(gw.url + "/openapi.json", timeout=5).json(),
                "admin": requests.get(gw.admin_url + "/openapi.json", timeout=5).json()}
        yield gw, docs


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_request_breaking_a_documented_bound_gets_the_documented_status(gateway, case):
    what, listener, method, template, path, kwargs, status, content_type = case
    gw, docs = gateway
    base = gw.url if listener == "public" else gw.admin_url
    resp = requests.request(method, base + path, timeout=5, **kwargs)
    assert resp.status_code == status, (what, resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].split(";")[0] == content_type, (what, resp.headers["content-type"])
    documented = docs[listener]["paths"][template][method]["responses"][str(status)]
    assert content_type in documented["content"], (what, documented)
    if content_type == JSON:
        body = resp.json()
        assert set(body) <= {"code", "message", "details"} and isinstance(body["message"], str), body


def test_the_admin_listener_serves_its_own_document_with_the_bearer_scheme(gateway):
    gw, docs = gateway
    admin = docs["admin"]
    assert set(admin["paths"]) == {"/v1/models/{model}:reload", "/v1/models/{model}/versions",
                                   "/v1/models/{model}:rollout", "/v1/models/{model}:pin",
                                   "/v1/models/{model}:rollback", "/v1/models/{model}/desired"}
    assert admin["servers"] == [{"url": gw.admin_url}]
    assert all(op["security"] == [{"bearer": []}] for ops in admin["paths"].values() for op in ops.values())
    assert "reload" not in str(docs["public"]["paths"]) and "rollout" not in str(docs["public"]["paths"])


def test_overload_and_timeout_answers_are_documented(trained_store, tmp_path):
    """429 (Envoy's rate limit), 504 (the route timeout) and 503 (no replica) arrive as the document lists them:
    Envoy's text/plain line, or the server's google.rpc.Status JSON."""
    env = {"PREDMESH_GATEWAY_RATE_LIMIT_RPS": "3", "PREDMESH_GATEWAY_TIMEOUT_S": "1"}
    with ServerProc(trained_store, tmp_path / "server.log",
                    env={"PREDMESH_FAULTS": "inference.predict_delay_ms:3000"}) as server, \
            GatewayProc([server.target], tmp_path / "gw", env=env) as gw:
        doc = requests.get(gw.url + "/openapi.json", timeout=5).json()

        def documented(resp: requests.Response, template: str, method: str) -> None:
            content = doc["paths"][template][method]["responses"][str(resp.status_code)]["content"]
            assert resp.headers["content-type"].split(";")[0] in content, (resp.status_code, resp.text[:200])

        slow = requests.post(gw.url + "/v1/models/iris:predict", json={"features": ROW}, timeout=10)
        assert slow.status_code == 504, slow.text[:200]
        documented(slow, "/v1/models/{model}:predict", "post")
        seen = [requests.get(gw.url + "/v1/models", timeout=5) for _ in range(10)]
        limited = [r for r in seen if r.status_code == 429]
        assert limited and limited[0].headers.get("x-local-rate-limit") == "true", [r.status_code for r in seen]
        documented(limited[0], "/v1/models", "get")
        assert server.proc is not None
        server.proc.kill()  # no replica left
        server.proc.wait()
        time.sleep(1.1)  # a full token bucket again
        down = None
        for _ in range(20):
            down = requests.get(gw.url + "/v1/models", timeout=5)
            if down.status_code == 503:
                break
            time.sleep(0.5)
        assert down is not None and down.status_code == 503, (down.status_code if down else None)
        documented(down, "/v1/models", "get")


def test_a_request_id_reused_for_another_request_is_409_as_documented(gateway):
    """Issue #23 over REST: a request_id (idempotency key) answers only the request it was first used for. A
    retry gets the original answer, another request under the key 409 (ALREADY_EXISTS), the same key twice in
    one call 400 (INVALID_ARGUMENT); the document lists 409 on the calls that take a key."""
    gw, docs = gateway
    predict, batch = gw.url + "/v1/models/iris:predict", gw.url + "/v1/models/iris:predictBatch"
    first = requests.post(predict, json={"features": ROW, "request_id": "rest-key-1"}, timeout=5)
    assert first.status_code == 200, first.text
    again = requests.post(predict, json={"features": ROW, "request_id": "rest-key-1"}, timeout=5)
    assert again.status_code == 200 and again.json() == {**first.json(), "prediction": {
        **first.json()["prediction"], "latency_ms": again.json()["prediction"]["latency_ms"]}}
    other = {**ROW, "petal_length": 4.2, "petal_width": 1.3}
    for path, body in ((predict, {"features": other, "request_id": "rest-key-1"}),
                       (batch, {"rows": [{"features": other, "request_id": "rest-key-1"}]}),
                       (batch, {"matrix": {"feature_names": list(ROW), "values": list(other.values()),
                                           "request_id_prefix": "rest-key-", "row_numbers": [1]}})):
        refused = requests.post(path, json=body, timeout=5)
        assert refused.status_code == 409, (path, refused.text)
        assert refused.headers["content-type"] == JSON
        status = refused.json()
        assert status["code"] == 6 and "'rest-key-1' was already used for a different request" in status["message"]
        template = "/v1/models/{model}:predict" if path == predict else "/v1/models/{model}:predictBatch"
        assert JSON in docs["public"]["paths"][template]["post"]["responses"]["409"]["content"]
    twice = requests.post(batch, json={"rows": [{"features": ROW, "request_id": "rest-key-2"},
                                                {"features": ROW, "request_id": "rest-key-2"}]}, timeout=5)
    assert twice.status_code == 400 and "used twice in this call (rows[0] and rows[1])" in twice.json()["message"]
