"""Rendered gateway configs, plain and TLS, are accepted by the real Envoy (`envoy --mode validate`)."""
from __future__ import annotations

import yaml

from gateway.config import build
from gateway.settings import GatewaySettings, TlsFiles


def test_envoy_accepts_plain_and_tls_configs(tmp_path):
    from tests.support.certs import make_pki

    pki = make_pki(tmp_path / "pki")
    build(GatewaySettings(work_dir=tmp_path / "plain"))
    built = build(GatewaySettings(
        work_dir=tmp_path / "tls", tls=TlsFiles(pki.server.cert, pki.server.key, pki.ca),
        upstream_tls=TlsFiles(pki.client.cert, pki.client.key, pki.ca)))
    cfg = yaml.safe_load(built.envoy_yaml.read_text())
    tls = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    upstream = cfg["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
    assert upstream["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"]
