"""The cost of idempotency keys on the columnar bulk path (issue #23): PredictBatch of N rows in columns (default
5,000) with request ids (request_id_prefix + row_numbers, new keys each call: the server fingerprints every row,
checks its recent answers and makes ONE lookup query for the call), without ids (fresh ids: no check at all), and
a retry of calls already answered (every row's stored answer given again), against one server process with
durable persistence into PostgreSQL. Rounds alternate the kinds, so drift of a busy machine hits each alike.

Usage:  .venv/bin/python bench/idempotency_bench.py [--rows 5000] [--calls 15] [--rounds 2] [--pg-url URL]

Prints the median call latency per kind and the paired ratio "ids / no ids". Compare with the same script run on a
checkout before the keys existed (where "ids" costs only the uuid5 of each row) for the absolute cost.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.persistence import DEFAULT_PG

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=15, help="calls per kind and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pg-url", default=os.environ.get("PREDMESH_BENCH_PG_URL")
                        or os.environ.get("PREDMESH_TEST_PG_URL") or DEFAULT_PG)
    args = parser.parse_args()
    os.environ["PREDMESH_TEST_PG_URL"] = args.pg_url  # TempSchema's database

    from inference.models.store import ModelStore
    from inference.models.train import train
    from predmesh import Client
    from tests.support.pg import TempSchema
    from tests.support.procs import ServerProc

    tmp = Path(tempfile.mkdtemp(prefix="idem-bench-"))
    train(ModelStore(tmp / "models"), "iris", "lr")
    rng = np.random.default_rng(1)
    values = rng.normal([5.8, 3.0, 3.7, 1.2], [0.5, 0.3, 1.0, 0.5], size=(args.rows, 4)).clip(0.1).ravel().tolist()
    numbers = range(args.rows)
    env = {"PREDMESH_DATABASE_URL": "", "PREDMESH_MAX_BATCH_ROWS": str(args.rows),
           "PREDMESH_MAX_MESSAGE_BYTES": str(64 << 20), "PREDMESH_LOG_LEVEL": "INFO", "PREDMESH_PROCESSES": "1"}
    times: dict[str, list[float]] = {"no ids": [], "ids (new keys)": [], "retry (answered before)": []}
    with TempSchema() as schema:
        env["PREDMESH_DATABASE_URL"] = schema.url
        with ServerProc(tmp / "models", tmp / "server.log", env=env) as server, \
                Client(server.target, timeout=120) as client:
            for _ in range(3):
                client.predict_matrix("iris", NAMES, values)  # warm up
            for r in range(args.rounds):
                for kind in times:
                    for c in range(args.calls):
                        prefix = "" if kind == "no ids" else f"r{r}-c{c}-"
                        started = time.perf_counter()
                        client.predict_matrix("iris", NAMES, values, request_id_prefix=prefix,
                                              row_numbers=numbers if prefix else ())
                        times[kind].append(time.perf_counter() - started)
    for kind, ts in times.items():
        print(f"{kind:26s} median {statistics.median(ts) * 1000:8.1f} ms per call of {args.rows} rows "
              f"({args.rows / statistics.median(ts):,.0f} rows/s), n={len(ts)}")
    ratio = statistics.median(times["ids (new keys)"]) / statistics.median(times["no ids"])
    print(f"ids / no ids: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
