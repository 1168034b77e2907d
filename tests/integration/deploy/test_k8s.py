"""deploy/k8s without a cluster: `kubectl kustomize` renders it, `kubernetes-validate --strict` accepts every
rendered resource against the Kubernetes schemas (each check also fails on a broken copy), and the rendered
manifests hold what the scale-out story relies on (gRPC probes, drain < grace period, HPA, PDB, NetworkPolicies,
Secrets by reference only)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.integration.deploy.test_deploy import PENDING_PARTS, ROOT, run, tool

K8S = ROOT / "deploy" / "k8s"


def kustomize(path: Path) -> subprocess.CompletedProcess:
    return run(tool("kubectl"), "kustomize", path)


def validate(path: Path) -> subprocess.CompletedProcess:
    return run(tool("kubernetes-validate"), "--strict", path)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, list[dict]]:
    result = kustomize(K8S)
    assert result.returncode == 0, result.stderr
    path = tmp_path_factory.mktemp("k8s") / "rendered.yaml"
    path.write_text(result.stdout)
    return path, [d for d in yaml.safe_load_all(result.stdout) if d]


def find(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    specs = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs[d["metadata"]["name"]] = d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            specs[d["metadata"]["name"]] = d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


# --- the external checkers, and their failure on broken copies ---------------------------------------------

def test_rendered_manifests_pass_kubernetes_validate_strict(rendered):
    path, docs = rendered
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    # every resource was checked against a schema (custom resources would only get a warning)
    assert "WARN" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(docs)
    assert {d["kind"] for d in docs} >= {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler",
                                         "PodDisruptionBudget", "Job", "CronJob", "Secret", "ConfigMap",
                                         "NetworkPolicy", "PersistentVolumeClaim"}


def test_kubernetes_validate_fails_on_a_broken_copy(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    inference = (copy / "inference.yaml").read_text()
    broken = inference.replace("terminationGracePeriodSeconds: 45", "terminationGracePeriodSecond: 45")
    broken = broken.replace("averageUtilization: 70", "averageUtilization: seventy")
    assert broken != inference
    (copy / "inference.yaml").write_text(broken)
    result = kustomize(copy)
    assert result.returncode == 0, result.stderr       # kustomize does not know the schemas...
    path = tmp_path / "rendered.yaml"
    path.write_text(result.stdout)
    checked = validate(path)                          # ...the schema check does
    assert checked.returncode != 0
    assert "terminationGracePeriodSecond" in checked.stdout + checked.stderr
    assert "seventy" in checked.stdout + checked.stderr


def test_kustomize_fails_on_a_broken_copy(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    (copy / "consumer.yaml").unlink()
    result = kustomize(copy)
    assert result.returncode != 0 and "consumer.yaml" in result.stderr


@pytest.mark.parametrize("optional", ["keda", "servicemonitors"])
def test_optional_custom_resources_render_separately(optional, rendered):
    result = kustomize(K8S / optional)
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert kinds and kinds <= {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}
    assert not kinds & {d["kind"] for d in rendered[1]}, "custom resources must stay out of the base"


def test_keda_scales_the_consumer_on_the_predict_queue(rendered):
    docs = [d for d in yaml.safe_load_all(kustomize(K8S / "keda").stdout) if d]
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "consumer"
    find(rendered[1], "Deployment", "consumer")
    trigger = scaled["spec"]["triggers"][0]
    config = next(d for d in rendered[1] if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(
        "predmesh-config"))
    # the consumer's work queue, whatever the prefix the base configures: not a name hard-coded apart from it
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == f"{config['data']['PREDMESH_AMQP_PREFIX']}.predict"


# --- what the manifests must say ---------------------------------------------------------------------------

def test_inference_has_native_grpc_probes_resources_and_outlives_its_drain(rendered):
    from inference.rpc.server import STOP_MARGIN_S

    docs = rendered[1]
    deployment = find(docs, "StatefulSet", "inference")
    spec = deployment["spec"]["template"]["spec"]
    container = spec["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == 50051, probe
    env = env_of(container)
    # the whole stop fits in the grace period: drain, in-flight calls, the spool's drain to the database, margins
    assert spec["terminationGracePeriodSeconds"] >= float(env["PREDMESH_DRAIN_SECONDS"]) + \
        float(env["PREDMESH_GRACE_SECONDS"]) + STOP_MARGIN_S + float(env["PREDMESH_SPOOL_DRAIN_SECONDS"]) + 5
    readiness = container["readinessProbe"]
    assert readiness["failureThreshold"] >= 3
    # still serving until the readiness probe has had time to take the pod out of the endpoints
    assert float(env["PREDMESH_DRAIN_SECONDS"]) >= readiness["failureThreshold"] * readiness["periodSeconds"]
    assert env["PREDMESH_AUTO_MIGRATE"] == "0" and env["PREDMESH_GRPC_ADDR"] == "0.0.0.0:50051"
    assert env["PREDMESH_PROCESSES"] == "1"      # read-only store: reload pointers could not be written
    hpa = find(docs, "HorizontalPodAutoscaler", "inference")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "inference" and hpa["spec"]["minReplicas"] >= 2
    pdb = find(docs, "PodDisruptionBudget", "inference")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    service = find(docs, "Service", "inference")
    assert service["spec"]["clusterIP"] == "None", "headless: Envoy's STRICT_DNS must see every replica"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9101"


def test_models_are_read_only_to_the_replicas(rendered):
    docs = rendered[1]
    pvc = find(docs, "PersistentVolumeClaim", "predmesh-models")
    assert "ReadOnlyMany" in pvc["spec"]["accessModes"]
    spec = find(docs, "StatefulSet", "inference")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "models")
    assert volume["persistentVolumeClaim"] == {"claimName": "predmesh-models", "readOnly": True}
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "models")
    assert mount["readOnly"] is True


def test_every_container_is_non_root_with_resources(rendered):
    for name, spec in pod_specs(rendered[1]).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{name}/{container['name']}"
            assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"], where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            assert container["image"] == "registry.example.com/predmesh:0.1.0", where  # kustomize images: only


def test_envoy_renders_its_config_in_an_init_container_and_it_validates(rendered, tmp_path):
    spec = find(rendered[1], "Deployment", "envoy")["spec"]["template"]["spec"]
    init = spec["initContainers"][0]
    assert init["args"] == ["gateway", "--check"]
    env = env_of(init)
    assert env["PREDMESH_GATEWAY_UPSTREAMS"] == "inference:50051"
    result = subprocess.run([sys.executable, "-m", "gateway", "--check"], cwd=ROOT,
                            env={**os.environ, **env, "PREDMESH_GATEWAY_DIR": str(tmp_path)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    config = yaml.safe_load((tmp_path / "envoy.yaml").read_text())
    cluster = next(c for c in config["static_resources"]["clusters"] if c.get("load_assignment"))
    assert cluster["type"] == "STRICT_DNS"
    envoy = spec["containers"][0]
    assert envoy["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "/gateway/envoy.yaml" in envoy["args"]


def test_network_policies_let_only_envoy_reach_the_replicas_and_admin_clients_the_admin_listener(rendered):
    docs = rendered[1]
    deny = find(docs, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {} and deny["spec"]["policyTypes"] == ["Ingress"]
    inference = find(docs, "NetworkPolicy", "inference")["spec"]
    grpc_rules = [r for r in inference["ingress"] if {"port": 50051, "protocol": "TCP"} in r["ports"]]
    assert len(grpc_rules) == 1
    assert grpc_rules[0]["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "envoy"}}}]
    envoy = find(docs, "NetworkPolicy", "envoy")["spec"]
    admin = [r for r in envoy["ingress"] if {"port": 8081, "protocol": "TCP"} in r["ports"]]
    assert admin == [{"from": [{"podSelector": {"matchLabels": {"predmesh.io/admin-client": "true"}}}],
                      "ports": [{"port": 8081, "protocol": "TCP"}]}]
    public = [r for r in envoy["ingress"] if {"port": 8080, "protocol": "TCP"} in r["ports"]]
    assert public and "from" not in public[0]
    # the admin listener is never behind the public Service
    ports = {p["port"] for p in find(docs, "Service", "envoy")["spec"]["ports"]}
    assert ports == {8080}
    # every Deployment is covered by some policy beyond the default deny
    selected = {d["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
                for d in docs if d["kind"] == "NetworkPolicy"}
    listening = {d["metadata"]["name"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")}
    assert listening <= selected


def test_secrets_are_examples_and_only_referenced(rendered):
    docs = rendered[1]
    secret = find(docs, "Secret", "predmesh-secrets")
    for key, value in secret["stringData"].items():
        assert "change-me" in value, f"{key}: the committed Secret must hold placeholders only"
    text = yaml.safe_dump_all(d for d in docs if d["kind"] != "Secret")
    assert "change-me" not in text
    for name, spec in pod_specs(docs).items():
        for container in spec.get("initContainers", []) + spec["containers"]:
            for var in container.get("env", []):
                if re.search(r"TOKEN|PASSWORD|SECRET|SIGNING_KEY|DATABASE_URL|AMQP_URL", var["name"]):
                    assert "valueFrom" in var and "value" not in var, f"{name}: {var['name']}"


def test_batch_runs_as_a_cron_job_and_migrations_as_a_job(rendered):
    docs = rendered[1]
    cron = find(docs, "CronJob", "nightly")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert pod_specs(docs)["nightly"]["containers"][0]["args"][:2] == ["batch", "backfill"]
    assert pod_specs(docs)["luigid"]["containers"][0]["args"] == ["batch", "scheduler"]
    assert pod_specs(docs)["predmesh-migrate"]["containers"][0]["args"] == ["migrate"]


def test_every_predmesh_command_in_the_manifests_exists(rendered):
    from cli.main import COMMANDS

    for name, spec in pod_specs(rendered[1]).items():
        for container in spec.get("initContainers", []) + spec["containers"]:
            if not container["image"].startswith("registry.example.com/predmesh"):
                continue
            command = container.get("args", [None])[0] if "command" not in container else None
            if command is None:
                continue
            package = PENDING_PARTS.get(command)
            assert command in COMMANDS or (package and not (ROOT / package / "__init__.py").exists()), \
                f"{name}: `predmesh {command}`"


def test_each_replica_spools_on_its_own_persistent_volume_kept_across_pods(rendered):
    """Records answered during a database outage survive the pod: the spool is a per-replica PersistentVolume
    (volumeClaimTemplates), kept when the set scales down or is deleted, mounted where PREDMESH_SPOOL_DIR says."""
    docs = rendered[1]
    assert not [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "inference"]
    sts = find(docs, "StatefulSet", "inference")["spec"]
    assert sts["serviceName"] == "inference"
    [claim] = sts["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool" and claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert sts["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    spec = sts["template"]["spec"]
    assert "spool" not in {v["name"] for v in spec["volumes"]}  # no emptyDir shadowing the claim
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "spool")
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("predmesh-config"))
    assert mount["mountPath"] == config["data"]["PREDMESH_SPOOL_DIR"]
    hpa = find(docs, "HorizontalPodAutoscaler", "inference")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"


def test_no_pod_mounts_a_service_account_token_and_readiness_tolerates_a_miss(rendered):
    for name, spec in pod_specs(rendered[1]).items():
        assert spec.get("automountServiceAccountToken") is False, name
        for container in spec["containers"]:
            if "readinessProbe" in container:
                assert container["readinessProbe"].get("failureThreshold", 3) >= 3, f"{name}/{container['name']}"


def test_envoy_admin_stays_on_loopback_and_only_stats_and_ready_are_exposed(rendered, tmp_path):
    docs = rendered[1]
    spec = find(docs, "Deployment", "envoy")["spec"]["template"]["spec"]
    env = env_of(spec["initContainers"][0])
    assert env["PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR"].startswith("127.0.0.1:")
    stats_port = int(env["PREDMESH_GATEWAY_STATS_ADDR"].rsplit(":", 1)[1])
    envoy = spec["containers"][0]
    assert {p["containerPort"] for p in envoy["ports"]} == {8080, 8081, stats_port}
    for probe in ("readinessProbe", "livenessProbe"):
        port = envoy[probe]["httpGet"]["port"]
        assert next(p for p in envoy["ports"] if p["name"] == port)["containerPort"] == stats_port
    policy = find(docs, "NetworkPolicy", "envoy")["spec"]
    opened = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert opened == {8080, 8081, stats_port}  # the admin port is opened to no one
    monitoring = [r for r in policy["ingress"] if {"port": stats_port, "protocol": "TCP"} in r["ports"]]
    assert monitoring[0]["from"][0]["namespaceSelector"]
    result = subprocess.run([sys.executable, "-m", "gateway", "--check"], cwd=ROOT,
                            env={**os.environ, **env, "PREDMESH_GATEWAY_DIR": str(tmp_path)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    config = yaml.safe_load((tmp_path / "envoy.yaml").read_text())
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    [listener] = [ls for ls in config["static_resources"]["listeners"] if ls["name"] == "stats"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    to_admin = sorted(r["match"]["path"] for r in routes if r.get("route", {}).get("cluster") == "envoy_admin")
    assert to_admin == ["/ready", "/stats/prometheus"]
    assert all("path" in r["match"] for r in routes if "route" in r)  # exact paths only, no prefix to the admin


FLOATING = re.compile(r"(:latest|-latest|:[^:@/]*-latest)$")


def test_images_come_only_from_the_kustomize_images_step_and_pin_by_digest_when_set(rendered, tmp_path):
    """No manifest names a registry image itself (a floating tag such as envoy:v1.40-latest would move under a
    running fleet): every container runs `predmesh`, which the kustomization's `images:` entry maps to a release
    tag, and the documented pinning step (`kustomize edit set image predmesh=REGISTRY/predmesh@sha256:...`) turns
    every one of them into a digest."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    [entry] = kustomization["images"]
    assert entry["name"] == "predmesh" and not FLOATING.search(":" + str(entry.get("newTag", "")))
    for name, spec in pod_specs(rendered[1]).items():
        for container in spec.get("initContainers", []) + spec["containers"]:
            image = container["image"]
            assert not FLOATING.search(image) and ":" in image.rsplit("/", 1)[-1], f"{name}: {image}"
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    digest = "sha256:" + "ab" * 32
    pinned = dict(kustomization, images=[{"name": "predmesh", "newName": entry["newName"], "digest": digest}])
    (copy / "kustomization.yaml").write_text(yaml.safe_dump(pinned, sort_keys=False))
    rendered_pinned = [d for d in yaml.safe_load_all(kustomize(copy).stdout) if d]
    images = {c["image"] for spec in pod_specs(rendered_pinned).values()
              for c in spec.get("initContainers", []) + spec["containers"]}
    assert images == {f"{entry['newName']}@{digest}"}


