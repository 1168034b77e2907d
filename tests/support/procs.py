"""Real processes for integration tests: free ports, an inference server subprocess, readiness polling."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token-5f1c"
READONLY_TOKEN = "test-readonly-token-9a2e"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen | None, timeout: float = 20.0) -> None:
    """SIGTERM a child and wait for it; SIGKILL it if it is still there after timeout."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def health_status(target: str, service: str = "", timeout: float = 1.0) -> int | None:
    """The grpc.health.v1 status of a service, or None if the server does not answer."""
    with grpc.insecure_channel(target) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout).status
        except grpc.RpcError:
            return None


class ServerProc:
    """`python -m inference serve` as a child process with its own ports, store and log file."""

    def __init__(self, model_store: Path, log_path: Path, env: dict[str, str] | None = None,
                 grpc_port: int | None = None):
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = free_port()
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = Path(log_path)
        self.env = {
            **os.environ,
            "PREDMESH_GRPC_ADDR": self.target,
            "PREDMESH_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            "PREDMESH_MODEL_STORE": str(model_store),
            "PREDMESH_ADMIN_TOKEN": ADMIN_TOKEN,
            "PREDMESH_READONLY_TOKEN": READONLY_TOKEN,
            "PREDMESH_DRAIN_SECONDS": "0",
            "PREDMESH_PROCESSES": "1",  # one process (the default is one per CPU); tests that want more say so
            # persistence stays inside the test's directory (never the repository's var/)
            "PREDMESH_DATABASE_URL": f"sqlite:///{self.log_path.parent / 'predmesh.db'}",
            "PREDMESH_SPOOL_DIR": str(self.log_path.parent / "spool"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None

    @property
    def started(self) -> subprocess.Popen:
        """The running process (an error before start())."""
        assert self.proc is not None, "not started"
        return self.proc

    def start(self, timeout: float = 30.0) -> ServerProc:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train"], cwd=ROOT,
                                     env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: self.proc.poll() is not None
                     or health_status(self.target) == health_pb2.HealthCheckResponse.SERVING,
                     timeout, what=f"server on {self.target}")
        except TimeoutError:
            self.kill()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
        return self

    @property
    def pid(self) -> int:
        return self.started.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.alive():
            self.started.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.started.kill()
        if self.proc is not None:
            self.proc.wait()

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.started.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServerProc:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
        self._log.close()
