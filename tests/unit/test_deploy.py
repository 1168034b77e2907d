"""The deploy stack (no Docker engine here): compose structure, the gateway config it renders, Prometheus config."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_gateway_uses_the_official_envoy_image_and_ports_stay_on_loopback(compose):
    services = compose["services"]
    assert services["envoy"]["image"].startswith("envoyproxy/envoy:v1.40")
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("127.0.0.1:") for p in published), published
    assert "9901" not in " ".join(published), "Envoy's admin interface must not be published"


def test_every_predmesh_variable_in_the_stack_is_documented(compose):
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"PREDMESH_[A-Z0-9_]+", (DEPLOY / "docker-compose.yml").read_text()))
    used |= set(re.findall(r"PREDMESH_[A-Z0-9_]+", (DEPLOY / "Dockerfile").read_text()))
    undocumented = sorted(v for v in used if f"`{v}`" not in readme and f"`{v}` (" not in readme
                          and not re.search(rf"`{v}[` /]", readme))
    assert undocumented == []


def test_the_image_ships_every_package_of_the_project():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./", dockerfile, re.M))
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name != "tests"}
    assert packages <= copied, f"missing from the image: {sorted(packages - copied)}"
    for path in copied:
        assert (ROOT / path).exists(), path


def test_the_gateway_config_of_the_stack_validates_in_envoy(compose, tmp_path):
    env = {**os.environ, **compose["services"]["gateway-config"]["environment"],
           "PREDMESH_GATEWAY_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "gateway", "--check"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    rendered = yaml.safe_load((tmp_path / "envoy.yaml").read_text())
    cluster = next(c for c in rendered["static_resources"]["clusters"] if c.get("load_assignment"))
    hosts = {e["endpoint"]["address"]["socket_address"]["address"]
             for lb in cluster["load_assignment"]["endpoints"] for e in lb["lb_endpoints"]}
    assert hosts == {"inference-1", "inference-2"} and cluster["type"] == "STRICT_DNS"


def test_prometheus_config_passes_promtool():
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus"
    result = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
