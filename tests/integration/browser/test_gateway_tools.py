"""The gateway fits the tools users already run: native gRPC for health probes, reflection (grpcurl, buf curl) and
Triton/OIP clients on the public port; REST bodies only as JSON (415 otherwise); CORS for configured origins; a
docs page (Swagger UI) that renders the generated OpenAPI document in a real browser."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import IRIS_ROW
from tests.integration.server.test_oip_triton import SCRIPT as TRITON_SCRIPT
from tests.support.gateway import GatewayProc, rest
from tests.support.procs import ServerProc

pytestmark = pytest.mark.envoy

ORIGIN = "https://app.example"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def mesh(trained_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tools")
    with ServerProc(trained_store, tmp / "server.log") as server, \
            GatewayProc([server.target], tmp / "gw", env={"PREDMESH_GATEWAY_CORS_ORIGINS": ORIGIN}) as gw:
        yield server, gw


def test_health_probe_through_the_gateway_port(mesh):
    _, gw = mesh
    with grpc.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "predmesh.v1.InferenceService", "inference.GRPCInferenceService"):
            answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service


@pytest.mark.parametrize("tool", ["grpcurl", "buf"])
def test_reflection_v1_through_the_gateway_port(mesh, tool):
    _, gw = mesh
    exe = BIN / tool if (BIN / tool).exists() else shutil.which(tool)
    assert exe, f"{tool} is installed by the test extra"
    argv = ([str(exe), "-plaintext", f"127.0.0.1:{gw.port}", "list"] if tool == "grpcurl" else
            [str(exe), "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--reflect-protocol", "grpc-v1",
             "--list-services", f"http://127.0.0.1:{gw.port}"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    listed = set(done.stdout.split())
    assert {"predmesh.v1.InferenceService", "inference.GRPCInferenceService", "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"} <= listed
    if tool == "grpcurl":  # and a call described through reflection, sent as native gRPC through Envoy
        call = subprocess.run([str(exe), "-plaintext", "-d", json.dumps({"model": "iris", "features": IRIS_ROW}),
                               f"127.0.0.1:{gw.port}", "predmesh.v1.InferenceService/Predict"],
                              capture_output=True, text=True, timeout=60)
        assert call.returncode == 0, call.stderr
        assert json.loads(call.stdout)["prediction"]["label"] == "setosa"


def test_triton_client_through_the_gateway_port(mesh):
    """The stock Triton client (own interpreter: see test_oip_triton) against Envoy's public port."""
    _, gw = mesh
    done = subprocess.run([sys.executable, "-c", TRITON_SCRIPT, f"127.0.0.1:{gw.port}"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["live"] and out["ready"] and out["model_ready"] and out["labels"] == [0, 2]
    assert out["errors"] == {"unknown_model": "StatusCode.NOT_FOUND", "wrong_dtype": "StatusCode.INVALID_ARGUMENT"}


@pytest.mark.parametrize("content_type, status", [
    ("application/json", 200), ("application/json; charset=utf-8", 200), ("Application/JSON", 200),
    ("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("application/xml", 415),
    ("application/jsonx", 415), ("multipart/form-data; boundary=x", 415),
])
def test_rest_bodies_must_be_json(mesh, content_type, status):
    _, gw = mesh
    body = json.dumps({"features": IRIS_ROW})
    resp = rest("POST", gw.url + "/v1/models/iris:predict", data=body, headers={"content-type": content_type})
    assert resp.status_code == status, resp.text
    if status == 415:
        assert "application/json" in resp.text
    else:
        assert resp.json()["prediction"]["label"] == "setosa"


def test_rest_without_a_content_type_is_read_as_json(mesh):
    _, gw = mesh
    resp = requests.post(gw.url + "/v1/models/iris:predict", data=json.dumps({"features": IRIS_ROW}).encode(),
                         timeout=5)  # bytes: requests sends no content-type
    assert "content-type" not in resp.request.headers
    assert resp.status_code == 200
    assert rest("GET", gw.url + "/v1/models").status_code == 200


def test_cors_allows_only_the_configured_origin(mesh):
    _, gw = mesh
    url = gw.url + "/v1/models/iris:predict"
    preflight = rest("OPTIONS", url, headers={"origin": ORIGIN, "access-control-request-method": "POST",
                                              "access-control-request-headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "content-type" in preflight.headers["access-control-allow-headers"]
    # a browser app on an allowed origin may send the writer token (feedback, batch runs)
    feedback = gw.url + "/v1/predictions/x:feedback"
    preflight = rest("OPTIONS", feedback, headers={"origin": ORIGIN, "access-control-request-method": "POST",
                                                   "access-control-request-headers": "authorization,content-type"})
    assert preflight.status_code == 200
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    call = rest("POST", url, json={"features": IRIS_ROW}, headers={"origin": ORIGIN})
    assert call.status_code == 200 and call.headers["access-control-allow-origin"] == ORIGIN
    other = rest("POST", url, json={"features": IRIS_ROW}, headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    evil_preflight = rest("OPTIONS", url, headers={"origin": "https://evil.example",
                                                   "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in evil_preflight.headers


def test_cors_is_off_by_default(trained_store, tmp_path):
    with ServerProc(trained_store, tmp_path / "server.log") as server, \
            GatewayProc([server.target], tmp_path / "gw") as gw:
        resp = rest("GET", gw.url + "/v1/models", headers={"origin": ORIGIN})
        assert resp.status_code == 200 and "access-control-allow-origin" not in resp.headers
        pre = rest("OPTIONS", gw.url + "/v1/models", headers={"origin": ORIGIN, "access-control-request-method": "GET"})
        assert "access-control-allow-origin" not in pre.headers


@pytest.mark.browser
def test_docs_page_renders_every_operation_in_a_browser(mesh, browser):
    from playwright.sync_api import expect

    _, gw = mesh
    doc = requests.get(gw.url + "/openapi.json", timeout=5).json()
    operations = sorted(path for path, ops in doc["paths"].items() for _ in ops)
    assert rest("GET", gw.url + "/docs/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    page = browser.new_page()
    try:
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(gw.url + "/docs")
        expect(page.get_by_text("predmesh REST API").first).to_be_visible(timeout=20_000)
        expect(page.locator(".opblock")).to_have_count(len(operations), timeout=20_000)
        shown = sorted(t.replace("\u200b", "") for t in page.locator(".opblock-summary-path").all_inner_texts())
        assert shown == operations
        page.locator(".opblock-summary", has_text="/v1/models/{model}").first.click()  # expands it
        expect(page.get_by_text("Try it out").first).to_be_visible()
        assert not errors, errors
    finally:
        page.close()
