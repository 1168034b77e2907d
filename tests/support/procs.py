"""Real processes for integration tests: ports, an inference server subprocess, readiness polling."""
from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token-5f1c"
READONLY_TOKEN = "test-readonly-token-9a2e"
WRITER_TOKEN = "test-writer-token-3d7b"
T = TypeVar("T")


def free_port() -> int:
    """A port for a child that cannot bind port 0 and report what it bound (Envoy, luigid, PostgreSQL, several
    server processes sharing one port): free now, and picked below the kernel's ephemeral range, where port-0 binds
    and the source ports of outgoing connections come from, so those cannot take it. Another process may still
    bind it before the child does: start such a child with `retry_on_port_clash`. Prefer port 0 wherever the child
    reports its port (ServerProc does)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(20000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port found in 20000-{low}")


# What a child says when its port was taken between free_port() and its bind (server, Envoy, Tornado, PostgreSQL).
PORT_CLASH = re.compile(r"address already in use|is already in use|EADDRINUSE|could not bind", re.IGNORECASE)


def retry_on_port_clash(start: Callable[[], T], repick: Callable[[], None], attempts: int = 3) -> T:
    """start() a child on ports from free_port(); when it fails because another process took one of them first
    (start raises with the child's log, which names the clash), repick() the ports and try again."""
    for attempt in range(attempts):
        try:
            return start()
        except (RuntimeError, AssertionError, subprocess.CalledProcessError) as exc:
            text = f"{exc}\n{getattr(exc, 'stdout', '') or ''}\n{getattr(exc, 'stderr', '') or ''}"
            if attempt == attempts - 1 or not PORT_CLASH.search(text):
                raise
            repick()
    raise AssertionError("unreachable")


@contextlib.contextmanager
def closed_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port where nothing listens, for as long as the block runs: bound (so no other process can take it) but not
    listening, so a connection to it is refused at once. Race-free, unlike a port found free and released."""
    with socket.socket() as s:
        s.bind((host, 0))
        yield s.getsockname()[1]


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


class HealthProbe:
    """One channel to a server's health service, connected when opened, so that timing what follows an event (a
    SIGTERM) counts neither connection set-up nor a loaded machine's first-call costs against the server."""

    def __init__(self, target: str, connect_timeout: float = 10.0):
        self.channel = grpc.insecure_channel(target)
        grpc.channel_ready_future(self.channel).result(timeout=connect_timeout)
        self.stub = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> HealthProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def first_not_serving(self, since: float, alive: Callable[[], bool], give_up_after: float = 15.0,
                          check_timeout: float = 3.0) -> float | None:
        """When (time.monotonic()) the first check that answered NOT_SERVING was sent, polling from now while
        alive() holds; None if none did. Each check is credited with its send time, so a slow answer on a loaded
        machine is not counted against the server (and gets check_timeout to arrive)."""
        while alive() and time.monotonic() - since < give_up_after:
            sent = time.monotonic()
            try:
                status = self.stub.Check(health_pb2.HealthCheckRequest(), timeout=check_timeout).status
            except grpc.RpcError:
                status = None
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                return sent
            time.sleep(0.02)
        return None


# The server's start-up line names the ports it bound (single process, or the supervisor of several).
BOUND = re.compile(r"(?:listening on|processes sharing) \S+:(\d+)(?: \(gRPC\))?; metrics: (?:\S+:(\d+)/metrics|off)")


