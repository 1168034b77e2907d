"""End-to-end batch scoring: N rows (default 100,000) from an input CSV through the server into PostgreSQL rows and
an output CSV, the way `predmesh batch score` does it, with rows/s and where the time goes.

Usage:  .venv/bin/python bench/batch_bench.py [--rows 100000] [--rounds 3] [--processes 2] [--runtime native]
                                             [--chunk-rows N] [--inflight N] [--channels N] [--pg-url URL]

It trains iris (LogisticRegression) into a temp store, starts `python -m inference serve` with durable
persistence (PREDMESH_PERSISTENCE=durable: every answer is fsynced to the spool before it is sent) on a fresh
PostgreSQL schema (PREDMESH_BENCH_PG_URL, else PREDMESH_TEST_PG_URL, else the local test database), writes the
input file (synthetic rows from the model's class profiles), then per round: batch.scorefile.score_file (read,
validate, PredictBatch chunks in flight, rejects + output written atomically) and waits until PostgreSQL holds
every row. A round's clock runs from opening the input file to the last row committed in PostgreSQL (or the
output file, whichever is later). Each round uses a fresh copy of the input (new content hash → new request ids,
so every round really stores N rows). Phases, in the wall time of score_file's own thread (which validates and
formats one block while the next is being scored): reading (hash, parse, validate), waiting for scores (split by
the server-reported handling time into "server: validation, scoring, spool commit" and "gRPC + client":
encoding, transport, decoding), writing the output (formatting the blocks, the file), storing (the writer's tail
after the output is written: rows still on their way to PostgreSQL). CPU seconds per process (server, client,
the server's PostgreSQL backends) are reported too: on a busy machine CPU per row is the figure to compare.
Target: >= 50,000 rows/s (goal 100,000).
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
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadtools
from bench.persistence import DEFAULT_PG, Schema, cpu_seconds


def start_server(store: Path, db_url: str, spool: Path, processes: int, runtime: str, log: Path):
    port = loadtools.free_port()
    env = {**os.environ, "PREDMESH_GRPC_ADDR": f"127.0.0.1:{port}", "PREDMESH_METRICS_ADDR": "",
           "PREDMESH_MODEL_STORE": str(store), "PREDMESH_PERSISTENCE": "durable", "PREDMESH_DATABASE_URL": db_url,
           "PREDMESH_SPOOL_DIR": str(spool), "PREDMESH_PROCESSES": str(processes), "PREDMESH_DRAIN_SECONDS": "0",
           "PREDMESH_RUNTIME": runtime, "PREDMESH_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train"], cwd=ROOT, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    target = f"127.0.0.1:{port}"
    from predmesh import Client, PredmeshError
    deadline = time.monotonic() + 60
    with Client(target, timeout=2) as client:
        while True:
            try:
                client.get_model("iris")
                return proc, target
            except PredmeshError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not come up; see {log}") from None
                time.sleep(0.3)


def main() -> int:
    from batch.scoring import request_id_prefix
    from batch.settings import BatchSettings

    defaults = BatchSettings()  # the pipeline's defaults (no luigi.cfg loaded here)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2, help="PREDMESH_PROCESSES of the server")
    parser.add_argument("--runtime", default="native", choices=("sklearn", "native"))
    parser.add_argument("--chunk-rows", type=int, default=defaults.chunk_rows, help="default: the pipeline's")
    parser.add_argument("--inflight", type=int, default=defaults.inflight, help="default: the pipeline's")
    parser.add_argument("--channels", type=int, default=defaults.channels, help="default: the pipeline's")
    parser.add_argument("--pg-url", default=os.environ.get("PREDMESH_BENCH_PG_URL")
                        or os.environ.get("PREDMESH_TEST_PG_URL", DEFAULT_PG))
    args = parser.parse_args()

    from batch.scorefile import score_file
    from batch.scoring import Clients
    from batch.synth import synthesize
    from batch.table import write_csv
    from predmesh import Client

    work = Path(tempfile.mkdtemp(prefix="predmesh-bench-batch-"))
    store = work / "models"
    subprocess.run([sys.executable, "-m", "inference", "train", "--model", "iris", "--estimator", "lr"], cwd=ROOT,
                   env={**os.environ, "PREDMESH_MODEL_STORE": str(store)}, check=True, capture_output=True)
    schema = Schema(args.pg_url)
    # the server's connections carry the schema's name, so the bench finds their PostgreSQL backends
    proc, target = start_server(store, f"{schema.url}&application_name={schema.name}", work / "spool",
                                args.processes, args.runtime, work / "server.log")
    settings = BatchSettings(server=target, chunk_rows=args.chunk_rows, inflight=args.inflight,
                             channels=args.channels, timeout_s=60)
    with Client(target) as client:
        info = client.get_model("iris")
    header, rows = synthesize(info, date(2026, 11, 27), args.rows)
    header = header[:-1]  # no true label: a customer file
    base_input = work / "base.csv"
    write_csv(base_input, ["id", *header], ([f"base-{i}", *r[:-1]] for i, r in enumerate(rows)))
    print(f"{args.rows} rows ({base_input.stat().st_size / 1e6:.1f} MB CSV), server processes={args.processes}, "
          f"runtime={args.runtime}, persistence=durable → PostgreSQL schema {schema.name}; chunk {args.chunk_rows} "
          f"rows, {args.inflight} in flight over {args.channels} connections; {os.cpu_count()} CPUs "
          f"(load average {os.getloadavg()[0]:.1f} at start)", flush=True)
    results = []
    try:
        with Clients(settings) as clients:
            # warm-up: one small file so connections, caches and the first database batch are not measured
            warm = work / "warm.csv"
            write_csv(warm, header, [r[:-1] for r in rows[:2000]])
            score_file(clients, "iris", warm, work / "warm.out.csv", work / "warm.rejects.csv")
            loadtools.wait_for(lambda: schema.rows() >= 2000, 60, "warm-up rows stored")

            def backends() -> list[int]:  # the server's connections (a writer may open more as it goes)
                return [pid for (pid,) in schema._sql(
                    f"SELECT pid FROM pg_stat_activity WHERE application_name = '{schema.name}'")]
            for rnd in range(args.rounds):
                before = schema.rows()
                source = work / f"input-{rnd}.csv"  # an id column per round: new content, new request ids
                write_csv(source, ["id", *header], ([f"r{rnd}-{i}", *r[:-1]] for i, r in enumerate(rows)))
                cpu0 = cpu_seconds(proc.pid)
                pg0 = {pid: cpu_seconds(pid) for pid in backends()}
                client0 = time.process_time()
                t0 = time.perf_counter()
                outcome = score_file(clients, "iris", source, work / f"out-{rnd}.csv", work / f"rej-{rnd}.csv")
                t_written = time.perf_counter()
                # stored when the full count says so; polled cheaply first: the last row of every chunk (a chunk
                # is stored in one COPY), index probes on one open connection, not a count(*) every 20 ms, which
                # took a core from the writers during the storing tail
                prefix = request_id_prefix("iris", outcome.content_hash)
                sentinels = [f"{prefix}{n}" for n in {*range(settings.chunk_rows, args.rows + 1, settings.chunk_rows),
                                                       args.rows}]
                loadtools.wait_for(lambda: schema.stored(sentinels) == len(sentinels)
                                   and schema.rows() - before >= outcome.scored, 120, "rows stored", interval=0.005)
                t_stored = time.perf_counter()
                server_cpu = cpu_seconds(proc.pid) - cpu0
                pg_cpu = sum(cpu_seconds(pid) - pg0.get(pid, 0.0) for pid in backends())  # new ones: since they began
                client_cpu = time.process_time() - client0
                total = t_stored - t0
                tm = outcome.timings
                reading = tm["read"] + tm["parse"] + tm["validate"]
                score_wall = tm["score_wall"]
                server_share = min(1.0, tm["server"] / tm["grpc_calls"]) if tm["grpc_calls"] else 0.0
                tail = t_stored - t_written
                result = {"rows_per_s": outcome.scored / total, "total": total, "reading": reading,
                          "server": score_wall * server_share, "grpc": score_wall * (1 - server_share),
                          "write": tm["write"], "storing": tail, "stored": schema.rows() - before,
                          "rejected": outcome.rejected, "server_cpu": server_cpu, "client_cpu": client_cpu,
                          "pg_cpu": pg_cpu}
                results.append(result)
                print(f"  round {rnd + 1}: {outcome.scored} rows in {total:.2f} s = {result['rows_per_s']:,.0f} "
                      f"rows/s end to end ({outcome.scored / score_wall:,.0f} rows/s while scoring); stored "
                      f"{result['stored']} ({'ok' if result['stored'] == outcome.scored else 'MISMATCH'}), "
                      f"rejected {outcome.rejected}; CPU: server {server_cpu:.2f} s, client {client_cpu:.2f} s, "
                      f"PostgreSQL backends {pg_cpu:.2f} s",
                      flush=True)
                for name in ("reading", "grpc", "server", "write", "storing"):
                    print(f"      {name:<8} {result[name]:6.3f} s  {100 * result[name] / total:5.1f}%")
    finally:
        loadtools.stop(proc)
        schema.drop()
        shutil.rmtree(work, ignore_errors=True)
    best = max(results, key=lambda r: r["rows_per_s"])
    median = statistics.median(r["rows_per_s"] for r in results)
    server_us = statistics.median(r["server_cpu"] for r in results) / args.rows * 1e6
    client_us = statistics.median(r["client_cpu"] for r in results) / args.rows * 1e6
    pg_us = statistics.median(r["pg_cpu"] for r in results) / args.rows * 1e6
    total_us = server_us + client_us + pg_us
    print(f"\nCPU per row (median): server {server_us:.1f} us (all its processes: validation, scoring, spool, "
          f"writer), client {client_us:.1f} us (read, encode, decode, write), PostgreSQL {pg_us:.1f} us (the "
          f"server's backends: COPY, indexes, WAL); {total_us:.1f} us in all. With both cores to ourselves that "
          f"bounds the pipeline at ~{2e6 / total_us:,.0f} rows/s.")
    print(f"median {median:,.0f} rows/s, best {best['rows_per_s']:,.0f} rows/s end to end (target 50,000, goal "
          f"100,000); shares of the best round: " + ", ".join(
              f"{n} {100 * best[k] / best['total']:.0f}%" for n, k in (
                  ("reading", "reading"), ("gRPC+client", "grpc"), ("server (validate+score+spool)", "server"),
                  ("writing output", "write"), ("storing tail", "storing"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
