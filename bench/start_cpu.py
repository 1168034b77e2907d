"""CPU seconds a server start costs until health says SERVING: what the suite's hundreds of server processes, and
every restart and worker respawn, pay.

Usage:  .venv/bin/python bench/start_cpu.py [--starts 5] [--processes 1] [ROOT ...]

Trains a throwaway Iris store (RandomForest version 1, LogisticRegression version 2, as tests/conftest.py does),
then starts `python -m inference serve --no-train` from each ROOT (a checkout of predmesh; default: this one) in
turn, alternating, `--starts` times each, as tests/support/procs.py starts it. Each start's figure is utime+stime
of the process (from /proc) at the first SERVING answer; with `--processes N > 1`, the supervisor's and then each
worker's once every worker serves. Prints every start, then per ROOT the median and range, and the load average.
Two checkouts side by side are an A/B: `git worktree add /tmp/before <commit>` and pass both.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from grpc_health.v1 import health_pb2

from tests.support.procs import ADMIN_TOKEN, READONLY_TOKEN, WRITER_TOKEN, free_port, health_status, stop_process

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: int) -> tuple[int, float]:
    """(parent pid, utime+stime in seconds) of a process, its children not included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[float]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent, seconds = cpu(int(entry))
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                found.append(seconds)
    return found


def start(root: Path, store: Path, processes: int) -> list[float]:
    """One start from root: [the process's CPU s] or [the supervisor's, each worker's]."""
    work = Path(tempfile.mkdtemp(prefix="start-cpu-"))
    target = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "PYTHONPATH": str(root), "PREDMESH_MODEL_STORE": str(store), "PREDMESH_GRPC_ADDR": target,
           "PREDMESH_METRICS_ADDR": "127.0.0.1:0", "PREDMESH_PROCESSES": str(processes),
           "PREDMESH_ADMIN_TOKEN": ADMIN_TOKEN, "PREDMESH_READONLY_TOKEN": READONLY_TOKEN,
           "PREDMESH_WRITER_TOKEN": WRITER_TOKEN, "PREDMESH_DATABASE_URL": f"sqlite:///{work / 'predmesh.db'}",
           "PREDMESH_SPOOL_DIR": str(work / "spool"), "PREDMESH_LOG_LEVEL": "INFO"}
    with open(work / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train"], cwd=root, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        while health_status(target) != health_pb2.HealthCheckResponse.SERVING:
            if proc.poll() is not None:
                raise RuntimeError((work / "server.log").read_text())
            time.sleep(0.01)
        if processes == 1:
            return [cpu(proc.pid)[1]]
        while (work / "server.log").read_text().count("listening on") < processes:
            time.sleep(0.02)
        return [cpu(proc.pid)[1], *children(proc.pid)]
    finally:
        stop_process(proc)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="*", type=Path, default=[ROOT], metavar="ROOT")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="start-cpu-store-"))
    from inference.models.store import ModelStore
    from inference.models.train import train
    train(ModelStore(store), "iris", "rf")
    train(ModelStore(store), "iris", "lr")
    totals: dict[Path, list[float]] = {root: [] for root in args.roots}
    try:
        for i in range(args.starts):
            for root in args.roots:
                figures = start(root.resolve(), store, args.processes)
                totals[root].append(sum(figures))
                print(f"{i + 1} {root}: {' + '.join(f'{f:.2f}' for f in figures)} CPU s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    for root, values in totals.items():
        print(f"{root}: median {statistics.median(values):.2f} CPU s, {min(values):.2f}-{max(values):.2f} "
              f"over {len(values)} starts")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
