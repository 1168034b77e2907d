"""REST through Envoy vs direct gRPC (c=1 and c=32), and REST throughput with 2 replicas vs 1, in one run.

Usage: .venv/bin/python bench/gateway_bench.py [--duration 5]

Starts its own inference replicas and gateway on free loopback ports (model store, database and gateway files in
a temp dir), drives them with h2load (a C load tool: gRPC as a pre-encoded length-prefixed frame over h2c, REST
as JSON over HTTP/1.1), and prints throughput, p50/p99 latency and the ratios, all measured in this run. Every
point is checked: every h2load request must be HTTP 200, and the replicas' prediction counters must grow by the
number of requests (so gRPC calls that were answered with an error status would be caught).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import loadtools
from predmesh.v1 import inference_pb2
from predmesh.values import encode

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


class Mesh:
    """N replicas + a gateway, as child processes."""

    def __init__(self, tmp: Path, store: Path, replicas: int):
        self.procs: list[subprocess.Popen] = []
        self.replicas = []
        base = {**os.environ, "PREDMESH_MODEL_STORE": str(store), "PREDMESH_DRAIN_SECONDS": "0",
                "PREDMESH_LOG_LEVEL": "WARNING"}
        for i in range(replicas):
            grpc_port, metrics_port = loadtools.free_port(), loadtools.free_port()
            env = {**base, "PREDMESH_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
                   "PREDMESH_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
                   "PREDMESH_DATABASE_URL": f"sqlite:///{tmp}/r{replicas}-{i}.db",
                   "PREDMESH_SPOOL_DIR": str(tmp / f"spool-r{replicas}-{i}")}
            self.procs.append(subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train"],
                                               cwd=ROOT, env=env))
            self.replicas.append((f"127.0.0.1:{grpc_port}", metrics_port))
        for target, _ in self.replicas:
            loadtools.wait_for(lambda: self._serving(target), 60, f"replica {target}")
        self.rest_port, self.envoy_admin = loadtools.free_port(), loadtools.free_port()
        env = {**base, "PREDMESH_GATEWAY_ADDR": f"127.0.0.1:{self.rest_port}", "PREDMESH_GATEWAY_ADMIN_ADDR": "",
               "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": f"127.0.0.1:{self.envoy_admin}",
               "PREDMESH_GATEWAY_UPSTREAMS": ",".join(t for t, _ in self.replicas),
               "PREDMESH_GATEWAY_DIR": str(tmp / f"gw-{replicas}"), "PREDMESH_GATEWAY_RATE_LIMIT_RPS": "0"}
        self.procs.append(subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env))
        loadtools.wait_for(lambda: self._healthy_hosts() == replicas, 60, "gateway with all replicas healthy")

    @staticmethod
    def _serving(target: str) -> bool:
        with grpc.insecure_channel(target) as ch:
            return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1

    def _healthy_hosts(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.envoy_admin}/clusters?format=json", timeout=1) as r:
            clusters = json.load(r)["cluster_statuses"]
        return sum(1 for c in clusters if c["name"] == "inference" for h in c["host_statuses"]
                   if not any(k.startswith("failed") and v for k, v in h["health_status"].items()))

    def predictions(self) -> float:
        total = 0.0
        for _, port in self.replicas:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                total += sum(float(line.rpartition(" ")[2]) for line in r.read().decode().splitlines()
                             if line.startswith("predmesh_predictions_total{"))
        return total

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def h2load(url: str, body: Path, headers: list[str], concurrency: int, duration: float, h1: bool,
           log: Path) -> dict:
    """One closed-loop run; returns rps, p50/p99 ms and the status counts from h2load's per-request log."""
    argv = ["h2load", "-D", f"{int(duration)}", "--warm-up-time", "1", "-c", str(concurrency), "-m", "1", "-t", "1",
            "-d", str(body), "--log-file", str(log)]
    for h in headers:
        argv += ["-H", h]
    if h1:
        argv.append("--h1")
    subprocess.run([*argv, url], check=True, capture_output=True, text=True)
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r[1]] = statuses.get(r[1], 0) + 1
    latencies = sorted(int(r[2]) / 1000 for r in rows)
    return {"n": len(rows), "rps": len(rows) / duration, "statuses": statuses,
            "p50": statistics.median(latencies), "p99": latencies[min(len(latencies) - 1,
                                                                     int(0.99 * len(latencies)))]}


