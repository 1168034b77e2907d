"""Partitioned predictions (issue #26, m0008): what the conversion of a filled table costs per million rows, and
what the storing path (repo.insert_predictions: COPY, the prediction_keys trigger) costs per 1000 rows before and
after it; `lighter`: what m0010 (features and probabilities as json, prediction_keys' BRIN) costs per million rows
on a partitioned table the previous release filled. CPU from /proc: the PostgreSQL backend of the connection
(utime + stime) and this process.

  .venv/bin/python bench/partition_bench.py migrate --rows 500000 --days 30
  .venv/bin/python bench/partition_bench.py lighter --rows 500000 --days 30
  .venv/bin/python bench/partition_bench.py insert --rows 20000 --rounds 3
"""
from __future__ import annotations

import argparse
import importlib
import os
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from database import repo
from database.connect import open_database, session
from database.migrate import migrate
from database.records import PredictionRecord
from tests.support.pg import TempSchema, test_pg_url

TICKS = os.sysconf("SC_CLK_TCK")


def backend_cpu(database) -> float:
    pid = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def old_layout(database, before: str = "m0008") -> None:
    migrate(database, stop_before=before)


MIGRATIONS = {"migrate": "m0008_partition_predictions", "lighter": "m0010_lighter_rows"}


def migrate_cost(rows: int, days: int, migration: str = MIGRATIONS["migrate"]) -> None:
    with TempSchema(os.environ.get("PREDMESH_BENCH_PG_URL", test_pg_url())) as schema:
        database = open_database(schema.url, statement_timeout_ms=0)
        try:
            with session():
                old_layout(database, migration[:5])
                if migration > MIGRATIONS["migrate"]:  # partitioned already: a partition for each day of rows
                    from database import partitions
                    with database.atomic():
                        for day in range(days + 1):
                            partitions.create_partition(database, partitions.today(time.time() - day * 86400))
                with database.atomic():  # rows as the writer stores them: ~300 bytes each, spread over `days`
                    database.execute_sql(
                        "INSERT INTO predictions SELECT md5(i::text)::uuid::text, 'r-' || i, "
                        "CASE WHEN i %% 2 = 0 THEN 'iris' ELSE 'wine' END, (1 + i %% 3)::text, "
                        "jsonb_build_object('sepal_length', 5.1 + i %% 7, 'sepal_width', 3.5, 'petal_length', 1.4, "
                        "'petal_width', 0.2), 'setosa', '{\"setosa\":0.9,\"versicolor\":0.05,\"virginica\":0.05}', "
                        "'grpc', 1.5, now()::timestamp - make_interval(secs => (i::float / %s) * %s * 86400), "
                        "md5(i::text) FROM generate_series(1, %s) i", (rows, days, rows))
                    database.execute_sql("INSERT INTO feedback (prediction_id, label, created_at) "
                                         "SELECT prediction_id, 'setosa', now() FROM predictions "
                                         "WHERE request_id LIKE '%%7'")
                database.execute_sql("ANALYZE predictions")
                # index builds in this backend alone: its /proc figures then hold all of the migration's CPU
                database.execute_sql("SET max_parallel_maintenance_workers = 0")
                module = importlib.import_module(f"database.migrations.{migration}")
                cpu0, own0, began = backend_cpu(database), own_cpu(), time.perf_counter()
                with database.atomic():
                    module.apply(database)
                wall, cpu, own = time.perf_counter() - began, backend_cpu(database) - cpu0, own_cpu() - own0
                count = database.execute_sql("SELECT COUNT(*) FROM predictions").fetchone()[0]
                assert count == rows, count
            per_m = 1e6 / rows
            print(f"{migration[:5]} on {rows:,} rows over {days} days: {wall:.1f} s wall, backend CPU {cpu:.1f} s, "
                  f"client CPU {own:.2f} s; per million rows {wall * per_m:.1f} s wall, "
                  f"{cpu * per_m:.1f} s backend CPU")
        finally:
            database.close()


def records(n: int, prefix: str) -> list[PredictionRecord]:
    now = time.time()
    return [PredictionRecord(
        prediction_id=str(uuid.uuid4()), request_id=f"{prefix}-{i}", model="iris", model_version="1",
        features={"sepal_length": 5.1 + i % 7, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        label="setosa", probabilities={"setosa": 0.9, "versicolor": 0.05, "virginica": 0.05}, transport="grpc",
        latency_ms=1.5, created_at=now + i * 1e-3, request_hash=None) for i in range(n)]


def insert_cost(rows: int, rounds: int, batch: int) -> None:
    results: dict[str, list[tuple[float, float, float]]] = {"unpartitioned": [], "partitioned": []}
    for r in range(rounds):
        for layout in results:
            with TempSchema(os.environ.get("PREDMESH_BENCH_PG_URL", test_pg_url())) as schema:
                database = open_database(schema.url)
                try:
                    with session():
                        old_layout(database)
                        if layout == "partitioned":
                            with database.atomic():
                                importlib.import_module("database.migrations.m0008_partition_predictions").apply(
                                    database)
                        from database import partitions
                        partitions.forget(database)
                        repo.insert_predictions(records(batch, f"warm{r}"))
                        todo = records(rows, f"{layout}{r}")
                        cpu0, own0, began = backend_cpu(database), own_cpu(), time.perf_counter()
                        for start in range(0, rows, batch):
                            repo.insert_predictions(todo[start:start + batch])
                        wall = time.perf_counter() - began
                        results[layout].append((wall, backend_cpu(database) - cpu0, own_cpu() - own0))
                finally:
                    database.close()
    for layout, runs in results.items():
        runs.sort()
        wall, cpu, own = runs[len(runs) // 2]
        k = rows / 1000
        print(f"{layout:>13}: {rows / wall:,.0f} rows/s (median of {rounds}), per 1000 rows: backend CPU "
              f"{cpu / k * 1e3:.1f} ms, client CPU {own / k * 1e3:.1f} ms, wall {wall / k * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["migrate", "lighter", "insert"])
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    if args.what in MIGRATIONS:
        migrate_cost(args.rows or 500_000, args.days, MIGRATIONS[args.what])
    else:
        insert_cost(args.rows or 20_000, args.rounds, args.batch)


if __name__ == "__main__":
    main()
