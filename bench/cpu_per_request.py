"""Server CPU per request of one unary call, for two (or more) code trees side by side, alternating rounds.

Usage:  .venv/bin/python bench/cpu_per_request.py [--trees DIR[,DIR...]] [--rounds 3] [--seconds 5] [--concurrency 32]

Throughput on a shared 2-core machine swings ±25% between rounds; the server's CPU time per answered request
(user + system of the server process and its workers, from /proc) moves much less, so it is what a change to the
per-request path is judged by. Each tree (default: this checkout; e.g. a `git archive` of the commit before a
change next to this one) gets its own `python -m inference serve` at its defaults (durable persistence to
PostgreSQL, metrics on) over one model store with Iris LogisticRegression and RandomForest; then, round after
round, the trees are driven alternately (A B A B ...) with h2load: OIP ModelInfer, one pre-encoded row per
request, closed loop. CPU per request = the server's CPU over the point, until its writer has stored the point's
rows, divided by the calls its metrics counted as answered OK (h2load's warm-up included in both).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadtools
from bench.compare_mlserver import DEFAULT_PG, IRIS, OIP_METHOD, Predmesh, bench_database, oip_request


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its children (worker processes), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            user += int(fields[11]) / tick
            system += int(fields[12]) / tick
    return user, system

PREDICT_METHOD = "/predmesh.v1.InferenceService/Predict"


def answered(pm: Predmesh, method: str) -> float:
    """Calls of method answered OK, from the server's metrics."""
    return pm.metric("grpc_server_handled_total", having=f'grpc_method="{method}"', lacking="\0") - pm.metric(
        "grpc_server_handled_total", having=f'grpc_method="{method}"', lacking='grpc_code="OK"')


def predict_request(model: str) -> bytes:
    from predmesh.v1 import inference_pb2
    from predmesh.values import encode

    row = {"sepal_length": 5.9, "sepal_width": 3.0, "petal_length": 5.1, "petal_width": 1.8}
    return inference_pb2.PredictRequest(model=model, features=encode(row)).SerializeToString()


class TreeServer(Predmesh):
    """Predmesh (no gateway) run from another code tree: `python -m inference serve` with that tree as cwd, so its
    packages come first on sys.path."""

    def __init__(self, tree: Path, work: Path, store: Path, database_url: str, tuning: dict[str, str]):
        work.mkdir(parents=True, exist_ok=True)
        super().__init__(work, store, database_url, tuning)
        self.tree = tree

    def start(self) -> TreeServer:
        import subprocess

        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        log = open(self.work / "predmesh.log", "ab")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train"], cwd=self.tree,
                                           env=self.env, stdout=log, stderr=subprocess.STDOUT))

        def serving():
            with grpc.insecure_channel(self.target) as ch:
                return health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=1).status == 1
        loadtools.wait_for(serving, 90, f"predmesh from {self.tree} to serve")
        return self


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trees", default=str(ROOT), help="code trees, comma-separated (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per point (after 1 s warm-up)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--model", default="iris-lr", choices=sorted(IRIS))
    parser.add_argument("--method", default="oip", choices=["oip", "predict"],
                        help="OIP ModelInfer (default) or InferenceService/Predict")
    parser.add_argument("--processes", help="PREDMESH_PROCESSES (default: unset, predmesh's default)")
    parser.add_argument("--persistence", help="PREDMESH_PERSISTENCE (default: unset, durable)")
    parser.add_argument("--tree-env", action="append", default=[], metavar="I:NAME=VALUE",
                        help="an environment variable for tree I only (0-based), e.g. 1:PREDMESH_PERSISTENCE=off")
    parser.add_argument("--pg-url", default=os.environ.get("PREDMESH_TEST_PG_URL", DEFAULT_PG))
    args = parser.parse_args(argv)
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    tuning = {f"PREDMESH_{k}": v for k, v in (("PROCESSES", args.processes), ("PERSISTENCE", args.persistence))
              if v is not None}
    from inference.models.store import ModelStore
    from inference.models.train import train

    work = ROOT / "var" / "bench" / f"cpu-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    store = work / "store"
    for name, kind in IRIS.items():
        train(ModelStore(store), name, kind)
    database_url = bench_database(args.pg_url)
    method = OIP_METHOD if args.method == "oip" else PREDICT_METHOD
    message = oip_request(args.model, mlserver=False) if args.method == "oip" else predict_request(args.model)
    frame = loadtools.grpc_frame(message)
    servers: list[TreeServer] = []
    rounds: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(trees))}
    try:
        for i, tree in enumerate(trees):
            own = dict(tuning)
            for spec in args.tree_env:
                number, _, assignment = spec.partition(":")
                if int(number) == i:
                    name, _, value = assignment.partition("=")
                    own[name] = value
            servers.append(TreeServer(tree, work / f"tree{i}", store, database_url, own).start())
            loadtools.check_grpc(servers[-1].target, method, message)
        short = method.rsplit("/", 1)[1]
        for round_no in range(args.rounds):
            line = []
            for i, pm in enumerate(servers):
                pm.settle()
                (user0, system0), calls0 = cpu_split(pm.procs[0].pid), answered(pm, short)
                point = loadtools.h2load(pm.target, method, frame, args.concurrency, args.seconds)
                pm.settle()
                user, system = cpu_split(pm.procs[0].pid)
                calls = max(answered(pm, short) - calls0, 1)
                per_call = (user - user0 + system - system0) / calls * 1e6
                rounds[i].append((per_call, point.rps))
                line.append(f"tree{i} {per_call:.0f} µs/req (system {(system - system0) / calls * 1e6:.0f}) "
                            f"{point.rps:,.0f}/s (failed {point.failed})")
            print(f"  round {round_no + 1}: " + "; ".join(line), flush=True)
    finally:
        for pm in servers:
            pm.stop()
    print(f"\n{args.model} {args.method} c={args.concurrency}, {args.seconds:g} s per point, {args.rounds} rounds "
          f"alternating; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    base = statistics.median(us for us, _ in rounds[0])
    for i, tree in enumerate(trees):
        us = [u for u, _ in rounds[i]]
        rps = [r for _, r in rounds[i]]
        print(f"- tree{i} {tree}: CPU {statistics.median(us):.0f} µs/request (min {min(us):.0f}, max {max(us):.0f})"
              f"{'' if i == 0 else f', {statistics.median(us) / base:.2f}× tree0'}; "
              f"{statistics.median(rps):,.0f} infer/s (min {min(rps):,.0f}, max {max(rps):,.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