def run_point(mesh: Mesh, name: str, url: str, body: Path, headers: list[str], c: int, duration: float,
              h1: bool, tmp: Path) -> dict:
    before = mesh.predictions()
    slug = "".join(ch if ch.isalnum() else "-" for ch in name)
    log = tmp / f"{slug}-r{len(mesh.replicas)}-c{c}.log"
    log.unlink(missing_ok=True)  # h2load appends to an existing log
    result = h2load(url, body, headers, c, duration, h1, log)
    time.sleep(0.3)
    scored = mesh.predictions() - before
    # warm-up requests are not in the log but are scored: scored must be at least the logged count
    result["checked"] = result["statuses"] == {"200": result["n"]} and scored >= result["n"]
    print(f"  {name:<28} c={c:<3} {result['rps']:8.0f} req/s   p50 {result['p50']:6.2f} ms   "
          f"p99 {result['p99']:6.2f} ms   ({result['n']} requests, all OK and scored: {result['checked']})",
          flush=True)
    if not result["checked"]:
        print(f"    statuses {result['statuses']}, scored {scored:.0f}", flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per point (after 1 s warm-up)")
    args = parser.parse_args(argv)
    if not shutil.which("h2load"):
        sys.exit("h2load not found: apt-get install nghttp2-client (scripts/setup.sh does)")
    tmp = Path(tempfile.mkdtemp(prefix="predmesh-bench-"))
    store = tmp / "models"
    subprocess.run([sys.executable, "-m", "inference", "train", "--model", "iris", "--estimator", "lr"], cwd=ROOT,
                   env={**os.environ, "PREDMESH_MODEL_STORE": str(store)}, check=True, capture_output=True)
    message = inference_pb2.PredictRequest(model="iris", features=encode(ROW)).SerializeToString()
    grpc_body, rest_body = tmp / "predict.grpc", tmp / "predict.json"
    grpc_body.write_bytes(struct.pack(">?I", False, len(message)) + message)
    rest_body.write_text(json.dumps({"features": ROW}))
    grpc_headers = ["content-type: application/grpc", "te: trailers"]
    rest_headers = ["content-type: application/json"]
    results = {}
    try:
        print(f"predmesh gateway bench: {args.duration:g} s per point, h2load closed loop, 2-core machine shared "
              "by the load tool, Envoy (--concurrency 1) and the server(s)", flush=True)
        mesh = Mesh(tmp, store, 1)
        try:
            grpc_url = f"http://{mesh.replicas[0][0]}/predmesh.v1.InferenceService/Predict"
            rest_url = f"http://127.0.0.1:{mesh.rest_port}/v1/models/iris:predict"
            print("1 replica:")
            for c in (1, 32):
                results[("grpc", c)] = run_point(mesh, "gRPC direct", grpc_url, grpc_body, grpc_headers, c,
                                                 args.duration, False, tmp)
                results[("rest", c)] = run_point(mesh, "REST via Envoy (HTTP/1.1)", rest_url, rest_body,
                                                 rest_headers, c, args.duration, True, tmp)
        finally:
            mesh.close()
        mesh = Mesh(tmp, store, 2)
        try:
            print("2 replicas:")
            rest_url = f"http://127.0.0.1:{mesh.rest_port}/v1/models/iris:predict"
            results[("rest2", 32)] = run_point(mesh, "REST via Envoy (HTTP/1.1)", rest_url, rest_body,
                                               rest_headers, 32, args.duration, True, tmp)
        finally:
            mesh.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ratios (same run):")
    for c in (1, 32):
        g, r = results[("grpc", c)], results[("rest", c)]
        print(f"  c={c:<3} REST/gRPC throughput {r['rps'] / g['rps']:.2f}x   p50 {r['p50'] / g['p50']:.2f}x   "
              f"p99 {r['p99'] / g['p99']:.2f}x")
    one, two = results[("rest", 32)], results[("rest2", 32)]
    print(f"  REST c=32: 2 replicas / 1 replica throughput {two['rps'] / one['rps']:.2f}x   "
          f"p99 {two['p99'] / one['p99']:.2f}x")
    return 0 if all(r["checked"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
