"""A feedback call's time as the stored predictions grow (issue #24): SubmitFeedback and SubmitFeedbackBatch through
a real server at a small table and at a large one, on PostgreSQL.

Usage:  .venv/bin/python bench/feedback_scale.py                               (10,000 vs 1,000,000 rows)
        .venv/bin/python bench/feedback_scale.py --rows 10000,10000000         (the issue's 10 M; see bench/README.md)
        .venv/bin/python bench/feedback_scale.py --rows 10000,1000000 --calls 300 --batch 100 --rounds 3

1. Per size, a fresh schema on PostgreSQL (--pg-url, else PREDMESH_BENCH_PG_URL, PREDMESH_TEST_PG_URL, the local
   test database), migrated; N predictions of iris versions 1 and 2 over --days days loaded by COPY straight into
   the table (the fastest bulk path: COPY text made by a second thread while the first copies, the indexes no
   constraint needs dropped meanwhile and built again after), 5% of them with feedback already (COPY too) and their
   confusion counts (stats_feedback, as the m0005 backfill makes them), then ANALYZE. Load time and rows/s are printed.
2. `python -m inference serve` (one process, persistence off, writes open) per schema, both at once. In --rounds
   rounds, alternating the sizes (so a change of the machine's load falls on both): --calls SubmitFeedback calls
   (one prediction each) and --calls // 5 SubmitFeedbackBatch calls (--batch predictions each) on predictions
   drawn at random from the whole table, a random class as label (some overwrite earlier feedback), through the
   SDK, one after another.
3. p50 / p99 per size and call, their ratio large / small, and CPU per call: the server process and the
   PostgreSQL backends serving it (from /proc, steadier than wall time on a busy machine).
Not part of the test suite.
"""
from __future__ import annotations

import argparse
import io
import os
import queue
import random
import re
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
from bench.persistence import DEFAULT_PG, Schema

DAY = 86400
CLASSES = ("setosa", "versicolor", "virginica")
CHUNK = 50_000
FEEDBACK_SHARE = 0.05
COLUMNS = ("prediction_id, request_id, model, model_version, features, label, probabilities, transport, "
           "latency_ms, created_at, request_hash")


