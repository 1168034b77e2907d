"""The aggregates' price and payoff (#26): the storing path's throughput (database.repo.insert_predictions, which
maintains the aggregates in its transaction) and GetStats' time (database.repo.stats) on a loaded table.

Usage:
  .venv/bin/python bench/stats_bench.py store [--rows 100000] [--batch 1000] [--rounds 3] [--kinds K,..] [--pg-url URL]
  .venv/bin/python bench/stats_bench.py stats [--rows 1000000] [--days 30] [--calls 20] [--pg-url URL]

store: a fresh PostgreSQL schema per round, --rows predictions stored in batches of --batch rows through
insert_predictions, as single records (the server's prediction log: "records" all of one model, version and
transport, like the Iris benchmarks; "records-mixed" 2 models x 2 versions x 5 transports in every batch) and as
columnar batches (PredictBatch, the batch pipeline); prints rows/s and the CPU per 1000 rows (PostgreSQL backend
+ this process, from /proc: steadier than rows/s on a busy machine) per kind, median round.
stats: --rows predictions over --days days loaded through insert_predictions (COPY), then repo.stats for each
window (all, 30 d, 24 h, 1 h; with and without a model filter; with a series of 24 buckets), --calls times each:
p50 and p99 in ms. With the aggregates it also times their rebuild (the m0005 backfill) per million rows.

The same file runs against an older checkout (before the aggregates) to compare: copy it into that tree's bench/.
PostgreSQL: --pg-url, else PREDMESH_BENCH_PG_URL, else PREDMESH_TEST_PG_URL, else the local test database.
"""
from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np
import psycopg2

from database import repo
from database.connect import open_database, session
from database.migrate import migrate
from database.records import PredictionBatch, PredictionRecord

DEFAULT_PG = "postgresql://predmesh:predmesh@127.0.0.1:5432/predmesh_test"
CLASSES = ("setosa", "versicolor", "virginica")
TRANSPORTS = ("grpc", "rest", "queue", "batch", "ui")
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


