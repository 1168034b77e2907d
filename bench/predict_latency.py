"""Predict latency and throughput at concurrency 1 and 32 through the Python SDK, against a health-check floor.

Usage: .venv/bin/python bench/predict_latency.py [--seconds 10] [--estimator lr|rf] [--target HOST:PORT]

Without --target it trains a throwaway store, starts `python -m inference serve` on free ports and stops it after.
Clients run in up to 4 processes (the Python client is GIL-bound); each closed-loop worker thread sends one call
at a time. The baseline is GetModel (same server, interceptors and SDK path, no scoring): the RPC floor of the same run.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadtools import Point, sdk_closed_loop

ROW = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}


def measure(target: str, kind: str, concurrency: int, seconds: float) -> Point:
    method, args = ("predict", ("iris", ROW)) if kind == "predict" else ("get_model", ("iris",))
    return sdk_closed_loop(target, method, args, concurrency, seconds, processes=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--estimator", choices=["lr", "rf"], default="lr")
    parser.add_argument("--target")
    args = parser.parse_args()
    server = None
    target = args.target
    if not target:
        from inference.models.store import ModelStore
        from inference.models.train import train
        from tests.support.procs import ServerProc

        tmp = Path(tempfile.mkdtemp(prefix="bench-"))
        train(ModelStore(tmp / "models"), "iris", args.estimator)
        server = ServerProc(tmp / "models", tmp / "server.log",
                            env={"PREDMESH_LOG_LEVEL": "WARNING", **{k: v for k, v in os.environ.items()
                                                                     if k.startswith("PREDMESH_")}}).start()
        target = server.target
    try:
        print(f"target {target}, model iris ({args.estimator}), {args.seconds:g} s per point, "
              f"{os.cpu_count()} cores shared by server and clients")
        print(f"{'call':<10}{'conc':>5}{'rps':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'rps/floor':>11}")
        for concurrency in (1, 32):
            floor = measure(target, "floor", concurrency, args.seconds)
            pred = measure(target, "predict", concurrency, args.seconds)
            for name, r in (("GetModel", floor), ("Predict", pred)):
                print(f"{name:<10}{concurrency:>5}{r.rps:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}"
                      f"{r.failed:>8}{r.rps / floor.rps:>11.2f}")
    finally:
        if server:
            server.terminate()


if __name__ == "__main__":
    main()
