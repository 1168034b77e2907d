"""Prometheus for the local mesh: configuration with file-based service discovery, and its command line.

`predmesh up` calls write_config(directory, {job: ["127.0.0.1:9101", ...]}) once, then starts
prometheus_argv(config, data_dir, addr) when prometheus_binary() finds one (Debian's `prometheus`). Each job's
targets live in `<directory>/targets/<job>.json` (Prometheus re-reads them while it runs, so write_targets() can
add or drop a part later). Alert and recording rules come from deploy/prometheus/rules.

Jobs (metrics path): inference (/metrics), consumer (/metrics), luigid (/metrics; luigid needs
`[scheduler] metrics_collector = prometheus`), envoy (/stats/prometheus), rabbitmq (/metrics: node totals),
rabbitmq-queues (/metrics/detailed: per-queue depth, for the dead-letter and lag alerts) and prometheus itself.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"

# job -> (metrics path, query parameters)
JOBS: dict[str, tuple[str, dict[str, list[str]]]] = {
    "inference": ("/metrics", {}),
    "consumer": ("/metrics", {}),
    "luigid": ("/metrics", {}),
    "envoy": ("/stats/prometheus", {}),
    "rabbitmq": ("/metrics", {}),
    "rabbitmq-queues": ("/metrics/detailed", {"family": ["queue_coarse_metrics", "queue_consumer_count"]}),
    "prometheus": ("/metrics", {}),
}


def prometheus_binary() -> str | None:
    """The prometheus executable, or None when it is not installed (`predmesh up` then runs without it)."""
    return shutil.which("prometheus")


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)  # Prometheus never reads a half-written targets file


def write_targets(directory: Path, job: str, targets: list[str]) -> Path:
    """Point one job at these host:port targets (an empty list: nothing to scrape); returns the file."""
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; use one of {', '.join(JOBS)}")
    path = Path(directory) / "targets" / f"{job}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps([{"targets": list(targets), "labels": {}}] if targets else [], indent=2) + "\n")
    return path


def render_config(targets_dir: str, rules: list[str], *, scrape_interval: str = "5s",
                  evaluation_interval: str = "15s") -> dict:
    """prometheus.yml as a dict: one job per JOBS entry reading `<targets_dir>/<job>.json`."""
    scrape_configs = []
    for job, (path, params) in JOBS.items():
        config: dict[str, object] = {"job_name": job, "metrics_path": path,
                  "file_sd_configs": [{"files": [f"{targets_dir}/{job}.json"], "refresh_interval": "5s"}]}
        if params:
            config["params"] = params
        scrape_configs.append(config)
    return {"global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
            "rule_files": rules, "scrape_configs": scrape_configs}


def write_config(directory: Path, targets: dict[str, list[str]], *, scrape_interval: str = "5s",
                 evaluation_interval: str = "15s", rules_dir: Path = RULES_DIR) -> Path:
    """Write `<directory>/prometheus.yml` and a targets file for every job (jobs not in targets get an empty one);
    returns the config path. targets: {"inference": ["127.0.0.1:9101"], "envoy": ["127.0.0.1:9901"], ...};
    "prometheus" defaults to nothing (pass its own address to have it scrape itself)."""
    import yaml

    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(targets) - set(JOBS))
    if unknown:
        raise ValueError(f"unknown job(s) {', '.join(unknown)}; use {', '.join(JOBS)}")
    for job in JOBS:
        write_targets(directory, job, targets.get(job, []))
    config = render_config(str(directory / "targets"), [str(Path(rules_dir).resolve() / "*.yml")],
                           scrape_interval=scrape_interval, evaluation_interval=evaluation_interval)
    path = directory / "prometheus.yml"
    _write_atomic(path, "# Written by cli/monitoring.py (predmesh up); targets in ./targets/*.json\n"
                  + yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_argv(config: Path, data_dir: Path, addr: str = "127.0.0.1:9090", *,
                    binary: str | None = None, retention: str = "2d") -> list[str]:
    """The command line of a local Prometheus for this config (listening on addr, loopback by default)."""
    binary = binary or prometheus_binary()
    if not binary:
        raise FileNotFoundError("prometheus is not installed (Debian: apt-get install prometheus)")
    return [binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address={addr}", f"--storage.tsdb.retention.time={retention}",
            "--log.level=warn"]  # its start-up chatter would bury `predmesh up`'s own lines
