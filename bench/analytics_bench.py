"""Analytics at scale: N stored predictions over D days in PostgreSQL, then GetStats per window and filter and
ListPredictions per filter at the first page and at page 10,000, through the real gRPC server (issue #26).

Usage:  .venv/bin/python bench/analytics_bench.py [--rows 200000] [--days 30] [--calls 20] [--pg-url URL]
        .venv/bin/python bench/analytics_bench.py --rows 1000000
        .venv/bin/python bench/analytics_bench.py --rows 20000000 --days 30 --keep    (~10 GB; keep to re-measure)
        .venv/bin/python bench/analytics_bench.py --schema bench_xxxxxxxxxx            (re-measure a kept load)
        .venv/bin/python bench/analytics_bench.py --schema bench_xxxxxxxxxx --series-only   (the series lines only)

1. A fresh schema on PostgreSQL (PREDMESH_BENCH_PG_URL, else PREDMESH_TEST_PG_URL, else the local test database),
   migrated. With --indexes-after the migrations from m0006 on are applied after the load instead, each timed, so
   the time a migration takes per million existing rows is measured (m0006 builds its indexes CONCURRENTLY then).
2. The load: N rows, time-ordered over the last D days, through the project's COPY path (repo.insert_predictions,
   the writer's insert) in chunks, generated in a second thread; rows/s and the on-disk size (table, indexes, the
   schema's other tables such as aggregates), then the planner statistics as the writer keeps them
   (database.statistics.analyze_if_due, autovacuum's rule: this machine's PostgreSQL runs without autovacuum).
3. `python -m inference serve` (one process, persistence off) on that schema; each call is made --calls times in a
   row after 2 unmeasured ones, with a 30 s deadline (PREDMESH_ANALYTICS_MAX_SECONDS=--max-seconds, so a slow
   call is measured rather than refused): p50 and p99 per call, any error status with its message, and the CPU a
   call cost (utime + stime from /proc of the server process and of the PostgreSQL backends of its connections:
   less sensitive to a loaded machine than the latencies).
   GetStats: windows 1h, 24h, 7d, 30d, all × filters none and model (the filters GetStatsRequest has; version,
   transport and label are breakdowns of its answer), the dashboard's series calls (each window of its selector
   with its bucket width) and 24 h in 5-minute buckets (the heaviest series shape). Each window ends at the load's
   end; on a kept schema (--schema) at the end of its newest minute of rows, so a re-measure hours later reads
   the rows its windows held when loaded (a window ending at the clock would hold fewer and fewer).
   ListPredictions: filters none, model, model+version, version, label, transport, a rare transport (queue, 3%)
   and request_id, at page 1 and at page 10,000 (a page token at depth 10,000 × page size, made once from the row
   at that offset; the measured call seeks with it), or the deepest page the filter has when it has fewer rows.
Not part of the test suite.
"""
from __future__ import annotations

import argparse
import math
import os
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadtools
from bench.persistence import DEFAULT_PG, Schema

