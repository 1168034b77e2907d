"""The image, built and run for real with podman (on demand: it builds for minutes, beyond the default run's budget):
`PREDMESH_TEST_IMAGE=1 scripts/test.sh tests/integration/deploy/test_image.py` (as root, podman + runc + mmdebstrap
installed: apt-get install podman runc mmdebstrap). deploy/build-image.sh builds it from Debian packages and PyPI
only; the server in the container answers gRPC, and REST through Envoy from the same image; the Kubernetes
Deployment of the gateway's kind runs with `podman kube play`."""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest
import requests

from predmesh import Client
from tests.conftest import IRIS_ROW
from tests.integration.deploy.test_deploy import ROOT
from tests.support.pg import TempSchema
from tests.support.procs import free_port, health_status, wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.postgres, pytest.mark.timeout(3600),  # the build: minutes
              pytest.mark.skipif(os.environ.get("PREDMESH_TEST_IMAGE") != "1",
                                 reason="on demand: PREDMESH_TEST_IMAGE=1 (builds the image with podman, minutes)")]

IMAGE = "localhost/predmesh:test"


@pytest.fixture(scope="module")
def podman(tmp_path_factory) -> list[str]:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("podman", "runc", "mmdebstrap")):
        pytest.fail("PREDMESH_TEST_IMAGE=1 needs root and podman, runc, mmdebstrap (apt-get install them)")
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    os.environ["CONTAINERS_CONF"] = str(conf)
    return ["podman", "--runtime", "runc"]


@pytest.fixture(scope="module")
def image(podman) -> str:
    result = subprocess.run([str(ROOT / "deploy" / "build-image.sh")], env={**os.environ, "IMAGE": IMAGE},
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return IMAGE


def run_container(podman, image, name, env, *args, entrypoint=None):
    argv = [*podman, "run", "-d", "--rm", "--name", name, "--network", "host"]
    for key, value in env.items():
        argv += ["-e", f"{key}={value}"]
    if entrypoint:
        argv += ["--entrypoint", entrypoint]
    result = subprocess.run([*argv, image, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def logs(podman, name) -> str:
    return subprocess.run([*podman, "logs", name], capture_output=True, text=True, timeout=60).stdout


def test_the_image_builds_from_registries_only_and_serves_grpc_and_rest(podman, image):
    # nothing in the Dockerfile reaches beyond the registries (the base image and PyPI)
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "github.com" not in dockerfile and "urlretrieve" not in dockerfile and "curl" not in dockerfile
    grpc_port, rest_port, suffix = free_port(), free_port(), uuid.uuid4().hex[:8]
    server, gateway = f"predmesh-test-server-{suffix}", f"predmesh-test-gateway-{suffix}"
    with TempSchema() as schema:
        try:
            run_container(podman, image, server, {
                "PREDMESH_GRPC_ADDR": f"127.0.0.1:{grpc_port}", "PREDMESH_METRICS_ADDR": "",
                "PREDMESH_DATABASE_URL": schema.url, "PREDMESH_PROCESSES": "1"}, "serve")  # trains the demo
            wait_for(lambda: health_status(f"127.0.0.1:{grpc_port}") == 1, 180, interval=1,
                     what=f"the server in the container SERVING:\n{logs(podman, server)}")
            with Client(f"127.0.0.1:{grpc_port}", timeout=10) as client:
                answer = client.predict("iris", IRIS_ROW, request_id="in-a-container")
            assert answer.label == "setosa"
            run_container(podman, image, gateway, {
                "PREDMESH_GATEWAY_ADDR": f"127.0.0.1:{rest_port}", "PREDMESH_GATEWAY_ADMIN_ADDR": "",
                "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": f"127.0.0.1:{free_port()}",
                "PREDMESH_GATEWAY_UPSTREAMS": f"127.0.0.1:{grpc_port}"}, "gateway")
            url = f"http://127.0.0.1:{rest_port}/v1/models/iris:predict"

            def rest_answer():
                try:
                    return requests.post(url, json={"features": IRIS_ROW, "request_id": "rest-in-a-container"},
                                         timeout=5)
                except requests.ConnectionError:
                    return None
            wait_for(lambda: (r := rest_answer()) is not None and r.status_code == 200, 120, interval=1,
                     what=f"REST through Envoy in the container:\n{logs(podman, gateway)}")
            assert rest_answer().json()["prediction"]["label"] == "setosa"
        finally:
            for name in (gateway, server):
                subprocess.run([*podman, "rm", "-f", "-t", "15", name], capture_output=True, timeout=120)


def test_a_deployment_of_the_image_runs_with_podman_kube_play(podman, image, tmp_path):
    """`podman kube play` runs a Deployment (host network, as TOOLCHAIN §13 says; no Services, NetworkPolicies or
    probes' routing on one machine): the server in the pod answers gRPC."""
    port, name = free_port(), f"predmesh-kube-{uuid.uuid4().hex[:8]}"
    with TempSchema() as schema:
        manifest = tmp_path / "deployment.yaml"
        manifest.write_text(f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      hostNetwork: true
      automountServiceAccountToken: false
      containers:
        - name: inference
          image: {image}
          args: ["serve"]
          env:
            - {{name: PREDMESH_GRPC_ADDR, value: "127.0.0.1:{port}"}}
            - {{name: PREDMESH_METRICS_ADDR, value: ""}}
            - {{name: PREDMESH_PROCESSES, value: "1"}}
            - {{name: PREDMESH_DATABASE_URL, value: "{schema.url}"}}
""")
        played = subprocess.run([*podman, "kube", "play", str(manifest)], capture_output=True, text=True,
                                timeout=300)
        try:
            assert played.returncode == 0, played.stderr
            wait_for(lambda: health_status(f"127.0.0.1:{port}") == 1, 180, interval=1, what="the pod SERVING")
            with Client(f"127.0.0.1:{port}", timeout=10) as client:
                assert client.predict("iris", IRIS_ROW, request_id="kube-play").label == "setosa"
        finally:
            subprocess.run([*podman, "kube", "down", str(manifest)], capture_output=True, timeout=120)