# --- deploy/podman: the same manifests on one host with `podman kube play` ------------------------------------
# (played for real by tests/integration/deploy/test_image.py on demand; here: what podman 4.3 would skip or miss)

PODMAN = ROOT / "deploy" / "podman"
PODMAN_RUNS = {"Deployment", "Pod", "PersistentVolumeClaim", "ConfigMap"}  # podman 4.3's kube play kinds
PODMAN_SKIPS = {"Namespace", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "CronJob"}


def portable(container: dict) -> dict:
    """A container without what an overlay changes by design: the image and the ConfigMap's hash suffix."""
    refs = [{**ref, "configMapRef": {"name": ref["configMapRef"]["name"].rsplit("-", 1)[0]}}
            if "configMapRef" in ref else ref for ref in container.get("envFrom", [])]
    return {**container, "image": None, **({"envFrom": refs} if refs else {})}


@pytest.fixture(scope="module")
def podman_rendered(tmp_path_factory) -> tuple[Path, list[dict]]:
    result = kustomize(PODMAN)
    assert result.returncode == 0, result.stderr
    path = tmp_path_factory.mktemp("podman") / "rendered.yaml"
    path.write_text(result.stdout)
    return path, [d for d in yaml.safe_load_all(result.stdout) if d]


def test_the_podman_overlay_passes_kubernetes_validate_strict(podman_rendered):
    path, docs = podman_rendered
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(docs)


