"""Partitioned predictions (issue #26, m0008): what the conversion of a filled table costs per million rows, and
what the storing path (repo.insert_predictions: COPY, the prediction_keys trigger) costs per 1000 rows before and
after it; `lighter`: what m0010 (features and probabilities as json, prediction_keys' BRIN) costs per million rows
on a partitioned table the previous release filled; `keys`: what m0012 (prediction_keys keyed by prediction_id,
predictions' primary key dropped) costs per million rows. `insert --migration mNNNN` times the storing path on the
layouts before and after that migration (default m0008: unpartitioned, partitioned), alternating them round by
round. CPU from /proc: the PostgreSQL backend of the connection (utime + stime) and this process.

  .venv/bin/python bench/partition_bench.py migrate --rows 500000 --days 30
  .venv/bin/python bench/partition_bench.py lighter --rows 500000 --days 30
  .venv/bin/python bench/partition_bench.py keys --rows 1000000 --days 30
  .venv/bin/python bench/partition_bench.py insert --rows 20000 --rounds 3
  .venv/bin/python bench/partition_bench.py insert --rows 20000 --rounds 5 --migration m0012
  .venv/bin/python bench/partition_bench.py lookups --rows 1000000 --days 30

`lookups`: --rows predictions over --days days COPYed into the current layout (ids as the server derives them),
then the repository's lookups timed in process, --calls each after 2 unmeasured: GetPrediction (by id), the
ListPredictions request_id filter, answered() (idempotency keys: 500 stored, 500 new) and a feedback's lookup and
lock (predictions_by_id). Copy this file into an older checkout to time its layout the same way.
"""
from __future__ import annotations

import argparse
import importlib
import io
import os
import resource
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from database import repo
from database.connect import open_database, session
from database.migrate import available, migrate
from database.records import PredictionRecord, prediction_id_of
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


MIGRATIONS = {"migrate": "m0008_partition_predictions", "lighter": "m0010_lighter_rows",
              "keys": "m0012_keys_by_prediction_id"}


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
                if getattr(module, "TRANSACTION", True):
                    with database.atomic():
                        module.apply(database)
                else:  # it runs outside a transaction (an index built concurrently), as database.migrate runs it
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


def stamp(at: float) -> str:
    return f"{datetime.fromtimestamp(at, UTC):%Y-%m-%d %H:%M:%S.%f}"


def lookup_cost(rows: int, days: int, calls: int) -> None:
    import random

    from database import partitions
    from inference.scoring.convert import prediction_ids
    with TempSchema(os.environ.get("PREDMESH_BENCH_PG_URL", test_pg_url())) as schema:
        database = open_database(schema.url, statement_timeout_ms=0)
        try:
            with session():
                migrate(database)
                now = time.time()
                with database.atomic():
                    for day in range(days + 1):
                        partitions.create_partition(database, partitions.today(now - day * 86400))
                began = time.perf_counter()
                chunk = 100_000
                for start in range(0, rows, chunk):
                    rids = [f"req-{i}" for i in range(start, min(rows, start + chunk))]
                    lines = [f"{pid}\t{rid}\tiris\t1\t{{\"sepal_length\": {5.1 + i % 7}, \"sepal_width\": 3.5}}\t"
                             f"setosa\t{{\"setosa\": 0.9, \"versicolor\": 0.1}}\tgrpc\t1.5\t"
                             f"{stamp(now - (1 - (start + i) / rows) * days * 86400)}\t\\N\n"
                             for i, (pid, rid) in enumerate(zip(prediction_ids(rids), rids))]
                    with database.atomic():
                        database.cursor().copy_expert(
                            "COPY predictions (prediction_id, request_id, model, model_version, features, label, "
                            "probabilities, transport, latency_ms, created_at, request_hash) FROM STDIN",
                            io.StringIO("".join(lines)))
                # the claims, as the writer makes them (m0014: a COPY of rows claims nothing by itself)
                database.execute_sql("INSERT INTO prediction_keys (prediction_id, created_at) "
                                     "SELECT prediction_id, created_at FROM predictions ORDER BY prediction_id")
                database.execute_sql("ANALYZE predictions")
                database.execute_sql("ANALYZE prediction_keys")
                print(f"{rows:,} rows over {days} days loaded in {time.perf_counter() - began:.0f} s")
                rng = random.Random(5)
                keys = [f"req-{rng.randrange(rows)}" for _ in range(calls + 2)]
                ids = dict(zip(keys, prediction_ids(keys)))
                batch_keys = [f"req-{rng.randrange(rows)}" for _ in range(500)] + [f"new-{i}" for i in range(500)]
                feedback_ids = prediction_ids([f"req-{rng.randrange(rows)}" for _ in range(100)])
                cases = {
                    "GetPrediction (by id)": lambda k: repo.get_prediction(ids[k]),
                    "ListPredictions request_id filter": lambda k: repo.list_predictions(
                        repo.PredictionFilter(request_id=k), 10),
                    "answered (500 stored + 500 new keys)": lambda k: repo.answered(batch_keys),
                    "predictions_by_id (100 ids)": lambda k: repo.predictions_by_id(feedback_ids),
                }
                for name, call in cases.items():
                    times = []
                    for key in keys:
                        t0 = time.perf_counter()
                        found = call(key)
                        times.append((time.perf_counter() - t0) * 1e3)
                        assert found, name
                    times = sorted(times[2:])
                    print(f"{name}: p50 {statistics.median(times):.2f} ms, max {times[-1]:.2f} ms ({calls} calls)")
        finally:
            database.close()