HOUR, DAY = 3600, 86400
WINDOWS = (("1h", HOUR), ("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY), ("all", None))
# (model, version, share), (transport, share): what the rows are made of
MODELS = (("iris", "1", 0.30), ("iris", "2", 0.60), ("wine", "1", 0.10))
CLASSES = {"iris": ("setosa", "versicolor", "virginica"), "wine": ("class_0", "class_1", "class_2")}
FEATURES = {"iris": ("sepal_length", "sepal_width", "petal_length", "petal_width"),
            "wine": ("alcohol", "malic_acid", "ash", "magnesium")}
TRANSPORTS = (("grpc", 0.55), ("rest", 0.30), ("batch", 0.12), ("queue", 0.03))
CHUNK = 20_000
DEPTH = 10_000  # the deep page
# GetStats with a series: the dashboard's windows and bucket widths (ui/analytics.py WINDOWS), then a day in
# 5-minute buckets (a Grafana-style panel; the heaviest shape: 1,440 minute rows per key, no coarser width fits)
DASHBOARD = (("15m", 900, 60), ("1h", HOUR, 300), ("6h", 6 * HOUR, 1800), ("24h", DAY, 2 * HOUR), ("all", None, DAY))
SERIES = (*DASHBOARD, ("24h", DAY, 300))


def chunks(rows: int, days: float, end: float, seed: int = 7):
    """Lists of PredictionRecord, oldest first, covering [end - days, end) evenly with random gaps."""
    from database.records import PredictionRecord
    rng = random.Random(seed)
    start = end - days * DAY
    step = (end - start) / rows
    choices = [(m, v) for m, v, _ in MODELS]
    weights = [w for *_, w in MODELS]
    transports, tweights = [t for t, _ in TRANSPORTS], [w for _, w in TRANSPORTS]
    made = 0
    while made < rows:
        n = min(CHUNK, rows - made)
        models = rng.choices(choices, weights, k=n)
        ts = rng.choices(transports, tweights, k=n)
        out = []
        for i in range(n):
            model, version = models[i]
            classes = CLASSES[model]
            pick = rng.randrange(3)
            p = 0.6 + 0.39 * rng.random()
            rest = (1 - p) / 2
            out.append(PredictionRecord(
                prediction_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                request_id=f"req-{made + i}", model=model, model_version=version,
                features={name: round(rng.uniform(0, 10), 2) for name in FEATURES[model]},
                label=classes[pick], probabilities={c: (p if j == pick else rest) for j, c in enumerate(classes)},
                transport=ts[i], latency_ms=rng.lognormvariate(0.0, 0.6),
                created_at=start + (made + i + rng.random()) * step))
        made += n
        yield out


def load(rows: int, days: float, end: float) -> float:
    """Insert the rows through repo.insert_predictions (COPY) while a thread makes the next chunk; seconds."""
    from database import repo
    from database.connect import session
    ready: queue.Queue = queue.Queue(maxsize=2)

    def make() -> None:
        for chunk in chunks(rows, days, end):
            ready.put(chunk)
        ready.put(None)
    threading.Thread(target=make, daemon=True).start()
    started = time.perf_counter()
    done, last_report = 0, started
    while (chunk := ready.get()) is not None:
        with session():
            repo.insert_predictions(chunk)
        done += len(chunk)
        now = time.perf_counter()
        if now - last_report > 30:
            print(f"  loaded {done:,} rows, {done / (now - started):,.0f} rows/s", flush=True)
            last_report = now
    return time.perf_counter() - started


def sizes(schema: Schema) -> dict[str, int]:
    """On-disk bytes: predictions (every partition of it, when partitioned: the parent itself holds nothing), its
    heap and indexes, each index (summed over its partitions), each other table of the schema and the schema."""
    tree = f"pg_partition_tree('{schema.name}.predictions')"
    [(table, heap, indexes)] = schema._sql(
        f"SELECT COALESCE(sum(pg_total_relation_size(relid)), 0), COALESCE(sum(pg_relation_size(relid)), 0), "
        f"COALESCE(sum(pg_indexes_size(relid)), 0) FROM {tree} WHERE isleaf")
    per_index = dict(schema._sql(
        f"SELECT c.relname, (SELECT COALESCE(sum(pg_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t) "
        f"FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = "
        f"to_regclass('{schema.name}.predictions') ORDER BY 2 DESC"))
    others = dict(schema._sql(
        f"SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON "
        f"n.oid = c.relnamespace WHERE n.nspname = '{schema.name}' AND c.relkind IN ('r', 'm') "
        "AND NOT c.relispartition ORDER BY 2 DESC"))
    return {"predictions (heap + TOAST + indexes)": int(table), "heap": int(heap), "indexes": int(indexes),
            "schema (every table)": int(table) + sum(int(v) for v in others.values()),
            **{f"  index {k}": int(v) for k, v in per_index.items()},
            **{f"  table {k} (with its indexes)": int(v) for k, v in others.items()}}


def start_server(store: Path, db_url: str, log: Path, max_seconds: float):
    port = loadtools.free_port()
    env = {**os.environ, "PREDMESH_GRPC_ADDR": f"127.0.0.1:{port}", "PREDMESH_METRICS_ADDR": "",
           "PREDMESH_MODEL_STORE": str(store), "PREDMESH_PERSISTENCE": "off", "PREDMESH_DATABASE_URL": db_url,
           "PREDMESH_PROCESSES": "1", "PREDMESH_DRAIN_SECONDS": "0", "PREDMESH_LOG_LEVEL": "WARNING",
           "PREDMESH_ANALYTICS_MAX_SECONDS": str(max_seconds)}
    proc = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train"], cwd=ROOT, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    target = f"127.0.0.1:{port}"
    import grpc
    deadline = time.monotonic() + 120
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=max(1.0, deadline - time.monotonic()))
        except grpc.FutureTimeoutError:
            proc.kill()
            raise SystemExit(f"the server did not come up; see {log}") from None
    return proc, target


TICKS = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int) -> int:
    """CPU ticks (user + system) a process has used; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def serving_pids(server: int, database) -> set[int]:
    """The server process and the PostgreSQL backends of its connections (their client ports, from the server's
    sockets in /proc, looked up in pg_stat_activity): whose CPU a call costs."""
    inodes = set()
    for fd in os.listdir(f"/proc/{server}/fd"):
        try:
            link = os.readlink(f"/proc/{server}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[9] in inodes and fields[2].endswith(":1538"):  # to port 5432
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    if not ports:
        return {server}
    from database.connect import session
    with session():
        backends = database.execute_sql("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,))
        return {server, *(int(pid) for (pid,) in backends)}


def measure(call, request, calls: int, cpu=None) -> tuple[list[float], str, float]:
    """Latencies in ms of `calls` calls after 2 unmeasured ones; the first error's status and message, if any; and
    the CPU ms a measured call cost the processes cpu() names (the server and its database backends; NaN without)."""
    import grpc
    times: list[float] = []
    pids: set[int] = set()
    before: dict[int, int] = {}
    for i in range(calls + 2):
        if i == 2 and cpu is not None:
            pids = cpu()
            before = {pid: _ticks(pid) for pid in pids}
        t0 = time.perf_counter()
        try:
            call(request, timeout=30)
        except grpc.RpcError as exc:
            return times, f"{exc.code().name}: {exc.details()}", math.nan
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1000)
    if cpu is None:
        return times, "", math.nan
    pids |= cpu()  # a backend that began meanwhile counts from 0
    used = sum(_ticks(pid) - before.get(pid, 0) for pid in pids)
    return times, "", used / TICKS * 1000 / calls


def pct(values: list[float], q: float) -> float:
    from predmesh.percentile import percentile
    return percentile(sorted(values), q)


def report(name: str, times: list[float], error: str, results: list, cpu_ms: float = math.nan) -> None:
    if error:
        line = f"  {name:<46} ERROR {error[:160]}"
    else:
        line = f"  {name:<46} p50 {pct(times, 0.5):9.1f} ms   p99 {pct(times, 0.99):9.1f} ms"
        if not math.isnan(cpu_ms):
            line += f"   CPU {cpu_ms:6.1f} ms a call"
    print(line, flush=True)
    results.append((name, times, error))


def deep_token(flt, page_size: int) -> tuple[str, int]:
    """A page token at depth DEPTH × page_size (or the deepest page the filter has) and the page number."""
    from database import repo
    from database.connect import session
    from database.models import Prediction
    with session():
        count = repo.count_predictions(flt) if page_size * DEPTH > 2_000_000 else None
        offset = page_size * (DEPTH - 1)
        row = (Prediction.select(Prediction.created_at, Prediction.prediction_id).where(*repo._where(flt))
               .order_by(Prediction.created_at.desc(), Prediction.prediction_id.desc()).offset(offset - 1).limit(1)
               .first())
        if row is None:
            count = count if count is not None else repo.count_predictions(flt)
            pages = max(1, (count - 1) // page_size)
            offset = page_size * pages
            row = (Prediction.select(Prediction.created_at, Prediction.prediction_id).where(*repo._where(flt))
                   .order_by(Prediction.created_at.desc(), Prediction.prediction_id.desc()).offset(offset - 1)
                   .limit(1).first())
            if row is None:
                return "", 1
            return repo._encode_token(row), pages + 1
        return repo._encode_token(row), DEPTH


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--calls", type=int, default=20, help="measured calls per line (after 2 unmeasured)")
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="the server's PREDMESH_ANALYTICS_MAX_SECONDS")
    parser.add_argument("--pg-url", default=os.environ.get("PREDMESH_BENCH_PG_URL")
                        or os.environ.get("PREDMESH_TEST_PG_URL") or DEFAULT_PG)
    parser.add_argument("--indexes-after", action="store_true",
                        help="load before m0006 and later migrations, then apply and time them")
    parser.add_argument("--keep", action="store_true", help="keep the schema (its name is printed)")
    parser.add_argument("--schema", help="measure an existing schema kept by --keep (no load)")
    parser.add_argument("--skip-stats", action="store_true", help="measure ListPredictions only")
    parser.add_argument("--series-only", action="store_true",
                        help="measure the GetStats series lines only (A/B rounds of a change to the series path)")
    args = parser.parse_args()

    from database import migrate as migrations
    from database import repo
    from database.connect import open_database, session
    from database.statistics import analyze_if_due
    from predmesh.v1 import analytics_pb2, analytics_pb2_grpc

    if args.schema:
        schema = Schema.__new__(Schema)
        from urllib.parse import quote

        import psycopg2
        schema.psycopg2, schema.base, schema.name = psycopg2, args.pg_url, args.schema
        sep = "&" if "?" in args.pg_url else "?"
        schema.url = f"{args.pg_url}{sep}options={quote(f'-c search_path={args.schema}')}"
    else:
        schema = Schema(args.pg_url)
    work = Path(tempfile.mkdtemp(prefix="predmesh-bench-analytics-"))
    database = open_database(schema.url, statement_timeout_ms=3_600_000)
    end = time.time()
    proc = None
    try:
        print(f"PostgreSQL schema {schema.name}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
              flush=True)
        everything = migrations.available()
        if not args.schema:
            later = [n for n in everything if n >= "m0006"] if args.indexes_after else []
            first = [n for n in everything if n not in later]
            setattr(migrations, "available", lambda: first)  # noqa: B010 - the runner applies these only
            with session():
                migrations.migrate(database)
            # a daily partition for every day the rows cover, as a server's maintenance keeps them on a partitioned
            # table, not one DEFAULT partition holding all but the last day (feedback_scale.py does the same)
            from database.partitions import ensure_partitions
            ensure_partitions(database, now=end, behind=math.ceil(args.days) + 1)
            took = load(args.rows, args.days, end)
            print(f"load: {args.rows:,} rows over {args.days:g} days through repo.insert_predictions (COPY) in "
                  f"{took:.1f} s = {args.rows / took:,.0f} rows/s", flush=True)
        setattr(migrations, "available", lambda: everything)  # noqa: B010
        with session():
            later = migrations.pending(database)  # --indexes-after, or a kept schema behind the code
            total = repo.count_predictions()
        for name in later:
            only = [n for n in everything if n <= name]
            setattr(migrations, "available", lambda only=only: only)  # noqa: B010
            t0 = time.perf_counter()
            with session():
                migrations.migrate(database)
            took = time.perf_counter() - t0
            print(f"migration {name} on {total:,} rows: {took:.1f} s = {took / max(total, 1) * 1e6:.1f} s per "
                  "million rows", flush=True)
        setattr(migrations, "available", lambda: everything)  # noqa: B010
        t0 = time.perf_counter()
        with session():
            ran = analyze_if_due(0.1)
        print(f"planner statistics (the writer's rule, analyze_if_due): ANALYZE {'ran' if ran else 'not due'} "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        with session():
            total = repo.count_predictions()
        for name, value in sizes(schema).items():
            print(f"size {name}: {value / 2**20:,.1f} MiB" + (f" ({value / total:.0f} B/row)" if total and
                  not name.startswith("  ") else ""), flush=True)

        store = work / "models"
        subprocess.run([sys.executable, "-m", "inference", "train", "--model", "iris", "--estimator", "lr"],
                       cwd=ROOT, env={**os.environ, "PREDMESH_MODEL_STORE": str(store)}, check=True,
                       capture_output=True)
        proc, target = start_server(store, schema.url, work / "server.log", args.max_seconds)
        import grpc
        from google.protobuf.timestamp_pb2 import Timestamp
        results: list = []
        with grpc.insecure_channel(target) as channel:
            stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)

            server_pid = proc.pid

            def cpu() -> set[int]:
                return serving_pids(server_pid, database)
            now = end
            if args.schema:  # a kept load: its windows end where its rows end, so they hold what they held then
                with session():
                    [(newest,)] = database.execute_sql("SELECT MAX(bucket_start) FROM stats_rollup WHERE width = 60")
                now = float(newest + 60) if newest is not None else end
            until = Timestamp(seconds=int(now))
            print(f"GetStats ({total:,} rows; {args.calls} calls each):", flush=True)
            for wname, seconds in () if args.skip_stats or args.series_only else WINDOWS:
                for fname, model in (("none", ""), ("model=iris", "iris")):
                    request = analytics_pb2.GetStatsRequest(model=model, end_time=until)
                    if seconds is not None:
                        request.start_time.CopyFrom(Timestamp(seconds=int(now - seconds)))
                    times, error, used = measure(stub.GetStats, request, args.calls, cpu)
                    report(f"GetStats window {wname} filter {fname}", times, error, results, used)
            for wname, seconds, width in () if args.skip_stats else SERIES:
                series = analytics_pb2.GetStatsRequest(bucket_seconds=width, end_time=until)
                if seconds is not None:
                    series.start_time.CopyFrom(Timestamp(seconds=int(now - seconds)))
                times, error, used = measure(stub.GetStats, series, args.calls, cpu)
                report(f"GetStats {wname} in {width // 60:,}-minute buckets"
                       + (" (dashboard)" if (wname, seconds, width) in DASHBOARD else ""), times, error, results,
                       used)

            print(f"ListPredictions (page size {args.page_size}):", flush=True)
            filters: tuple[tuple[str, dict[str, str]], ...] = () if args.series_only else (
                       ("none", {}), ("model=wine", {"model": "wine"}),
                       ("model=iris version=2", {"model": "iris", "model_version": "2"}),
                       ("version=1", {"model_version": "1"}), ("label=virginica", {"label": "virginica"}),
                       ("transport=rest", {"transport": "rest"}), ("transport=queue (3%)", {"transport": "queue"}),
                       ("request_id", {"request_id": f"req-{total // 2}"}))
            for fname, fields in filters:
                transport = fields.get("transport", "")
                listing = analytics_pb2.ListPredictionsRequest(
                    page_size=args.page_size, model=fields.get("model", ""),
                    model_version=fields.get("model_version", ""), label=fields.get("label", ""),
                    request_id=fields.get("request_id", ""))
                if transport:
                    from predmesh.types import transport_value
                    listing.transport = transport_value(transport)
                times, error, used = measure(stub.ListPredictions, listing, args.calls, cpu)
                report(f"ListPredictions {fname} page 1", times, error, results, used)
                if "request_id" in fields:
                    continue
                flt = repo.PredictionFilter(model=fields.get("model", ""),
                                            model_version=fields.get("model_version", ""),
                                            label=fields.get("label", ""), transport=transport)
                token, page = deep_token(flt, args.page_size)
                if not token:
                    continue
                listing.page_token = token
                times, error, used = measure(stub.ListPredictions, listing, args.calls, cpu)
                report(f"ListPredictions {fname} page {page:,}", times, error, results, used)
        worst = max((pct(t, 0.99) for _, t, e in results if t and not e), default=0.0)
        errors = [n for n, _, e in results if e]
        print(f"worst p99 {worst:.1f} ms over {len(results)} lines; {len(errors)} failed"
              + (f": {', '.join(errors)}" if errors else ""), flush=True)
        print(f"median of p50s {statistics.median(pct(t, 0.5) for _, t, e in results if t and not e):.1f} ms")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        database.close()
        if args.keep or args.schema:
            print(f"schema kept: {schema.name} (re-measure with --schema {schema.name}; drop it with "
                  f"DROP SCHEMA {schema.name} CASCADE)")
        else:
            schema.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
