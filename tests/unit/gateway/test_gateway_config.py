"""Gateway build: settings validation, the OpenAPI generator and the rendered configs (no Envoy process)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from gateway.config import render
from gateway.descriptor import ADMIN_SERVICES, PUBLIC_SERVICES, build_descriptor
from gateway.openapi import generate
from gateway.settings import GatewaySettings, TlsFiles
from predmesh.env import ConfigError


@pytest.fixture(scope="module")
def descriptor(tmp_path_factory) -> Path:
    return build_descriptor(tmp_path_factory.mktemp("desc") / "predmesh.binpb")


def annotated_rpcs(descriptor: Path, services) -> set[str]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes())
    return {f"{s.name}_{m.name}" for f in fds.file for s in f.service if f"{f.package}.{s.name}" in services
            for m in s.method if m.options.HasExtension(annotations_pb2.http)}


def test_openapi_has_exactly_the_annotated_public_rpcs(descriptor):
    doc = generate(descriptor.read_bytes(), PUBLIC_SERVICES, title="t")
    ops = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    assert ops == annotated_rpcs(descriptor, PUBLIC_SERVICES)
    assert "InferenceService_PredictStream" not in ops  # streaming has no REST mapping
    assert not ops & annotated_rpcs(descriptor, ADMIN_SERVICES)


def test_openapi_follows_the_proto3_json_mapping(descriptor):
    doc = generate(descriptor.read_bytes(), PUBLIC_SERVICES, title="t")
    predict = doc["paths"]["/v1/models/{model}:predict"]["post"]
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert "model" not in body["properties"]  # bound from the path
    assert body["properties"]["features"] == {
        "type": "object", "additionalProperties": {"$ref": "#/components/schemas/google.protobuf.Value"},
        "minProperties": 1, "description": body["properties"]["features"]["description"]}
    assert [p["name"] for p in predict["parameters"]] == ["model"]
    schemas = doc["components"]["schemas"]
    assert schemas["predmesh.v1.GetStatsResponse"]["properties"]["total"]["type"] == "string"  # int64
    assert schemas["predmesh.v1.ModelInfo"]["properties"]["created_at"]["format"] == "date-time"
    stats_params = {p["name"] for p in doc["paths"]["/v1/stats"]["get"]["parameters"]}
    assert stats_params == {"model", "start_time", "end_time", "bucket_seconds"}
    for ops in doc["paths"].values():
        for op in ops.values():
            assert "default" not in op["responses"]  # every status an operation can answer is listed
            assert op["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "google.rpc.Status")


def test_typed_feature_values_are_any_json_scalar_or_null(descriptor):
    """google.protobuf.Value (the typed feature value) is documented as number/string/boolean/null, everywhere a
    feature map appears; the messages of the typed contract are in the document."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes())
    assert "google/protobuf/struct.proto" in {f.name for f in fds.file}  # the transcoder needs Value's descriptor
    doc = generate(descriptor.read_bytes(), PUBLIC_SERVICES, title="t")
    schemas = doc["components"]["schemas"]
    value = schemas["google.protobuf.Value"]
    assert value["nullable"] is True and value["anyOf"] == [{"type": "number"}, {"type": "string"},
                                                            {"type": "boolean"}]
    assert "Any JSON value of number/string/boolean/null" in value["description"]
    ref = {"$ref": "#/components/schemas/google.protobuf.Value"}
    batch = doc["paths"]["/v1/models/{model}:predictBatch"]["post"]["requestBody"]["content"]["application/json"]
    assert schemas["predmesh.v1.FeatureRow"]["properties"]["features"]["additionalProperties"] == ref
    assert "predmesh.v1.FeatureRow" in str(batch["schema"])
    assert schemas["predmesh.v1.StoredPrediction"]["properties"]["features"]["additionalProperties"] == ref
    assert schemas["predmesh.v1.StringColumn"]["properties"]["missing_rows"]["items"]["type"] == "integer"
    assert "predmesh.v1.StringColumn" in str(schemas["predmesh.v1.FeatureMatrix"])
    assert schemas["predmesh.v1.FeatureKind"] == {
        "type": "string", "enum": ["FEATURE_KIND_UNSPECIFIED", "FEATURE_KIND_NUMBER", "FEATURE_KIND_CATEGORY",
                                   "FEATURE_KIND_BOOLEAN"],
        "description": "The kind of value a feature takes."}
    spec = schemas["predmesh.v1.FeatureSpec"]["properties"]
    assert spec["kind"]["allOf"] == [{"$ref": "#/components/schemas/predmesh.v1.FeatureKind"}]
    assert spec["categories"]["items"] == {"$ref": "#/components/schemas/predmesh.v1.CategoryShare"}
    assert set(schemas["predmesh.v1.CategoryShare"]["properties"]) == {"value", "share"}
    # enums in query parameters stay inline (with their lower-case aliases)
    transport = next(p for p in doc["paths"]["/v1/predictions"]["get"]["parameters"] if p["name"] == "transport")
    assert "$ref" not in transport["schema"] and "rest" in transport["schema"]["enum"]