def records(n: int, prefix: str, random_ids: bool = False) -> list[PredictionRecord]:
    """n records of now; request ids prefix-0, prefix-1, ... (in order: their btree inserts land side by side), or
    with random_ids 32 random hex digits each, as the server makes for a request without one."""
    now = time.time()
    rids = [uuid.uuid4().hex if random_ids else f"{prefix}-{i}" for i in range(n)]
    return [PredictionRecord(
        prediction_id=prediction_id_of(rids[i]), request_id=rids[i], model="iris", model_version="1",
        features={"sepal_length": 5.1 + i % 7, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        label="setosa", probabilities={"setosa": 0.9, "versicolor": 0.05, "virginica": 0.05}, transport="grpc",
        latency_ms=1.5, created_at=now + i * 1e-3, request_hash=None) for i in range(n)]


def insert_cost(rows: int, rounds: int, batch: int, migration: str = "m0008", random_ids: bool = False) -> None:
    """The layouts before and after a migration (stop_before it, and stop_before the next one), alternated."""
    later = [name for name in available() if name[:5] > migration]
    layouts = {f"before {migration}": migration, f"with {migration}": later[0][:5] if later else None}
    if migration == "m0008":
        layouts = {"unpartitioned": "m0008", "partitioned": "m0009"}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in layouts}
    for r in range(rounds):
        for layout, stop_before in layouts.items():
            with TempSchema(os.environ.get("PREDMESH_BENCH_PG_URL", test_pg_url())) as schema:
                database = open_database(schema.url)
                try:
                    with session():
                        migrate(database, stop_before=stop_before)
                        from database import partitions
                        partitions.forget(database)
                        repo.insert_predictions(records(batch, f"warm{r}"))
                        todo = records(rows, f"{layout}{r}", random_ids)
                        cpu0, own0, began = backend_cpu(database), own_cpu(), time.perf_counter()
                        for start in range(0, rows, batch):
                            repo.insert_predictions(todo[start:start + batch])
                        wall = time.perf_counter() - began
                        results[layout].append((wall, backend_cpu(database) - cpu0, own_cpu() - own0))
                finally:
                    database.close()
    print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; per round (backend ms per 1000 "
          "rows): " + "; ".join(f"{name} " + ", ".join(f"{cpu / rows * 1e6:.1f}" for _, cpu, _ in runs)
                                for name, runs in results.items()))
    for layout, runs in results.items():
        wall, cpu, own = (statistics.median(column) for column in zip(*runs))  # each figure's median
        k = rows / 1000
        print(f"{layout:>13}: {rows / wall:,.0f} rows/s (medians of {rounds}), per 1000 rows: backend CPU "
              f"{cpu / k * 1e3:.1f} ms, client CPU {own / k * 1e3:.1f} ms, wall {wall / k * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=[*MIGRATIONS, "insert", "lookups"])
    parser.add_argument("--calls", type=int, default=20, help="lookups: calls of each")
    parser.add_argument("--random-ids", action="store_true", help="insert: random request ids (default: in order)")
    parser.add_argument("--migration", default="m0008", help="insert: the layouts before and after this one")
    parser.add_argument("--rows", type=int, default=0)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    if args.what in MIGRATIONS:
        migrate_cost(args.rows or 500_000, args.days, MIGRATIONS[args.what])
    elif args.what == "lookups":
        lookup_cost(args.rows or 1_000_000, args.days, args.calls)
    else:
        insert_cost(args.rows or 20_000, args.rounds, args.batch, args.migration[:5], args.random_ids)


if __name__ == "__main__":
    main()
