"""`predmesh up`: run the local mesh as child processes; Ctrl-C (or SIGTERM) stops everything it started."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

from predmesh.logs import setup_logging


@dataclass
class Part:
    """One child process of the mesh."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None


def start(part: Part) -> None:
    part.proc = subprocess.Popen(part.argv, env={**os.environ, **part.env})


def stop_all(parts: list[Part], timeout: float = 15.0) -> None:
    """SIGTERM every running child (reverse start order), wait, then SIGKILL stragglers."""
    for part in reversed(parts):
        if part.proc and part.proc.poll() is None:
            part.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for part in parts:
        if part.proc:
            try:
                part.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                part.proc.kill()
                part.proc.wait()


def _next_addr(addr: str, offset: int) -> str:
    host, _, port = addr.rpartition(":")
    return f"{host}:{int(port) + offset}"


def replica_addrs(environ, replicas: int) -> list[tuple[str, str]]:
    """(gRPC, metrics) address of each replica: replica 1 on PREDMESH_GRPC_ADDR / PREDMESH_METRICS_ADDR
    (defaults 127.0.0.1:50051 / :9101), replica k on those ports + k-1. Empty metrics address: metrics off."""
    grpc_addr = environ.get("PREDMESH_GRPC_ADDR") or "127.0.0.1:50051"
    metrics_addr = environ.get("PREDMESH_METRICS_ADDR", "127.0.0.1:9101")
    return [(_next_addr(grpc_addr, i), _next_addr(metrics_addr, i) if metrics_addr else "")
            for i in range(replicas)]


def plan(args: argparse.Namespace, environ=os.environ) -> list[Part]:
    """The processes of the local mesh: N inference replicas, then the Envoy gateway in front of them."""
    py = sys.executable
    addrs = replica_addrs(environ, args.replicas)
    parts = [Part(f"inference-{i + 1}" if args.replicas > 1 else "inference",
                  [py, "-m", "inference", "serve", "--no-train"],
                  {"PREDMESH_GRPC_ADDR": grpc_addr, "PREDMESH_METRICS_ADDR": metrics_addr})
             for i, (grpc_addr, metrics_addr) in enumerate(addrs)]
    if not args.no_gateway:
        parts.append(Part("gateway", [py, "-m", "gateway"],
                          {"PREDMESH_GATEWAY_UPSTREAMS": ",".join(g for g, _ in addrs)}))
    return parts


def train_if_empty(environ) -> None:
    """Train the demo model once, before the replicas start (they must not race to train it)."""
    from inference.settings import ServerSettings
    from inference.store import ModelStore

    settings = ServerSettings.from_env(environ)
    if not ModelStore(settings.model_store, settings.signing_key).models():
        subprocess.run([sys.executable, "-m", "inference", "train"], env=dict(environ), check=True)


def wait_gateway(environ, part: Part, stopping=lambda: False, timeout: float = 60.0) -> bool:
    """True once Envoy reports LIVE on its admin /ready (False if it exits, we are stopping, or time runs out)."""
    from gateway.settings import GatewaySettings

    settings = GatewaySettings.from_env({**environ, **part.env})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and part.proc.poll() is None and not stopping():
        try:
            with urllib.request.urlopen(f"http://{settings.envoy_admin_addr}/ready", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def describe(environ, parts: list[Part]) -> str:
    """Where each part listens, for the operator."""
    lines = []
    for part in parts:
        if part.name.startswith("inference"):
            metrics = part.env["PREDMESH_METRICS_ADDR"]
            lines.append(f"  {part.name}: gRPC {part.env['PREDMESH_GRPC_ADDR']}"
                         + (f", metrics http://{metrics}/metrics" if metrics else ""))
        elif part.name == "gateway":
            from gateway.config import OPENAPI_PATH
            from gateway.settings import GatewaySettings

            s = GatewaySettings.from_env({**environ, **part.env})
            lines.append(f"  gateway: REST {s.public_url}/v1/models  (OpenAPI {s.public_url}{OPENAPI_PATH}, "
                         f"work files in {s.work_dir})")
            if s.admin_url:
                lines.append(f"  gateway: admin REST {s.admin_url} (ModelAdminService, loopback)")
            lines.append(f"  gateway: Envoy admin/stats http://{s.envoy_admin_addr}/stats/prometheus")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="predmesh up", description=__doc__)
    parser.add_argument("--replicas", type=int, default=1,
                        help="inference replicas behind the gateway (default 1); replica k listens on "
                             "PREDMESH_GRPC_ADDR's port + k-1")
    parser.add_argument("--no-gateway", action="store_true", help="do not start the Envoy REST gateway")
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    setup_logging()
    train_if_empty(os.environ)
    parts = plan(args)
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for part in parts:
        start(part)
    gateway = next((p for p in parts if p.name == "gateway"), None)
    if gateway is not None and not wait_gateway(os.environ, gateway, lambda: stopping):
        if not stopping:
            print("predmesh up: the gateway did not become ready; stopping the mesh", file=sys.stderr, flush=True)
        stop_all(parts)
        return 0 if stopping else 1
    print("predmesh up: started " + ", ".join(p.name for p in parts) + "; Ctrl-C stops everything\n"
          + describe(os.environ, parts), flush=True)
    code = 0
    try:
        while not stopping:
            for part in parts:
                if part.proc.poll() is not None:
                    print(f"predmesh up: {part.name} exited with {part.proc.returncode}; stopping the mesh",
                          file=sys.stderr, flush=True)
                    stopping, code = True, 1
            time.sleep(0.2)
    finally:
        stop_all(parts)
    return code
