"""The queue consumer's connections over a 2-process server: two consumer code trees alternated round by round.

Usage:  .venv/bin/python bench/queue_spread.py --trees OLD,NEW [--model iris|knn] [--train-rows 250000]
                                               [--jobs 3000] [--rounds 3]

One server (`PREDMESH_PROCESSES=2`, durable persistence, a fresh PostgreSQL schema) serves the model; per round and
tree, N one-row jobs (`reply_to` set) are queued on a fresh prefix of the test broker, then that tree's `python -m
consumer` (its defaults) drains them. jobs/s = N / (from the consumer's first consume to the last reply received);
server CPU = each server process's CPU over the round (from /proc), so the share of the busiest process says whether
the work reached both. `iris` is cheap to score (the consumer and the broker bound the rate); `knn` is a
KNeighborsClassifier on --train-rows synthetic rows of 16 features (~2 ms of server CPU per job at 250,000), which
one process cannot keep up with. E.g. OLD = a checkout before the consumer's connections were spread
(`git worktree add --detach /work/wt/old c94f4e1`), NEW = this checkout.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from predmesh import jobs
from predmesh.publisher import Publisher
from tests.support.pg import TempSchema
from tests.support.procs import ServerProc
from tests.support.queue import Broker, shared_amqp_url, unique_prefix

IRIS_ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rpartition(")")[2].split()[1] == str(pid):
                out.append(int(stat.parent.name))
        except OSError:
            continue
    return out


def train(store: Path, work: Path, model: str, train_rows: int) -> dict:
    """Train the model into store; the job's feature row."""
    if model == "iris":
        from inference.models.store import ModelStore
        from inference.models.train import train as train_iris
        train_iris(ModelStore(store), "iris", "lr")
        return IRIS_ROW
    rng = np.random.default_rng(0)
    x = rng.normal(size=(train_rows, 16))
    with open(work / "knn.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow([f"f{i}" for i in range(16)] + ["y"])
        for row, y in zip(x, x[:, 0] + x[:, 1] > 0):
            out.writerow([f"{v:.5f}" for v in row] + ["yes" if y else "no"])
    subprocess.run([sys.executable, "-m", "inference", "train", "--data", str(work / "knn.csv"), "--target", "y",
                    "--model", "knn", "--estimator", "knn"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PREDMESH_MODEL_STORE": str(store), "PREDMESH_LOG_LEVEL": "WARNING"})
    return {f"f{i}": float(v) for i, v in enumerate(rng.normal(size=16))}


def drain(tree: str, server: ServerProc, workers: list[int], model: str, row: dict, n: int,
          log: Path) -> tuple[float, list[float]]:
    """(jobs/s, CPU seconds of each server process) of tree's consumer draining n queued jobs."""
    prefix = unique_prefix()
    broker = Broker(shared_amqp_url(), prefix)
    try:
        with Publisher(broker.url, prefix=prefix) as pub:
            ids = [pub.publish(jobs.predict_job(model, row), message_id=f"{prefix}-{i}", reply=True)
                   for i in range(n)]
            before = [cpu(w) for w in workers]
            env = {**os.environ, "PREDMESH_AMQP_URL": broker.url, "PREDMESH_AMQP_PREFIX": prefix,
                   "PREDMESH_SERVER_ADDR": server.target, "PREDMESH_CONSUMER_METRICS_ADDR": "", "PYTHONPATH": tree}
            proc = subprocess.Popen([sys.executable, "-m", "consumer"], cwd=tree, env=env, stdout=open(log, "ab"),
                                    stderr=subprocess.STDOUT)
            try:
                while (broker.depth(f"{prefix}.predict") or (n, 0))[1] == 0:  # until it consumes
                    if proc.poll() is not None:
                        raise SystemExit(f"the consumer of {tree} exited; see {log}")
                    time.sleep(0.01)
                start = time.monotonic()
                got = pub.wait_results(ids, timeout=600)
                elapsed = time.monotonic() - start
            finally:
                proc.terminate()
                proc.wait()
            used = [cpu(w) - b for w, b in zip(workers, before)]
        if len(got) != n:
            raise SystemExit(f"{tree}: {len(got)} of {n} results")
        return n / elapsed, used
    finally:
        broker.delete_topology()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", required=True, help="two consumer checkouts, comma-separated")
    parser.add_argument("--model", choices=("iris", "knn"), default="knn")
    parser.add_argument("--train-rows", type=int, default=250_000)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    with tempfile.TemporaryDirectory(prefix="queue-spread-") as tmp:
        work = Path(tmp)
        store = work / "store"
        row = train(store, work, args.model, args.train_rows)
        env = {"PREDMESH_PROCESSES": "2", "PROMETHEUS_MULTIPROC_DIR": str(work / "prom")}
        with TempSchema() as schema, ServerProc(store, work / "server.log",
                                                env={**env, "PREDMESH_DATABASE_URL": schema.url}) as server:
            deadline = time.monotonic() + 60
            while len(workers := children(server.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3)  # the second process loads its models
            rates: dict[str, list[float]] = {t: [] for t in trees}
            for r in range(args.rounds):
                for tree in trees if r % 2 == 0 else trees[::-1]:
                    rate, used = drain(tree, server, workers, args.model, row, args.jobs, work / "consumer.log")
                    rates[tree].append(rate)
                    print(f"round {r + 1} {tree}: {rate:,.0f} jobs/s; server CPU by process "
                          f"{', '.join(f'{u:.1f}' for u in used)} s (busiest {max(used) / sum(used):.0%}); "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
    for tree, values in rates.items():
        print(f"{tree}: median {statistics.median(values):,.0f} jobs/s "
              f"({min(values):,.0f}-{max(values):,.0f}) over {len(values)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