def chunks(rows: int, days: float, end: float, sample: int, seed: int):
    """(COPY text of predictions, COPY text of feedback, [(prediction_id, label)] drawn for the calls) per chunk of
    CHUNK rows, oldest first, evenly over [end - days, end)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    features = [f'{{"sepal_length":{a:.1f},"sepal_width":{b:.1f},"petal_length":{c:.1f},"petal_width":{d:.1f}}}'
                for a, b, c, d in rng.uniform(0.1, 8.0, (997, 4))]
    probabilities = {c: "{" + ",".join(f'"{k}":{0.8 if k == c else 0.1}' for k in CLASSES) + "}" for c in CLASSES}
    start, step = end - days * DAY, days * DAY / rows
    keep = min(1.0, 3 * sample / rows)  # the share of rows drawn for the calls (some spare)
    made = 0
    while made < rows:
        n = min(CHUNK, rows - made)
        hexes = os.urandom(16 * n).hex()
        ids = [f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
               for h in (hexes[i:i + 32] for i in range(0, 32 * n, 32))]
        labels = rng.integers(0, 3, n)
        versions = rng.integers(1, 3, n)
        feature_pick = rng.integers(0, len(features), n)
        latency = rng.lognormal(0.0, 0.6, n).round(3)
        stamps = np.datetime_as_string(
            (np.datetime64("1970-01-01T00:00:00", "us")
             + ((start + (made + np.arange(n) + rng.random(n)) * step) * 1e6).astype("timedelta64[us]")), unit="us")
        lines = [f"{ids[i]}\tfs-{made + i}\tiris\t{versions[i]}\t{features[feature_pick[i]]}\t{CLASSES[labels[i]]}\t"
                 f"{probabilities[CLASSES[labels[i]]]}\tgrpc\t{latency[i]}\t{stamps[i]}\t\\N\n" for i in range(n)]
        labelled = np.flatnonzero(rng.random(n) < FEEDBACK_SHARE)
        truth = np.where(rng.random(len(labelled)) < 0.9, labels[labelled], rng.integers(0, 3, len(labelled)))
        feedback = [f"{ids[i]}\t{CLASSES[t]}\t{stamps[i]}\n" for i, t in zip(labelled.tolist(), truth.tolist())]
        drawn = [(ids[i], CLASSES[labels[i]]) for i in np.flatnonzero(rng.random(n) < keep).tolist()]
        made += n
        yield "".join(lines), "".join(feedback), drawn


def load(schema: Schema, rows: int, days: float, sample: int, seed: int) -> tuple[list[tuple[str, str]], float]:
    """COPY the rows (a thread makes the next chunk's text meanwhile), the feedback and its confusion counts;
    returns (predictions drawn for the calls, seconds)."""
    import psycopg2

    from database import aggregates
    conn = psycopg2.connect(schema.url)
    ready: queue.Queue = queue.Queue(maxsize=2)

    def make() -> None:
        for chunk in chunks(rows, days, time.time(), sample, seed):
            ready.put(chunk)
        ready.put(None)

    threading.Thread(target=make, daemon=True).start()
    began = last = time.perf_counter()
    drawn: list[tuple[str, str]] = []
    done = 0
    with conn.cursor() as cur:
        cur.execute("SET synchronous_commit = off")
        cur.execute("SET maintenance_work_mem = '256MB'")
        # the indexes no constraint needs are dropped for the load and built again after it (a sort per index is
        # several times cheaper than keeping them row by row); the primary key stays (feedback refers to it)
        cur.execute("SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                    "WHERE i.indrelid = 'predictions'::regclass AND NOT EXISTS "
                    "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)")
        indexes = cur.fetchall()
        for name, _ in indexes:
            cur.execute(f"DROP INDEX {name}")
        conn.commit()
        while (chunk := ready.get()) is not None:
            predictions, feedback, picked = chunk
            cur.copy_expert(f"COPY predictions ({COLUMNS}) FROM STDIN", io.StringIO(predictions))
            cur.copy_expert("COPY feedback (prediction_id, label, created_at) FROM STDIN", io.StringIO(feedback))
            conn.commit()
            drawn += picked
            done += predictions.count("\n")
            if time.perf_counter() - last > 30:
                last = time.perf_counter()
                print(f"  loaded {done:,} rows, {done / (last - began):,.0f} rows/s", flush=True)
        for _, definition in indexes:
            cur.execute(definition)
        # the claims, as the writer makes them (m0014: a COPY of rows claims nothing by itself)
        cur.execute("INSERT INTO prediction_keys (prediction_id, created_at) "
                    "SELECT prediction_id, created_at FROM predictions ORDER BY prediction_id")
        conn.commit()
        # the confusion counts of the loaded feedback, per bucket of each width (as the m0005 backfill makes them)
        widths = ", ".join(f"({w})" for w in aggregates.WIDTHS)
        cur.execute(f"""
            WITH m AS (SELECT (floor(EXTRACT(EPOCH FROM p.created_at) / 60) * 60)::bigint AS minute, p.model,
                              p.model_version, p.label AS predicted, f.label AS actual, COUNT(*) AS n
                       FROM predictions p JOIN feedback f ON f.prediction_id = p.prediction_id GROUP BY 1, 2, 3, 4, 5)
            INSERT INTO stats_feedback (width, bucket_start, {", ".join(aggregates.FEEDBACK_KEY)}, n)
            SELECT w.width, m.minute - ((m.minute % w.width) + w.width) % w.width, model, model_version, predicted,
                   actual, SUM(n)::bigint
            FROM m CROSS JOIN (VALUES {widths}) AS w(width) GROUP BY 1, 2, 3, 4, 5, 6""")
        conn.commit()
        conn.autocommit = True
        cur.execute("ANALYZE predictions, feedback, stats_feedback")
    conn.close()
    return drawn, time.perf_counter() - began


def start_server(store: Path, db_url: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = loadtools.free_port()
    env = {**os.environ, "PREDMESH_GRPC_ADDR": f"127.0.0.1:{port}", "PREDMESH_METRICS_ADDR": "",
           "PREDMESH_MODEL_STORE": str(store), "PREDMESH_PERSISTENCE": "off", "PREDMESH_DATABASE_URL": db_url,
           "PREDMESH_PROCESSES": "1", "PREDMESH_DRAIN_SECONDS": "0", "PREDMESH_LOG_LEVEL": "WARNING",
           "PREDMESH_OPEN_WRITES": "1", "PREDMESH_DRIFT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train"], cwd=ROOT, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    target = f"127.0.0.1:{port}"
    import grpc
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=120)
        except grpc.FutureTimeoutError:
            proc.kill()
            raise SystemExit(f"the server did not come up; see {log}") from None
    return proc, target


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends_of(pid: int, pg_url: str) -> list[int]:
    """The PostgreSQL backends serving a local process's connections (its TCP client ports, from ss, matched to
    pg_stat_activity.client_port)."""
    import psycopg2
    out = subprocess.run(["ss", "-Htnp", "state", "established"], capture_output=True, text=True).stdout
    ports = [int(m.group(1)) for line in out.splitlines() if f"pid={pid}," in line
             for m in [re.search(r"127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:5432\b", line)] if m]
    if not ports:
        return []
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s)", (ports,))
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


class Size:
    """One table size: its schema, server and the predictions drawn for the calls."""

    def __init__(self, rows: int, schema: Schema, drawn: list[tuple[str, str]], proc, target: str):
        self.rows, self.schema, self.drawn, self.proc, self.target = rows, schema, drawn, proc, target
        self.times: dict[str, list[float]] = {"SubmitFeedback": [], "SubmitFeedbackBatch": []}
        self.cpu: dict[str, list[float]] = {"SubmitFeedback": [], "SubmitFeedbackBatch": []}


def measure(size: Size, client, kind: str, calls: int, batch: int, rng: random.Random, pg_url: str) -> None:
    """calls calls of one kind (after 3 unmeasured ones), their times and the CPU they cost per call."""
    def one() -> None:
        if kind == "SubmitFeedback":
            pid, _ = rng.choice(size.drawn)
            client.submit_feedback(pid, rng.choice(CLASSES))
        else:
            answer = client.submit_feedback_batch({pid: rng.choice(CLASSES) for pid, _ in rng.sample(size.drawn,
                                                                                                      batch)})
            assert answer.recorded == batch, answer
    for _ in range(3):
        one()
    backends = backends_of(size.proc.pid, pg_url)
    cpu0 = cpu_seconds(size.proc.pid) + sum(cpu_seconds(b) for b in backends)
    for _ in range(calls):
        t0 = time.perf_counter()
        one()
        size.times[kind].append((time.perf_counter() - t0) * 1000)
    used = cpu_seconds(size.proc.pid) + sum(cpu_seconds(b) for b in backends) - cpu0
    size.cpu[kind].append(used * 1000 / calls)


def pct(values: list[float], q: float) -> float:
    from predmesh.percentile import percentile
    return percentile(sorted(values), q)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="10000,1000000", help="table sizes, comma-separated (smallest first)")
    p.add_argument("--days", type=float, default=30.0, help="the predictions span this many days")
    p.add_argument("--calls", type=int, default=200, help="SubmitFeedback calls per size and round")
    p.add_argument("--batch", type=int, default=100, help="predictions per SubmitFeedbackBatch call")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pg-url", default=os.environ.get("PREDMESH_BENCH_PG_URL")
                   or os.environ.get("PREDMESH_TEST_PG_URL") or DEFAULT_PG)
    args = p.parse_args()
    sizes_wanted = sorted(int(r) for r in args.rows.split(","))
    batch_calls = max(1, args.calls // 5)
    sample = args.rounds * (args.calls + 3 + (batch_calls + 3) * args.batch)

    from database.connect import open_database
    from database.migrate import migrate
    from database.partitions import ensure_partitions
    from inference.models.store import ModelStore
    from inference.models.train import train
    from predmesh import Client

    work = Path(tempfile.mkdtemp(prefix="feedback-scale-"))
    store = work / "models"
    train(ModelStore(store), "iris", "lr")
    train(ModelStore(store), "iris", "lr", seed=2)  # versions 1 and 2, as the rows say
    sizes: list[Size] = []
    schemas: list[Schema] = []
    try:
        for rows in sizes_wanted:
            schema = Schema(args.pg_url)
            schemas.append(schema)
            database = open_database(schema.url)
            migrate(database)
            # a daily partition for every day the rows cover (on a partitioned table, as a server's maintenance
            # keeps them), not one DEFAULT partition holding them all
            ensure_partitions(database, behind=int(args.days) + 1)
            database.close()
            drawn, took = load(schema, rows, args.days, sample, seed=rows)
            print(f"{rows:,} rows (+{FEEDBACK_SHARE:.0%} with feedback) loaded by COPY in {took:.1f} s = "
                  f"{rows / took:,.0f} rows/s (schema {schema.name})", flush=True)
            proc, target = start_server(store, schema.url, work / f"server-{rows}.log")
            sizes.append(Size(rows, schema, drawn, proc, target))
        rng = random.Random(1)
        for r in range(args.rounds):
            for size in sizes if r % 2 == 0 else reversed(sizes):
                with Client(size.target, timeout=30) as client:
                    measure(size, client, "SubmitFeedback", args.calls, args.batch, rng, args.pg_url)
                    measure(size, client, "SubmitFeedbackBatch", batch_calls, args.batch, rng, args.pg_url)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
        base = sizes[0]
        for kind in ("SubmitFeedback", "SubmitFeedbackBatch"):
            what = kind if kind == "SubmitFeedback" else f"{kind} ({args.batch} items)"
            print(f"{what}:")
            for size in sizes:
                t = size.times[kind]
                print(f"  {size.rows:>12,} rows  p50 {pct(t, 0.5):7.2f} ms  p99 {pct(t, 0.99):7.2f} ms  "
                      f"CPU {statistics.median(size.cpu[kind]):6.2f} ms/call (server + its PostgreSQL backends)  "
                      f"[{len(t)} calls]")
            for size in sizes[1:]:
                ratio50 = pct(size.times[kind], 0.5) / pct(base.times[kind], 0.5)
                ratio99 = pct(size.times[kind], 0.99) / pct(base.times[kind], 0.99)
                cpu = statistics.median(size.cpu[kind]) / statistics.median(base.cpu[kind])
                print(f"  {size.rows:,} / {base.rows:,} rows: p50 x{ratio50:.2f}, p99 x{ratio99:.2f}, "
                      f"CPU x{cpu:.2f}")
    finally:
        for size in sizes:
            size.proc.terminate()
            size.proc.wait(30)
        for schema in schemas:
            schema._sql(f"DROP SCHEMA IF EXISTS {schema.name} CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