class ServerProc:
    """`python -m inference serve` as a child process with its own ports, store and log file.

    Without grpc_port the server binds port 0 for gRPC and metrics and the ports are read from its start-up line
    (needs PREDMESH_LOG_LEVEL at INFO or below): no port is picked and released beforehand, so none can be taken
    meanwhile. Several processes (PREDMESH_PROCESSES > 1) need a fixed gRPC port: one from free_port(), and the
    start is retried if another process took it first. `target` and the ports are known once started."""

    def __init__(self, model_store: Path, log_path: Path, env: dict[str, str] | None = None,
                 grpc_port: int | None = None):
        self.fixed_port = grpc_port is not None or "PREDMESH_GRPC_ADDR" in (env or {})
        self.grpc_port = grpc_port or 0
        self.metrics_port = 0
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.log_path = Path(log_path)
        self.env = {
            # a token or URL file the developer's shell exports would clash with the values set here (both a
            # variable and its _FILE are refused): tests that want a file pass it in env
            **{k: v for k, v in os.environ.items() if not (k.startswith("PREDMESH_") and k.endswith("_FILE"))},
            "PREDMESH_GRPC_ADDR": self.target,
            "PREDMESH_METRICS_ADDR": "127.0.0.1:0",
            "PREDMESH_MODEL_STORE": str(model_store),
            "PREDMESH_ADMIN_TOKEN": ADMIN_TOKEN,
            "PREDMESH_READONLY_TOKEN": READONLY_TOKEN,
            "PREDMESH_WRITER_TOKEN": WRITER_TOKEN,
            "PREDMESH_DRAIN_SECONDS": "0",
            "PREDMESH_PROCESSES": "1",  # one process (the default is one per CPU); tests that want more say so
            # persistence stays inside the test's directory (never the repository's var/)
            "PREDMESH_DATABASE_URL": f"sqlite:///{self.log_path.parent / 'predmesh.db'}",
            "PREDMESH_SPOOL_DIR": str(self.log_path.parent / "spool"),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self._log: BinaryIO | None = None

    @property
    def started(self) -> subprocess.Popen:
        """The running process (an error before start())."""
        assert self.proc is not None, "not started"
        return self.proc


    def _processes(self) -> int:
        value = self.env.get("PREDMESH_PROCESSES", "auto")
        if value.isdigit():
            return int(value)
        return len(os.sched_getaffinity(0)) if value in ("", "auto") else 1  # a bad value: the server refuses it

    def spawn(self, timeout: float = 30.0) -> None:
        """Start the process and learn the ports it bound (from its start-up line); readiness is the caller's."""
        if not self.fixed_port:
            self.grpc_port = free_port() if self._processes() > 1 else 0
            self.target = self.env["PREDMESH_GRPC_ADDR"] = f"127.0.0.1:{self.grpc_port}"
        if self._log is not None:
            self._log.close()
        self._log = log = open(self.log_path, "ab")
        offset = log.tell()
        self.proc = proc = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train"], cwd=ROOT,
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT)

        def bound():
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return BOUND.search(fh.read().decode(errors="replace"))
        try:
            found = wait_for(lambda: bound() or proc.poll() is not None, timeout,
                             what=f"the server's start-up line in {self.log_path}")
        except TimeoutError:
            self.kill()
            raise
        if isinstance(found, re.Match):
            self.grpc_port = int(found[1])
            self.metrics_port = int(found[2] or 0)
            self.target = f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 30.0) -> ServerProc:
        def once() -> ServerProc:
            self.spawn(timeout)
            try:
                wait_for(lambda: self.started.poll() is not None
                         or health_status(self.target) == health_pb2.HealthCheckResponse.SERVING,
                         timeout, what=f"server on {self.target}")
            except TimeoutError:
                self.kill()
                raise
            if self.started.poll() is not None:
                raise RuntimeError(f"server exited with {self.started.returncode}:\n{self.log()}")
            return self
        if self.fixed_port or self._processes() == 1:
            return once()
        return retry_on_port_clash(once, lambda: None)  # spawn() picks another port

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

    def metric(self, name: str, labels: str = "") -> float | None:
        """A sample of the server's /metrics (name, and its labels as written there, e.g. 'model="iris"'); None
        when absent (as ConsumerProc.metric)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith(name + (f"{{{labels}}}" if labels else "") + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def __enter__(self) -> ServerProc:
        return self.start()

    def close(self) -> None:
        """Kill the process if it still runs and close its log file (what leaving a `with` block does)."""
        self.kill()
        if self._log is not None:
            self._log.close()

    def __exit__(self, *exc) -> None:
        self.close()

class _Bearer(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, token: str):
        self.metadata = (("authorization", f"Bearer {token}"),)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        details = client_call_details._replace(metadata=(*(client_call_details.metadata or ()), *self.metadata))
        return continuation(details, request)


def with_token(channel: grpc.Channel, token: str = WRITER_TOKEN) -> grpc.Channel:
    """The channel with `authorization: Bearer <token>` on every unary call (raw stubs that write monitoring
    data: feedback, batch runs)."""
    return grpc.intercept_channel(channel, _Bearer(token))
