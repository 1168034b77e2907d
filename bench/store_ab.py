"""The storing path of two checkouts side by side (issue 26: <= 10% throughput regression with the aggregates):
rounds alternating the checkouts, the order flipped every round, each point on a fresh PostgreSQL schema.

Usage:  .venv/bin/python bench/store_ab.py iris  --trees OLD_DIR,NEW_DIR [--rounds 4] [--seconds 10] [--concurrency 32]
        .venv/bin/python bench/store_ab.py batch --trees OLD_DIR,NEW_DIR [--rounds 4] [--rows 200000]

Each checkout runs its own code (cwd and PYTHONPATH = the checkout) with this interpreter. `iris`: per point, a
fresh schema, iris-lr trained by that checkout, `python -m inference serve` at its defaults (no PREDMESH_* tuning:
one process per CPU, native kernels, durable persistence) with metrics on, OIP gRPC ModelInfer driven by h2load
closed loop as bench/compare_mlserver.py drives predmesh (1 s warm-up, then --seconds), then every answered
ModelInfer (the server's own grpc_server_handled_total, OK) must be a row in PostgreSQL once the writer settles.
`batch`: per point, the checkout's own bench/batch_bench.py with --rounds 1 (its own fresh schema, durable
persistence, every row counted in PostgreSQL); its round line is parsed. Prints every point with the 1-minute
load average before it, the per-round ratio second/first, the median and the worst round.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadtools
from bench.compare_mlserver import OIP_METHOD, oip_request
from bench.persistence import DEFAULT_PG, Schema, cpu_seconds, settle


def metric(port: int, name: str, having: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and all(h in line for h in having.split("|")))


def iris_point(tree: Path, pg_url: str, concurrency: int, seconds: float) -> dict:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    work = Path(tempfile.mkdtemp(prefix="predmesh-storeab-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREDMESH_", "PROMETHEUS_"))}
    env["PYTHONPATH"] = str(tree)
    subprocess.run([sys.executable, "-m", "inference", "train", "--model", "iris-lr", "--estimator", "lr"],
                   cwd=tree, env={**env, "PREDMESH_MODEL_STORE": str(work / "store")}, check=True,
                   capture_output=True)
    schema = Schema(pg_url)
    port, metrics_port = loadtools.free_port(), loadtools.free_port()
    target = f"127.0.0.1:{port}"
    env.update({"PREDMESH_GRPC_ADDR": target, "PREDMESH_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
                "PREDMESH_MODEL_STORE": str(work / "store"),
                "PREDMESH_DATABASE_URL": f"{schema.url}&application_name={schema.name}",
                "PREDMESH_SPOOL_DIR": str(work / "spool"), "PREDMESH_LOG_LEVEL": "WARNING"})
    proc = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train"], cwd=tree, env=env,
                            stdout=open(work / "server.log", "ab"), stderr=subprocess.STDOUT)
    try:
        def serving() -> bool:
            with grpc.insecure_channel(target) as ch:
                return health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=1).status == 1
        loadtools.wait_for(serving, 90, f"{tree} to serve")
        loadtools.check_grpc(target, OIP_METHOD, oip_request("iris-lr", mlserver=False))
        def backends() -> list[int]:  # the server's PostgreSQL connections (by the application_name it was given)
            return [pid for (pid,) in schema._sql(
                f"SELECT pid FROM pg_stat_activity WHERE application_name = '{schema.name}'")]
        handled0 = metric(metrics_port, "grpc_server_handled_total", 'grpc_method="ModelInfer"')
        cpu0, pg0 = cpu_seconds(proc.pid), {pid: cpu_seconds(pid) for pid in backends()}
        point = loadtools.h2load(target, OIP_METHOD, loadtools.grpc_frame(oip_request("iris-lr", mlserver=False)),
                                 concurrency, seconds)
        stored = settle(schema, 120)
        answered = metric(metrics_port, "grpc_server_handled_total", 'grpc_method="ModelInfer"|grpc_code="OK"')
        handled = metric(metrics_port, "grpc_server_handled_total", 'grpc_method="ModelInfer"')
        calls = max(1.0, handled - handled0)
        server_us = (cpu_seconds(proc.pid) - cpu0) / calls * 1e6
        pg_us = sum(cpu_seconds(pid) - pg0.get(pid, 0.0) for pid in backends()) / calls * 1e6
        # every OK answer must be a row; a call h2load abandons at its deadline may be stored and then cancelled,
        # so rows may exceed the OK answers by at most the calls that ended otherwise (<= concurrency)
        return {"rps": point.rps, "p50": point.p50_ms, "p99": point.p99_ms, "failed": point.failed,
                "answered": int(answered), "handled": int(handled), "stored": stored,
                "ok": answered <= stored <= handled, "server_us": server_us, "pg_us": pg_us}
    finally:
        loadtools.stop(proc)
        schema.drop()
        shutil.rmtree(work, ignore_errors=True)


ROUND = re.compile(r"round 1: (\d+) rows in ([\d.]+) s = ([\d,]+) rows/s end to end.*?stored (\d+) \((\w+)\).*?"
                   r"CPU: server ([\d.]+) s, client ([\d.]+) s, PostgreSQL backends ([\d.]+) s")


def batch_point(tree: Path, pg_url: str, rows: int, log: Path | None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "PREDMESH_BENCH_PG_URL": pg_url}
    out = subprocess.run([sys.executable, "bench/batch_bench.py", "--rows", str(rows), "--rounds", "1"], cwd=tree,
                         env=env, capture_output=True, text=True, timeout=900)
    if log is not None:  # the bench's own output: phases and CPU per row
        with open(log, "a") as f:
            f.write(f"== {tree}\n{out.stdout}\n")
    match = ROUND.search(out.stdout)
    if not match:
        raise SystemExit(f"{tree}: batch_bench gave no round line (exit {out.returncode}):\n{out.stdout}\n"
                         f"{out.stderr[-3000:]}")
    scored, seconds, rate, stored, check, server, _client, pg = match.groups()
    return {"rps": float(rate.replace(",", "")), "seconds": float(seconds), "stored": int(stored),
            "answered": int(scored), "check": check, "pg_per_100k": float(pg) / int(scored) * 1e5,
            "server_per_100k": float(server) / int(scored) * 1e5}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("iris", "batch"))
    parser.add_argument("--trees", required=True, help="OLD_DIR,NEW_DIR")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--log", type=Path, help="batch: append each bench's own output (phases) to this file")
    parser.add_argument("--pg-url", default=os.environ.get("PREDMESH_BENCH_PG_URL")
                        or os.environ.get("PREDMESH_TEST_PG_URL", DEFAULT_PG))
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    names = [t.name for t in trees]
    results: dict[str, list[dict]] = {n: [] for n in names}
    for rnd in range(args.rounds):
        order = list(zip(names, trees))
        if rnd % 2:
            order.reverse()
        for name, tree in order:
            load = os.getloadavg()
            point = (iris_point(tree, args.pg_url, args.concurrency, args.seconds) if args.what == "iris"
                     else batch_point(tree, args.pg_url, args.rows, args.log))
            point["load"] = load
            results[name].append(point)
            extra = (f"p50 {point['p50']:.2f} ms p99 {point['p99']:.2f} ms failed {point['failed']}, CPU per call "
                     f"server {point['server_us']:.0f} us PostgreSQL {point['pg_us']:.0f} us"
                     if args.what == "iris" else
                     f"{point['seconds']:.1f} s, PostgreSQL CPU {point['pg_per_100k']:.2f} s/100k rows, "
                     f"server CPU {point['server_per_100k']:.2f} s/100k rows")
            ok = "ok" if point.get("ok", point["stored"] == point["answered"]) else "MISMATCH"
            if "handled" in point:
                ok += f", ModelInfer calls handled {point['handled']}"
            print(f"round {rnd + 1} {name:<10} {point['rps']:9,.0f}/s  {extra}  answered {point['answered']} "
                  f"stored {point['stored']} ({ok})  load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    first, second = names
    ratios = [b["rps"] / a["rps"] for a, b in zip(results[first], results[second])]
    print("\nratio " + second + "/" + first + " per round: " + ", ".join(f"{r:.3f}" for r in ratios))
    for name in names:
        rates = [p["rps"] for p in results[name]]
        print(f"{name}: median {statistics.median(rates):,.0f}/s, range {min(rates):,.0f}-{max(rates):,.0f}")
    print(f"median ratio {statistics.median(ratios):.3f}, worst round {min(ratios):.3f}")
    if args.what == "iris":
        for key in ("server_us", "pg_us"):
            cpu = {n: statistics.median(p[key] for p in results[n]) for n in names}
            print(f"{key} per call (median): " + ", ".join(f"{n} {v:.0f}" for n, v in cpu.items()))
    if args.what == "batch":
        pg = {n: statistics.median(p["pg_per_100k"] for p in results[n]) for n in names}
        print("PostgreSQL CPU per 100k rows (median): " + ", ".join(f"{n} {v:.2f} s" for n, v in pg.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