class Schema:
    """A fresh schema on the server, dropped on exit; .url selects it."""

    def __init__(self, base: str):
        self.base, self.name = base, f"bench_{uuid.uuid4().hex[:10]}"
        sep = "&" if "?" in base else "?"
        self.url = f"{base}{sep}options={quote(f'-c search_path={self.name}')}"

    def _run(self, sql: str) -> None:
        conn = psycopg2.connect(self.base)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.close()

    def __enter__(self) -> Schema:
        self._run(f"CREATE SCHEMA {self.name}")
        return self

    def __exit__(self, *exc) -> None:
        self._run(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


def records(rng: np.random.Generator, n: int, start: float, span: float, prefix: str,
            mixed: bool = True) -> list[PredictionRecord]:
    """n predictions made over [start, start + span): of 2 models x 2 versions x 5 transports when mixed, else all
    of one model, version and transport (as a single server scoring one model)."""
    labels = rng.integers(0, 3, n)
    transports = rng.integers(0, len(TRANSPORTS) if mixed else 1, n)
    versions = rng.integers(1, 3 if mixed else 2, n)
    models = rng.integers(0, 4, n) if mixed else np.ones(n, dtype=int)
    latency = rng.lognormal(0.5, 0.8, n)
    created = np.sort(start + rng.uniform(0, span, n))
    features = rng.normal(5, 1, (n, len(FEATURES))).round(2)
    out = []
    for i in range(n):
        label = CLASSES[labels[i]]
        out.append(PredictionRecord(
            prediction_id=str(uuid.uuid4()), request_id=f"{prefix}{i}", model="iris" if models[i] else "wine",
            model_version=str(versions[i]), features=dict(zip(FEATURES, features[i].tolist())), label=label,
            probabilities={c: (0.8 if c == label else 0.1) for c in CLASSES}, transport=TRANSPORTS[transports[i]],
            latency_ms=float(latency[i]), created_at=float(created[i])))
    return out


def batch(rng: np.random.Generator, n: int, at: float, prefix: str) -> PredictionBatch:
    labels = rng.integers(0, 3, n)
    probabilities = np.full((n, 3), 0.1)
    probabilities[np.arange(n), labels] = 0.8
    return PredictionBatch(
        prediction_ids=[str(uuid.uuid4()) for _ in range(n)], request_ids=[f"{prefix}{i}" for i in range(n)],
        model="iris", model_version="1", feature_names=FEATURES, features=rng.normal(5, 1, (n, len(FEATURES))),
        classes=CLASSES, labels=labels, probabilities=probabilities, transport="batch", latency_ms=0.8,
        created_at=at)


def backend_cpu(pid: int) -> float:
    """User + system CPU seconds of a (local) PostgreSQL backend, from /proc: a measure the machine's load does not
    inflate the way it inflates wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store(args) -> None:
    rng = np.random.default_rng(1)
    results: dict[str, list[float]] = {kind: [] for kind in args.kinds.split(",")}
    cpus: dict[str, list[float]] = {kind: [] for kind in results}
    for r in range(args.rounds):
        for kind in results:
            with Schema(args.pg_url) as schema:
                database = open_database(schema.url)
                migrate(database)
                now = time.time()
                if kind.startswith("records"):
                    work = [records(rng, args.batch, now, 1.0, f"{r}-{k}-", mixed=kind == "records-mixed")
                            for k in range(args.rows // args.batch)]
                else:
                    work = [[batch(rng, args.batch, now, f"{r}-{k}-")]  # type: ignore[list-item]
                            for k in range(args.rows // args.batch)]
                with session():
                    backend = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
                    cpu = backend_cpu(backend), time.process_time()
                    began = time.perf_counter()
                    for items in work:
                        repo.insert_predictions(items)
                    took = time.perf_counter() - began
                    used = backend_cpu(backend) - cpu[0], time.process_time() - cpu[1]
                database.close()
            rate = args.rows / took
            results[kind].append(rate)
            per = 1000 / args.rows * 1000
            cpus[kind].append((used[0] + used[1]) * per)
            print(f"round {r + 1} {kind}: {args.rows} rows in {took:.2f} s = {rate:,.0f} rows/s; CPU per 1000 rows: "
                  f"PostgreSQL {used[0] * per:.1f} ms + client {used[1] * per:.1f} ms", flush=True)
    for kind, rates in results.items():
        print(f"median {kind}: {statistics.median(rates):,.0f} rows/s (rounds: "
              f"{', '.join(f'{x:,.0f}' for x in rates)}); CPU {statistics.median(cpus[kind]):.1f} ms per 1000 rows")


def _timed(fn, calls: int) -> tuple[float, float]:
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]


def stats(args) -> None:
    rng = np.random.default_rng(2)
    with Schema(args.pg_url) as schema:
        # no statement timeout: the raw-table GetStats of an older checkout takes longer than the default 10 s
        database = open_database(schema.url, statement_timeout_ms=0)
        migrate(database)
        now = time.time()
        start = now - args.days * 86400
        step = 10_000
        began = time.perf_counter()
        with session():
            for k in range(0, args.rows, step):
                n = min(step, args.rows - k)
                span = args.days * 86400 * n / args.rows
                repo.insert_predictions(records(rng, n, start + args.days * 86400 * k / args.rows, span, f"{k}-"))
            load = time.perf_counter() - began
            print(f"loaded {args.rows:,} rows over {args.days} days in {load:.1f} s "
                  f"({args.rows / load:,.0f} rows/s, including generating them)", flush=True)
            database.execute_sql("ANALYZE predictions")
            series = "bucket_seconds" in inspect.signature(repo.stats).parameters
            cases = [("all", None, ""), ("30 d", now - 30 * 86400, ""), ("24 h", now - 86400, ""),
                     ("1 h", now - 3600, ""), ("24 h model", now - 86400, "wine"), ("all model", None, "wine")]
            for name, lo, model in cases:
                flt = repo.PredictionFilter(model=model, start=lo, end=None)
                p50, p99 = _timed(lambda f=flt: repo.stats(f), args.calls)
                print(f"GetStats {name:<11} p50 {p50:8.1f} ms  p99 {p99:8.1f} ms", flush=True)
            if series:
                flt = repo.PredictionFilter(start=now - 86400)
                p50, p99 = _timed(lambda: repo.stats(flt, 3600), args.calls)
                print(f"GetStats 24 h + series of 24 x 1 h  p50 {p50:8.1f} ms  p99 {p99:8.1f} ms")
                flt = repo.PredictionFilter(start=now - 900)
                p50, p99 = _timed(lambda: repo.stats(flt, 60), args.calls)
                print(f"GetStats 15 min + series of 15 x 1 min  p50 {p50:8.1f} ms  p99 {p99:8.1f} ms")
                from database import aggregates
                with database.atomic():
                    began = time.perf_counter()
                    aggregates.backfill()
                    took = time.perf_counter() - began
                print(f"rebuild of the aggregates (m0005 backfill): {took:.1f} s = "
                      f"{took / (args.rows / 1e6):.1f} s per million rows")
        database.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["store", "stats"])
    parser.add_argument("--rows", type=int)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--kinds", default="records,records-mixed,batches",
                        help="store: which kinds to time, comma-separated")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--pg-url", default=os.environ.get("PREDMESH_BENCH_PG_URL")
                        or os.environ.get("PREDMESH_TEST_PG_URL") or DEFAULT_PG)
    args = parser.parse_args()
    args.rows = args.rows or (100_000 if args.mode == "store" else 1_000_000)
    (store if args.mode == "store" else stats)(args)


if __name__ == "__main__":
    main()
