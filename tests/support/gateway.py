"""A real Envoy gateway (`python -m gateway`) as a child process on free ports, plus small HTTP helpers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import BinaryIO

import requests

from tests.support.procs import ROOT, free_port, retry_on_port_clash, wait_for


class GatewayProc:
    """`python -m gateway` with its own ports and work dir; upstreams are replica gRPC addresses."""

    def __init__(self, upstreams: list[str], work_dir: Path, env: dict[str, str] | None = None):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / "gateway.log"
        self.env = {
            **os.environ,
            "PREDMESH_GATEWAY_UPSTREAMS": ",".join(upstreams),
            "PREDMESH_GATEWAY_DIR": str(self.work_dir),
            "PREDMESH_GATEWAY_HC_INTERVAL_MS": "250",
            "PREDMESH_GATEWAY_LOG_LEVEL": "warn",
            "PYTHONUNBUFFERED": "1",
        }
        self._given = dict(env or {})
        self.tls = bool(self._given.get("PREDMESH_GATEWAY_TLS_CERT", self.env.get("PREDMESH_GATEWAY_TLS_CERT")))
        self._pick_ports()
        self.proc: subprocess.Popen | None = None
        self._log: BinaryIO | None = None

    def _pick_ports(self) -> None:
        """Envoy cannot report what it bound: ports from free_port() (start retries when one was taken first)."""
        self.port, self.admin_port, self.envoy_admin_port = free_port(), free_port(), free_port()
        self.env.update({
            "PREDMESH_GATEWAY_ADDR": f"127.0.0.1:{self.port}",
            "PREDMESH_GATEWAY_ADMIN_ADDR": f"127.0.0.1:{self.admin_port}",
            "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": f"127.0.0.1:{self.envoy_admin_port}",
            **self._given,
        })
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.admin_url = f"{scheme}://127.0.0.1:{self.admin_port}"
        self.envoy_admin = f"http://127.0.0.1:{self.envoy_admin_port}"

    @property
    def started(self) -> subprocess.Popen:
        """The running process (an error before start())."""
        assert self.proc is not None, "not started"
        return self.proc

    def start(self, healthy: int | None = None, timeout: float = 30.0) -> GatewayProc:
        """Start and wait until Envoy is LIVE and `healthy` upstream hosts (default: all) pass health checks."""
        return retry_on_port_clash(lambda: self._start(healthy, timeout), self._pick_ports)

    def _start(self, healthy: int | None, timeout: float) -> GatewayProc:
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        want = len(self.env["PREDMESH_GATEWAY_UPSTREAMS"].split(",")) if healthy is None else healthy
        try:
            wait_for(lambda: self.proc.poll() is not None
                     or ((self.envoy_get("/ready") or "").strip() == "LIVE" and self.healthy_hosts() >= want), timeout,
                     what=f"gateway with {want} healthy upstreams")
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"gateway not ready:\n{self.log()}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
        return self

    def envoy_get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(self.envoy_admin + path, timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            return None

    def healthy_hosts(self) -> int:
        """Upstream hosts Envoy currently considers healthy."""
        text = self.envoy_get("/clusters?format=json")
        if not text:
            return 0
        hosts = [h for c in json.loads(text).get("cluster_statuses", []) if c["name"] == "inference"
                 for h in c.get("host_statuses", [])]
        return sum(1 for h in hosts if h["health_status"].get("eds_health_status") == "HEALTHY"
                   and not any(k.startswith("failed") and v for k, v in h["health_status"].items()))

    def stat(self, name: str) -> int:
        text = self.envoy_get(f"/stats?filter=^{name}$") or ""
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def envoy_pid(self) -> int | None:
        """PID of the envoy process (the child of the launcher)."""
        out = subprocess.run(["pgrep", "-P", str(self.started.pid)], capture_output=True, text=True).stdout.split()
        return int(out[0]) if out else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pid = self.envoy_pid()
                if pid:
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> GatewayProc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def rest(method: str, url: str, session: requests.Session | None = None, **kwargs) -> requests.Response:
    """One HTTP call with a timeout (tests never hang on a socket)."""
    kwargs.setdefault("timeout", 5)
    return (session or requests).request(method, url, **kwargs)
