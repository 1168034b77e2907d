"""Multi-process serving (PREDMESH_PROCESSES=N > 1): N server processes share the gRPC port (SO_REUSEPORT).

This supervisor starts N `python -m inference serve --worker` children, serves one /metrics endpoint that
aggregates them (prometheus_client multiprocess mode, PROMETHEUS_MULTIPROC_DIR), restarts a child that dies,
and on SIGTERM/SIGINT forwards SIGTERM to every child (each drains: health NOT_SERVING, finish in-flight calls)
and exits when all have stopped. Reloads reach every child through serving pointers (inference/models/pointers.py).

Each child is pinned to one CPU of the supervisor's allowed set, round robin (PREDMESH_PIN_WORKERS, on by default
on Linux). A process runs Python on one core at a time anyway (the GIL); left to float, its handler threads,
gRPC's poller and the lock holder are spread over every core by the scheduler, and each GIL hand-off then
crosses cores (cold caches, a cross-CPU wake-up) and often waits for a core busy with another process. Kept on
one CPU, the hand-offs stay local: bench/README.md shows the effect.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from inference.metrics import GroupCollector
from inference.settings import ServerSettings
from predmesh.env import ConfigError, split_addr

log = logging.getLogger(__name__)
RESTART_BACKOFF_S = 1.0
PR_SET_PDEATHSIG = 1
CRASH_LOOP = 3  # a worker that dies this many times in a row within EARLY_EXIT_S of its start stops the group
EARLY_EXIT_S = 10.0


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM (a graceful drain) when the supervisor dies, even by SIGKILL (Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own SIGTERM handling still applies
        pass


def cpu_plan(processes: int, pin: bool) -> list[set[int] | None]:
    """The CPU set of each worker: one CPU each, round robin over the CPUs this process may use; None (no
    pinning) when switched off, unsupported, or only one CPU is allowed."""
    allowed = sorted(os.sched_getaffinity(0)) if pin and hasattr(os, "sched_getaffinity") else []
    if len(allowed) < 2:
        return [None] * processes
    return [{allowed[i % len(allowed)]} for i in range(processes)]


def _child_setup(cpus: set[int] | None):
    def setup() -> None:
        _die_with_parent()
        if cpus is not None:
            os.sched_setaffinity(0, cpus)  # before exec: every thread the server starts inherits it
    return setup


class WorkerGroup:
    """Starts, watches and stops the worker processes."""

    def __init__(self, settings: ServerSettings, environ: dict[str, str], spool_drain_s: float = 0.0):
        if split_addr(settings.grpc_addr)[1] == 0:
            raise ConfigError("PREDMESH_PROCESSES > 1 needs a fixed port in PREDMESH_GRPC_ADDR (not 0)")
        self.settings = settings
        self.spool_drain_s = spool_drain_s  # a child's stop also drains its spool for up to this long
        own_dir = not environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.metrics_dir = Path(environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="predmesh-prom-"))
        self._own_metrics_dir = own_dir
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.metrics_dir.glob("*.db"):  # counters from an earlier run must not be added again
            stale.unlink()
        # The resolved count: a child pinned to one CPU would read `auto` as 1 and not share the port.
        self.env = {**environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir), "PREDMESH_METRICS_ADDR": "",
                    "PREDMESH_PROCESSES": str(settings.processes)}
        self.children: list[subprocess.Popen | None] = [None] * settings.processes
        self.cpus = cpu_plan(settings.processes, settings.pin_workers)
        self._started_at = [0.0] * settings.processes
        self._early_exits = [0] * settings.processes
        self.failed = False
        self._stopping = threading.Event()
        self._metrics_server: WSGIServer | None = None  # the group's /metrics, once started

    def _spawn(self, index: int) -> None:
        child = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train", "--worker"],
                                 env=self.env, preexec_fn=_child_setup(self.cpus[index]))
        self.children[index] = child
        self._started_at[index] = time.monotonic()
        cpus = self.cpus[index]
        log.info("worker %d started (pid %d%s)", index, child.pid, f", on CPU {min(cpus)}" if cpus else "")

    def start(self) -> str:
        """Start the children and the group's /metrics endpoint; returns its URL (with the bound port) or "off"."""
        metrics = "off"
        if self.settings.metrics_addr:
            registry = CollectorRegistry()
            registry.register(GroupCollector(str(self.metrics_dir), self.live_pids))
            host, port = split_addr(self.settings.metrics_addr)
            httpd, _ = start_http_server(port, addr=host, registry=registry)
            self._metrics_server = httpd
            metrics = f"http://{host}:{httpd.server_port}/metrics"
        for index in range(len(self.children)):
            self._spawn(index)
        return metrics

    def live_pids(self) -> list[int]:
        return [c.pid for c in self.children if c is not None and c.poll() is None]

    def stop(self) -> None:
        """Forward SIGTERM to every child (each drains on its own); the watch loop then returns."""
        self._stopping.set()
        for child in self.children:
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def watch(self) -> int:
        """Restart children that die until stop(); then wait for all of them. Returns the exit code."""
        while not self._stopping.wait(0.2):
            for index, child in enumerate(self.children):
                if child is not None and child.poll() is not None and not self._stopping.is_set():
                    log.error("worker %d (pid %d) exited with %s; restarting it", index, child.pid, child.returncode)
                    multiprocess.mark_process_dead(child.pid, str(self.metrics_dir))
                    early = time.monotonic() - self._started_at[index] < EARLY_EXIT_S
                    self._early_exits[index] = self._early_exits[index] + 1 if early else 0
                    if self._early_exits[index] >= CRASH_LOOP:
                        log.error("worker %d keeps dying right after start; stopping the group", index)
                        self.failed = True
                        self.stop()
                        break
                    time.sleep(RESTART_BACKOFF_S)
                    if not self._stopping.is_set():
                        self._spawn(index)
        deadline = (time.monotonic() + self.settings.drain_seconds + self.settings.grace_seconds + self.spool_drain_s
                    + 10)
        code = 0
        for child in self.children:
            if child is None:
                continue
            try:
                rc = child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time; killing it", child.pid)
                child.kill()
                rc = child.wait()
            code = code or (rc if rc and rc > 0 else 0)
            multiprocess.mark_process_dead(child.pid, str(self.metrics_dir))
        if self._metrics_server is not None:
            # /metrics stops answering before its files go: a scrape then finds the endpoint down, never counters
            # read back to zero (which Prometheus would take for a restart and count again)
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        if self._own_metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return 1 if self.failed else code


def run(settings: ServerSettings, environ: dict[str, str] | None = None, spool_drain_s: float = 0.0) -> int:
    """Run the group until SIGTERM/SIGINT; returns the exit code."""
    group = WorkerGroup(settings, dict(os.environ if environ is None else environ), spool_drain_s)

    def on_signal(signum, frame):
        log.info("received %s: stopping %d workers gracefully", signal.Signals(signum).name, len(group.children))
        group.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    metrics = group.start()
    log.info("predmesh inference: %d processes sharing %s; metrics: %s", len(group.children), settings.grpc_addr,
             metrics)
    code = group.watch()
    log.info("all workers stopped")
    return code