def test_the_podman_overlay_runs_inference_and_envoy_as_deployments_on_the_host_network(podman_rendered, rendered):
    docs = podman_rendered[1]
    # nothing that would run on a cluster is silently skipped by podman: the pods are Deployments, every other kind
    # is one podman plays (the Secret: deploy/podman/play.sh makes it a podman secret) or one that is cluster-only
    kinds = {d["kind"] for d in docs}
    assert kinds <= PODMAN_RUNS | PODMAN_SKIPS | {"Secret"}, kinds
    assert sorted(d["metadata"]["name"] for d in docs if d["kind"] == "Deployment") == ["envoy", "inference"]
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for name in ("envoy", "inference"):
        deployment = find(docs, "Deployment", name)
        assert deployment["spec"]["replicas"] == 1, name  # host network: one port per host
        spec = deployment["spec"]["template"]["spec"]
        assert spec["hostNetwork"] is True, name
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert container["image"] == "localhost/predmesh:local", f"{name}/{container['name']}"  # build-image.sh
            # podman would publish a containerPort (refused on the host network) and make a liveness probe other
            # than gRPC a curl healthcheck inside the image (which has no curl)
            assert "ports" not in container, f"{name}/{container['name']}"
            assert "grpc" in container.get("livenessProbe", {"grpc": None}), f"{name}/{container['name']}"
            for key, value in env_of(container).items():
                if key.endswith("_ADDR") and value and key not in ("PREDMESH_LUIGID_ADDR",):
                    assert value.startswith("127.0.0.1:"), f"{name}/{container['name']}: {key}={value}"
        # every claim a pod mounts is declared (podman makes named volumes of the declared ones only)
        assert {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
                if "persistentVolumeClaim" in v} <= claims, name
    # the server's container is the cluster's one but for its addresses (and no `ports:`)
    base = find(rendered[1], "StatefulSet", "inference")["spec"]["template"]["spec"]["containers"][0]
    here = find(docs, "Deployment", "inference")["spec"]["template"]["spec"]["containers"][0]
    assert {k: v for k, v in portable(here).items() if k != "env"} == \
        {k: v for k, v in portable(base).items() if k not in ("env", "ports")}
    assert {k: v for k, v in env_of(here).items() if not k.endswith("_ADDR")} == \
        {k: v for k, v in env_of(base).items() if not k.endswith("_ADDR")}
    assert env_of(find(docs, "Deployment", "envoy")["spec"]["template"]["spec"]["initContainers"][0])[
        "PREDMESH_GATEWAY_UPSTREAMS"] == env_of(here)["PREDMESH_GRPC_ADDR"]


def test_the_podman_overlay_runs_the_jobs_as_init_containers_with_their_own_commands(podman_rendered, rendered):
    """podman has no Job: migrate then train run before the server, as init containers holding the Jobs' containers
    (only the model store's volume has another name: the writable mount of the same claim)."""
    spec = find(podman_rendered[1], "Deployment", "inference")["spec"]["template"]["spec"]
    inits = {c["name"]: c for c in spec["initContainers"]}
    assert list(inits) == ["migrate", "train"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for job in ("predmesh-migrate", "predmesh-train"):
        [container] = pod_specs(rendered[1])[job]["containers"]
        init = portable(inits[container["name"]])
        if "volumeMounts" in init:
            init["volumeMounts"] = [{**m, "name": "models"} if m["name"] == "models-publisher" else m
                                    for m in init["volumeMounts"]]
        assert init == portable(container), job
    assert volumes["models-publisher"]["persistentVolumeClaim"] == {"claimName": "predmesh-models"}  # writable
    assert volumes["models"]["persistentVolumeClaim"]["readOnly"] is True  # the server's mount stays read-only
