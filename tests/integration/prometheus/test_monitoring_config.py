"""cli/monitoring.py: the Prometheus configuration `predmesh up` writes passes promtool and lists every job."""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest
import yaml

from cli.monitoring import JOBS, prometheus_argv, write_config, write_targets

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_written_config_passes_promtool_and_has_a_targets_file_per_job(tmp_path):
    config = write_config(tmp_path / "prom", {"inference": ["127.0.0.1:9101", "127.0.0.1:9111"],
                                               "envoy": ["127.0.0.1:9901"]}, scrape_interval="2s")
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus"
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = {name: sum(len(group["rules"]) for group in yaml.safe_load(
        (REPO / "deploy/prometheus/rules" / name).read_text())["groups"]) for name in ("alerts.yml", "recording.yml")}
    # every alert and recording rule of the repository is loaded by the written config
    assert f"SUCCESS: {rules['alerts.yml']} rules found" in result.stdout, result.stdout
    assert f"SUCCESS: {rules['recording.yml']} rules found" in result.stdout, result.stdout
    parsed = yaml.safe_load(config.read_text())
    assert [c["job_name"] for c in parsed["scrape_configs"]] == list(JOBS)
    envoy = next(c for c in parsed["scrape_configs"] if c["job_name"] == "envoy")
    assert envoy["metrics_path"] == "/stats/prometheus"
    targets = json.loads((tmp_path / "prom" / "targets" / "inference.json").read_text())
    assert targets == [{"targets": ["127.0.0.1:9101", "127.0.0.1:9111"], "labels": {}}]
    assert json.loads((tmp_path / "prom" / "targets" / "consumer.json").read_text()) == []
    write_targets(tmp_path / "prom", "consumer", ["127.0.0.1:9102"])
    assert json.loads((tmp_path / "prom" / "targets" / "consumer.json").read_text())[0]["targets"] == [
        "127.0.0.1:9102"]


def test_unknown_jobs_are_refused_and_the_argv_listens_where_asked(tmp_path):
    with pytest.raises(ValueError, match="unknown job"):
        write_config(tmp_path, {"inferense": ["127.0.0.1:9101"]})
    argv = prometheus_argv(tmp_path / "prometheus.yml", tmp_path / "data", "127.0.0.1:9095", binary="prometheus")
    assert argv[0] == "prometheus" and "--web.listen-address=127.0.0.1:9095" in argv
    assert f"--config.file={tmp_path / 'prometheus.yml'}" in argv
