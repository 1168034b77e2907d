"""T21: TLS for clients at the gateway (client certificates required), TLS with mTLS from Envoy to the replica."""
from __future__ import annotations

import socket
import ssl
import subprocess

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from predmesh import Client
from predmesh.client import TlsConfig
from predmesh.errors import PredmeshError
from tests.conftest import IRIS_ROW
from tests.support.certs import make_pki
from tests.support.gateway import GatewayProc
from tests.support.procs import ServerProc, free_port, wait_for

pytestmark = pytest.mark.envoy


def tls_health(target: str, pki, cert=None) -> int | None:
    """Health status over TLS (client cert optional), or None when the handshake or call fails."""
    creds = grpc.ssl_channel_credentials(pki.ca.read_bytes(), cert.key.read_bytes() if cert else None,
                                         cert.cert.read_bytes() if cert else None)
    with grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")]) as ch:
        try:
            return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2).status
        except grpc.RpcError:
            return None


class TlsServerProc(ServerProc):
    """The inference server with PREDMESH_TLS_*: readiness is checked over mTLS."""

    def __init__(self, store, log_path, pki):
        super().__init__(store, log_path, env={"PREDMESH_TLS_CERT": str(pki.server.cert),
                                               "PREDMESH_TLS_KEY": str(pki.server.key),
                                               "PREDMESH_TLS_CLIENT_CA": str(pki.ca)})
        self.pki = pki

    def start(self, timeout: float = 30.0):
        self.spawn(timeout)
        wait_for(lambda: self.started.poll() is not None
                 or tls_health(self.target, self.pki, self.pki.client) == health_pb2.HealthCheckResponse.SERVING,
                 timeout, what="TLS server")
        assert self.started.poll() is None, self.log()
        return self


@pytest.fixture(scope="module")
def tls_mesh(trained_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    pki = make_pki(tmp / "pki")
    with TlsServerProc(trained_store, tmp / "server.log", pki) as server:
        gw_env = {
            "PREDMESH_GATEWAY_TLS_CERT": str(pki.server.cert),
            "PREDMESH_GATEWAY_TLS_KEY": str(pki.server.key),
            "PREDMESH_GATEWAY_TLS_CLIENT_CA": str(pki.ca),
            "PREDMESH_GATEWAY_UPSTREAM_TLS_CA": str(pki.ca),
            "PREDMESH_GATEWAY_UPSTREAM_TLS_CERT": str(pki.client.cert),
            "PREDMESH_GATEWAY_UPSTREAM_TLS_KEY": str(pki.client.key),
            "PREDMESH_GATEWAY_UPSTREAM_SERVER_NAME": "localhost",
        }
        with GatewayProc([server.target], tmp / "gw", env=gw_env) as gw:
            yield pki, server, gw


def predict(gw, **kwargs) -> requests.Response:
    return requests.post(gw.url + "/v1/models/iris:predict", json={"features": IRIS_ROW}, timeout=5, **kwargs)


def test_rest_over_tls_with_a_client_certificate_reaches_the_mtls_replica(tls_mesh):
    pki, _, gw = tls_mesh
    assert gw.url.startswith("https://")
    resp = predict(gw, verify=str(pki.ca), cert=(str(pki.client.cert), str(pki.client.key)))
    assert resp.status_code == 200 and resp.json()["prediction"]["label"] == "setosa"
    # the Envoy → replica hop is TLS: Envoy counted upstream handshakes on the inference cluster
    assert gw.stat("cluster.inference.ssl.handshake") >= 1


@pytest.mark.parametrize("who", ["no certificate", "certificate from another CA"])
def test_gateway_refuses_clients_without_a_trusted_certificate(tls_mesh, who):
    pki, _, gw = tls_mesh
    cert = None if who == "no certificate" else (str(pki.rogue_client.cert), str(pki.rogue_client.key))
    with pytest.raises(requests.exceptions.RequestException):
        predict(gw, verify=str(pki.ca), cert=cert)


def test_gateway_refuses_plaintext(tls_mesh):
    _, _, gw = tls_mesh
    with pytest.raises(requests.exceptions.RequestException):
        requests.post(f"http://127.0.0.1:{gw.port}/v1/models/iris:predict", json={"features": IRIS_ROW},
                      timeout=5)


def _handshake(port: int, pki, version: ssl.TLSVersion) -> str:
    """The negotiated protocol, or the error, of a handshake capped at `version`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki.ca))
    ctx.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = version
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old protocols, so the server is what refuses
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
                return tls.version() or ""
    except ssl.SSLError as exc:
        return f"error: {exc.reason}"
    except OSError as exc:
        return f"connect error: {exc}"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_public_listener_offers_tls_1_2_and_up_only(tls_mesh, tmp_path):
    pki, _, gw = tls_mesh
    # control: this client really negotiates TLS 1.1 with a server that allows it (openssl s_server)
    port = free_port()
    control = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", str(pki.server.cert),
                                "-key", str(pki.server.key), "-cipher", "DEFAULT:@SECLEVEL=0", "-tls1_1", "-www"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _handshake(port, pki, ssl.TLSVersion.TLSv1_1) == "TLSv1.1", timeout=10,
                 what="control TLS 1.1 handshake")
    finally:
        control.kill()
        control.wait()
    assert _handshake(gw.port, pki, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    assert _handshake(gw.port, pki, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    for old in (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1):
        result = _handshake(gw.port, pki, old)
        assert result.startswith("error:") and "VERSION" in result, result  # Envoy's protocol_version alert


def test_replica_require_client_auth_is_effective(tls_mesh):
    """The replica's client-certificate check is real: root CAs are configured, not just the flag."""
    pki, server, _ = tls_mesh
    assert tls_health(server.target, pki, pki.client) == health_pb2.HealthCheckResponse.SERVING
    assert tls_health(server.target, pki, None) is None
    assert tls_health(server.target, pki, pki.rogue_client) is None
    with grpc.insecure_channel(server.target) as ch:  # plaintext to a TLS port fails too
        with pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)


def test_sdk_talks_mtls_to_the_replica(tls_mesh):
    pki, server, _ = tls_mesh
    good = TlsConfig(root_certificates=pki.ca.read_bytes(), client_cert=pki.client.cert.read_bytes(),
                     client_key=pki.client.key.read_bytes(), server_name="localhost")
    with Client(server.target, tls=good, timeout=5) as client:
        assert client.get_model("iris").name == "iris"
    without = TlsConfig(root_certificates=pki.ca.read_bytes(), server_name="localhost")
    with Client(server.target, tls=without, timeout=2) as client:
        with pytest.raises(PredmeshError):
            client.get_model("iris")
