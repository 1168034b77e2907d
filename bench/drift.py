"""Cost of drift tracking: Predict throughput with PREDMESH_DRIFT=1 against PREDMESH_DRIFT=0, as a ratio.

Usage:  .venv/bin/python bench/drift.py [--seconds 8] [--rounds 5] [--concurrency 32] [--processes 1]

For each round it starts `python -m inference serve` twice (drift on, drift off, in alternating order;
persistence off so only drift differs), drives InferenceService/Predict closed-loop with h2load (one
pre-encoded row per request), and reports infer/s, p50/p99 and server CPU per request. The verdict is on the
median of the per-round paired ratios (drift on / drift off), so a change in the machine's speed between rounds
cancels. Target: drift tracking costs <= 5% of throughput.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadtools
from bench.persistence import cpu_seconds, h2load, serve


def start_server(store: Path, drift: bool, processes: int, log: Path, metrics_port: int):
    port = loadtools.free_port()
    env = {**os.environ, "PREDMESH_GRPC_ADDR": f"127.0.0.1:{port}",
           "PREDMESH_METRICS_ADDR": f"127.0.0.1:{metrics_port}", "PREDMESH_MODEL_STORE": str(store),
           "PREDMESH_PERSISTENCE": "off", "PREDMESH_DATABASE_URL": f"sqlite:///{log.parent / 'bench.db'}",
           "PREDMESH_DRIFT": "1" if drift else "0", "PREDMESH_PROCESSES": str(processes),
           "PREDMESH_DRAIN_SECONDS": "0", "PREDMESH_LOG_LEVEL": "WARNING"}
    return serve(env, f"127.0.0.1:{port}", log, "server", 90)


def window_rows(metrics_port: int) -> float:
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("predmesh_drift_window_rows{"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=1, help="PREDMESH_PROCESSES of the server")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is missing: apt-get install nghttp2-client (scripts/setup.sh installs it)")
    work = Path(tempfile.mkdtemp(prefix="predmesh-bench-drift-"))
    store = work / "models"
    subprocess.run([sys.executable, "-m", "inference", "train", "--model", "iris", "--estimator", "lr"], cwd=ROOT,
                   env={**os.environ, "PREDMESH_MODEL_STORE": str(store)}, check=True, capture_output=True)
    print(f"Predict, 1 row/request, h2load closed loop c={args.concurrency}, {args.warmup:g} s warm-up + "
          f"{args.seconds:g} s per point, {args.rounds} rounds, persistence off, server processes={args.processes}")
    results: dict[bool, list] = {True: [], False: []}
    for rnd in range(args.rounds):
        for drift in ((True, False) if rnd % 2 == 0 else (False, True)):
            metrics_port = loadtools.free_port()
            proc, target = start_server(store, drift, args.processes, work / "server.log", metrics_port)
            cpu0 = []
            timer = threading.Timer(args.warmup, lambda: cpu0.append(cpu_seconds(proc.pid)))
            timer.start()
            point = h2load(target, args.concurrency, args.seconds, args.warmup)
            timer.join()
            point.cpu_us = (cpu_seconds(proc.pid) - cpu0[0]) / max(1, point.ok) * 1e6
            tracked = ""
            if drift:  # the tracker really saw the traffic (window rows), so "on" measures real work
                time.sleep(1.5)
                tracked = f"  drift window rows {window_rows(metrics_port):.0f}"
            loadtools.stop(proc)
            results[drift].append(point)
            print(f"  round {rnd + 1} drift {'on ' if drift else 'off'} {point.rps:8.0f} infer/s  p50 "
                  f"{point.p50_ms:6.2f} ms  p99 {point.p99_ms:6.2f} ms  server CPU {point.cpu_us:5.0f} us/req  "
                  f"failed {point.failed}{tracked}", flush=True)
    on, off = results[True], results[False]
    paired = statistics.median(a.rps / b.rps for a, b in zip(on, off))
    cpu = statistics.median(a.cpu_us / b.cpu_us for a, b in zip(on, off))
    print(f"\nmedian infer/s: on {statistics.median(p.rps for p in on):.0f}, off "
          f"{statistics.median(p.rps for p in off):.0f}")
    print(f"median of the per-round ratios (drift on / off): throughput {paired:.3f}, server CPU per request "
          f"{cpu:.3f}")
    print(f"target: drift tracking costs <= 5% of throughput: measured {1 - paired:.1%} -> "
          f"{'met' if 1 - paired <= 0.05 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