def test_settings_from_env_and_validation(tmp_path):
    s = GatewaySettings.from_env({"PREDMESH_GATEWAY_UPSTREAMS": "127.0.0.1:1, 127.0.0.1:2",
                                  "PREDMESH_GATEWAY_MAX_BODY_BYTES": "2048"})
    assert s.upstreams == ("127.0.0.1:1", "127.0.0.1:2") and s.max_body_bytes == 2048
    assert GatewaySettings.from_env({"PREDMESH_GRPC_ADDR": "127.0.0.1:7000"}).upstreams == ("127.0.0.1:7000",)
    with pytest.raises(ConfigError):
        GatewaySettings.from_env({"PREDMESH_GATEWAY_ADDR": "8080"})
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="go together"):
        GatewaySettings.from_env({"PREDMESH_GATEWAY_TLS_CERT": str(cert)})
    with pytest.raises(ConfigError, match="does not exist"):
        GatewaySettings(tls=TlsFiles(cert, tmp_path / "missing.key")).validate()


def test_rendered_config_has_the_hardening(descriptor, tmp_path):
    s = GatewaySettings(upstreams=("127.0.0.1:1", "localhost:2"), max_body_bytes=4096, rate_limit_rps=7)
    cfg = yaml.safe_load(render(s, descriptor, tmp_path / "openapi.json"))
    public, admin = cfg["static_resources"]["listeners"]
    assert public["address"]["socket_address"]["port_value"] == 8080
    assert admin["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8081}
    hcm = public["filter_chains"][0]["filters"][0]["typed_config"]
    filters = {f["name"]: f["typed_config"] for f in hcm["http_filters"]}
    transcoder = filters["envoy.filters.http.grpc_json_transcoder"]
    assert transcoder["services"] == list(PUBLIC_SERVICES) and transcoder["max_request_body_size"] == 4096
    assert transcoder["request_validation_options"]["reject_unknown_method"]
    assert transcoder["request_validation_options"]["reject_unknown_query_parameters"]
    assert transcoder["print_options"]["preserve_proto_field_names"]
    assert transcoder["print_options"]["always_print_primitive_fields"]
    assert filters["envoy.filters.http.local_ratelimit"]["token_bucket"]["max_tokens"] == 7
    # one client connection cannot open streams without end, and a silent stream is ended
    assert hcm["http2_protocol_options"]["max_concurrent_streams"] == s.max_streams_per_connection == 100
    assert hcm["stream_idle_timeout"] == "60s"
    admin_filters = {f["name"]: f["typed_config"]
                     for f in admin["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]}
    assert admin_filters["envoy.filters.http.grpc_json_transcoder"]["services"] == list(ADMIN_SERVICES)
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    rest_route = next(r for r in routes if r["match"] == {"prefix": "/v1/"})["route"]
    assert rest_route["retry_policy"]["retry_on"] == "unavailable,connect-failure,refused-stream"
    assert not any("ModelAdminService" in r["match"].get("prefix", "") for r in routes)
    cluster = cfg["static_resources"]["clusters"][0]
    assert cluster["type"] == "STRICT_DNS"  # a host name among the upstreams
    assert cluster["circuit_breakers"]["thresholds"][0]["max_requests"] == s.max_requests
    assert cluster["outlier_detection"]["consecutive_5xx"] == 5
    assert cluster["health_checks"][0]["no_traffic_interval"] == "0.5s"
    assert "transport_socket" not in cluster and "transport_socket" not in public["filter_chains"][0]


def _routes(listener) -> list[dict]:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]


def test_public_listener_passes_native_grpc_for_the_tools_users_run(descriptor, tmp_path):
    cfg = yaml.safe_load(render(GatewaySettings(), descriptor, tmp_path / "openapi.json"))
    public, admin = cfg["static_resources"]["listeners"]
    grpc_prefixes = {r["match"]["prefix"] for r in _routes(public) if "grpc" in r["match"]}
    assert grpc_prefixes == {"/predmesh.v1.InferenceService/", "/predmesh.v1.AnalyticsService/",
                             "/inference.GRPCInferenceService/", "/grpc.health.v1.Health/",
                             "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"}
    assert {r["match"]["prefix"] for r in _routes(admin) if "grpc" in r["match"]} == {
        "/predmesh.v1.ModelAdminService/"}


def test_rest_with_another_content_type_is_refused_before_transcoding(descriptor, tmp_path):
    cfg = yaml.safe_load(render(GatewaySettings(), descriptor, tmp_path / "openapi.json"))
    for listener in cfg["static_resources"]["listeners"]:
        routes = _routes(listener)
        refuse = next(i for i, r in enumerate(routes) if r.get("direct_response", {}).get("status") == 415)
        rest = next(i for i, r in enumerate(routes) if r["match"] == {"prefix": "/v1/"})
        assert refuse < rest
        headers = routes[refuse]["match"]["headers"]
        # the plain type fails the first matcher, so the regex runs only for other spellings
        assert headers[0] == {"name": "content-type", "string_match": {"exact": "application/json"},
                              "invert_match": True}
        assert headers[1] == {"name": "content-type", "present_match": True}  # no content type: JSON assumed
        assert "safe_regex" in headers[2]["string_match"] and headers[2]["invert_match"] is True


def test_cors_is_off_by_default_and_limited_to_the_configured_origins(descriptor, tmp_path):
    def public(settings):
        cfg = yaml.safe_load(render(settings, descriptor, tmp_path / "openapi.json"))
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        return hcm, cfg["static_resources"]["listeners"][1]

    hcm, _ = public(GatewaySettings())
    assert "envoy.filters.http.cors" not in {f["name"] for f in hcm["http_filters"]}
    assert "typed_per_filter_config" not in hcm["route_config"]["virtual_hosts"][0]
    hcm, admin = public(GatewaySettings(cors_origins=("https://app.example",)))
    assert hcm["http_filters"][0]["name"] == "envoy.filters.http.cors"  # before the transcoder: it answers preflights
    policy = hcm["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert policy["allow_origin_string_match"] == [{"exact": "https://app.example"}]
    assert "cors" not in yaml.safe_dump(admin)  # the admin listener never answers browsers


def test_docs_routes_serve_the_page_and_its_assets(descriptor, tmp_path):
    from gateway.docs import write_docs

    docs = write_docs(tmp_path / "docs", openapi_path="/openapi.json", title="t")
    cfg = yaml.safe_load(render(GatewaySettings(), descriptor, tmp_path / "openapi.json", docs))
    served = {r["match"]["path"]: r["direct_response"]["body"]["filename"]
              for r in _routes(cfg["static_resources"]["listeners"][0]) if "path" in r["match"]}
    assert served["/docs"] == str(docs.resolve() / "index.html")
    assert Path(served["/docs/swagger-ui-bundle.js"]).stat().st_size > 100_000
    assert '"/openapi.json"' in (docs / "init.js").read_text() or "'/openapi.json'" in (docs / "init.js").read_text()
    off = yaml.safe_load(render(GatewaySettings(docs=False), descriptor, tmp_path / "openapi.json", docs))
    off_routes = _routes(off["static_resources"]["listeners"][0])
    assert not any(r["match"].get("path", "").startswith("/docs") for r in off_routes)


def test_a_failed_build_leaves_the_running_gateways_files_alone(tmp_path, monkeypatch):
    import gateway.config as config

    work = tmp_path / "gw"
    config.build(GatewaySettings(work_dir=work), check=False)
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}

    def refuse(path):
        raise config.ConfigInvalid("envoy rejected it")

    monkeypatch.setattr(config, "validate", refuse)
    with pytest.raises(config.ConfigInvalid):
        config.build(GatewaySettings(work_dir=work, public_addr="127.0.0.1:9999", max_body_bytes=2048))
    after = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    assert after == before and set(before) == {"admin-openapi.json", "envoy.yaml", "openapi.json", "predmesh.binpb"}
    assert sorted(p.name for p in work.iterdir()) == ["admin-openapi.json", "docs", "envoy.yaml", "openapi.json",
                                                      "predmesh.binpb"]


@pytest.mark.parametrize("variable, value", [
    ("PREDMESH_GATEWAY_ADDR", "localhost"),
    ("PREDMESH_GATEWAY_ADMIN_ADDR", "nope"),
    ("PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR", "9901"),
    ("PREDMESH_GATEWAY_STATS_ADDR", "0.0.0.0:99999"),
    ("PREDMESH_GATEWAY_UPSTREAMS", "127.0.0.1:50051, replica2"),
])
def test_a_malformed_address_is_refused_naming_its_variable(variable, value):
    """`predmesh gateway` said only "address 'nope' must be host:port": with five address variables, which one?"""
    with pytest.raises(ConfigError, match=f"^{variable}: address '[^']+' must be host:port"):
        GatewaySettings.from_env({variable: value})


def test_an_empty_admin_or_stats_address_still_means_none():
    s = GatewaySettings.from_env({"PREDMESH_GATEWAY_ADMIN_ADDR": "", "PREDMESH_GATEWAY_STATS_ADDR": ""})
    assert (s.admin_addr, s.stats_addr, s.admin_url) == ("", "", "")
