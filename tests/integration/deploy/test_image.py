"""The image, built and run for real with podman (on demand: it builds for minutes, beyond the default run's budget):
`PREDMESH_TEST_IMAGE=1 scripts/test.sh tests/integration/deploy/test_image.py` (as root, podman + runc + mmdebstrap
installed: apt-get install podman runc mmdebstrap). deploy/build-image.sh builds it from Debian packages and PyPI
only; the server in the container answers gRPC, and REST through Envoy from the same image; the Kubernetes
manifests (deploy/k8s, through its one-host overlay deploy/podman) run with `podman kube play`
(deploy/podman/play.sh) and answer gRPC and REST through the Envoy pod."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import psycopg2
import pytest
import requests
import yaml

from predmesh import Client
from tests.conftest import IRIS_ROW
from tests.integration.deploy.test_deploy import ROOT, tool
from tests.support.pg import TempSchema
from tests.support.procs import free_port, health_status, wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.postgres, pytest.mark.timeout(3600),  # the build: minutes
              pytest.mark.skipif(os.environ.get("PREDMESH_TEST_IMAGE") != "1",
                                 reason="on demand: PREDMESH_TEST_IMAGE=1 (deploy/build-image.sh, `podman run`, and "
                                        "`podman kube play` by deploy/podman/play.sh; minutes)")]

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
            try:
                wait_for(lambda: health_status(f"127.0.0.1:{grpc_port}") == 1, 180, interval=1,
                         what="the server in the container SERVING")
            except TimeoutError as exc:
                raise AssertionError(f"{exc}\n{logs(podman, server)}") from None
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
            try:
                wait_for(lambda: (r := rest_answer()) is not None and r.status_code == 200, 120, interval=1,
                         what="REST through Envoy in the container")
            except TimeoutError as exc:
                raise AssertionError(f"{exc}\n{logs(podman, gateway)}") from None
            assert rest_answer().json()["prediction"]["label"] == "setosa"
        finally:
            for name in (gateway, server):
                subprocess.run([*podman, "rm", "-f", "-t", "15", name], capture_output=True, timeout=120)


def test_the_image_carries_the_projects_bytecode(podman, image):
    # the runtime writes no .pyc (PYTHONDONTWRITEBYTECODE) and imports /app first: the build compiled it, so a
    # process loads the project's modules from __pycache__ instead of compiling them at every start
    result = subprocess.run([*podman, "run", "--rm", "--network", "host", "--entrypoint", "python", image, "-v", "-c",
                             "import database.repo, inference.process.workers, gateway.config, predmesh.client"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = [line for line in result.stderr.splitlines() if line.startswith("# code object from '/app/")]
    assert any("/app/database/__pycache__/repo.cpython-311.pyc" in line for line in loaded), result.stderr[-2000:]
    from_source = [line for line in result.stderr.splitlines()  # what `python -v` prints for a module compiled now
                   if line.startswith("# code object from /app/") and line.endswith(".py")]
    assert not from_source, from_source


def play(action: str, overlay, *options: str) -> subprocess.CompletedProcess:
    """deploy/podman/play.sh: render the kustomization, podman secrets from its Secrets, `podman kube play/down`."""
    env = {**os.environ, "KUBECTL": tool("kubectl")}
    return subprocess.run([str(ROOT / "deploy" / "podman" / "play.sh"), action, *options, str(overlay)], env=env,
                          capture_output=True, text=True, timeout=600)


def names(podman, *listing: str, field: str = "{{.Name}}", suffix: str = "") -> list[str]:
    argv = [*podman, *listing, "--format", field, *(["--filter", f"name={suffix}"] if suffix else [])]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.split("\n")


def pod_logs(podman, suffix) -> str:
    lines = [line for line in names(podman, "ps", "-a", field="{{.Names}} {{.Status}}", suffix=suffix) if line]
    return "\n".join(f"== {line}\n{logs(podman, line.split()[0])[-3000:]}" for line in lines)


def one_host_overlay(overlay, suffix: str, image: str, secrets: dict, grpc: str, gateway: str) -> None:
    """deploy/podman with every name suffixed (pods, volumes, secrets) and every address on a free port."""
    ports = {key: f"127.0.0.1:{free_port()}" for key in ("metrics", "admin", "stats", "envoy-admin")}

    def patch(kind, name, body):
        return {"apiVersion": "v1" if kind == "Secret" else "apps/v1", "kind": kind,
                "metadata": {"name": name, "namespace": "predmesh"}, **body}

    def env(**values):
        return [{"name": f"PREDMESH_{key}", "value": value} for key, value in values.items()]
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(ROOT / "deploy" / "podman", overlay)],
        "nameSuffix": f"-{suffix}",
        "images": [{"name": "localhost/predmesh", "newTag": image.rsplit(":", 1)[1]}],
        "patches": [{"patch": yaml.safe_dump_all([
            patch("Secret", "predmesh-secrets", {"stringData": secrets}),
            patch("Deployment", "inference", {"spec": {"template": {"spec": {"containers": [{
                "name": "inference", "env": env(GRPC_ADDR=grpc, METRICS_ADDR=ports["metrics"])}]}}}}),
            patch("Deployment", "envoy", {"spec": {"template": {"spec": {"initContainers": [{
                "name": "gateway-config", "env": env(
                    GATEWAY_ADDR=gateway, GATEWAY_ADMIN_ADDR=ports["admin"], GATEWAY_STATS_ADDR=ports["stats"],
                    GATEWAY_ENVOY_ADMIN_ADDR=ports["envoy-admin"], GATEWAY_UPSTREAMS=grpc)}]}}}}),
        ])}],
    }))


def test_the_k8s_manifests_run_with_podman_kube_play(podman, image, tmp_path):
    """deploy/podman (deploy/k8s for one host) played with `podman kube play` by deploy/podman/play.sh: the inference
    pod (the migrate and train Jobs as init containers, then the server) and the Envoy pod (its config-rendering
    init container, then Envoy) start; gRPC and REST predictions answer through the Envoy pod and reach the
    database; `play.sh down --volumes` (`podman kube down`) removes every pod, secret and volume it made."""
    suffix = uuid.uuid4().hex[:8]
    grpc, gateway = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    url = f"http://{gateway}/v1/models/iris:predict"

    def rest_answer():
        try:
            return requests.post(url, json={"features": IRIS_ROW, "request_id": "rest-kube-play"}, timeout=5)
        except requests.ConnectionError:
            return None
    with TempSchema() as schema:
        one_host_overlay(tmp_path / "overlay", suffix, image, {
            "database-url": schema.url, "admin-token": uuid.uuid4().hex, "readonly-token": uuid.uuid4().hex,
            "writer-token": uuid.uuid4().hex}, grpc, gateway)
        started = time.monotonic()
        try:
            played = play("up", tmp_path / "overlay")
            up_s = time.monotonic() - started
            assert played.returncode == 0, played.stdout + played.stderr + pod_logs(podman, suffix)
            assert sorted(filter(None, names(podman, "pod", "ps", suffix=suffix))) == \
                [f"envoy-{suffix}-pod-0", f"inference-{suffix}-pod-0"]
            try:
                wait_for(lambda: health_status(grpc) == 1, 300, interval=1, what="the inference pod SERVING")
                wait_for(lambda: (r := rest_answer()) is not None and r.status_code == 200, 180, interval=1,
                         what="REST through the Envoy pod")
            except TimeoutError as exc:
                raise AssertionError(f"{exc}\n{pod_logs(podman, suffix)}") from None
            ready_s = time.monotonic() - started
            assert rest_answer().json()["prediction"]["label"] == "setosa"
            with Client(gateway, timeout=10) as client:   # native gRPC through Envoy
                assert client.predict("iris", IRIS_ROW, request_id="grpc-kube-play").label == "setosa"

            def recorded():  # the migrate init container made the schema; the server stores what it answered
                with psycopg2.connect(schema.url, connect_timeout=5) as conn, conn.cursor() as cur:
                    cur.execute("SELECT DISTINCT request_id FROM predictions")
                    return {row[0] for row in cur.fetchall()}
            wait_for(lambda: recorded() >= {"rest-kube-play", "grpc-kube-play"}, 60, interval=0.5,
                     what="both predictions in the database")
            print(f"podman kube play: `play.sh up` {up_s:.1f} s (init containers included); "
                  f"gRPC and REST answering through Envoy {ready_s:.1f} s after the start")
        finally:
            down = play("down", tmp_path / "overlay", "--volumes")
            left = [[n for n in names(podman, *listing, field=field, suffix=suffix) if n]
                    for listing, field in ((("ps", "-a"), "{{.Names}}"), (("pod", "ps"), "{{.Name}}"))]
            made = [n for n in names(podman, "volume", "ls") + names(podman, "secret", "ls") if suffix in n]
            for pod in left[1]:   # never leave a pod behind, even when the check below fails
                subprocess.run([*podman, "pod", "rm", "-f", pod], capture_output=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert left == [[], []] and not made, (left, made)
