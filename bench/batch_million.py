"""`predmesh batch score` end to end against a plain pandas + scikit-learn + COPY script doing the same work, in the
same run: rows/s of each, their ratio, wall time, peak memory (RSS) of each client, CPU of the server.

Usage:  .venv/bin/python bench/batch_million.py [--rows 1000000] [--models iris,penguins] [--rounds 1]
                                               [--pg-url URL] [--server-env K=V ...] [--cli-env K=V ...]

One server (`python -m inference serve`) at its defaults (only its addresses, model store, spool and database are
set) on a fresh PostgreSQL schema (PREDMESH_BENCH_PG_URL, else PREDMESH_TEST_PG_URL, else the local test
database). Per model (iris: the demo's LogisticRegression; penguins: the categorical one-hot +
HistGradientBoosting pipeline of bench/penguins.py, imported as a user does) an input CSV of N synthetic rows
(an id column, then the features) is written once; each round copies it with new ids (new content: new request
ids, so every round stores N new rows), then runs, alternating which goes first:

- mesh: `predmesh batch score --model M --input F --output O --wait-stored` as a user runs it, at the batch
  defaults; it must exit 0, and PostgreSQL must then hold N more predictions (counted in the server's schema);
- baseline: bench/batch_baseline.py: pandas read_csv, the same stored artifact's predict_proba in process, one
  COPY of id, features, label and probabilities into a table with a primary key, the scored CSV written with
  pandas; its table must then hold N rows.

Each is a child process timed from its start to its exit (interpreter start and imports included for both);
its peak RSS and CPU come from /usr/bin/time; the CPU of the server and of its PostgreSQL backends (the mesh) and
of the baseline's backend come from /proc (PostgreSQL on this machine), also printed per 100,000 rows: on a busy
machine these vary far less than the wall times. Goal: mesh rows/s >= 1.0x the baseline's.
--server-env / --cli-env set variables of the server / of `predmesh batch score` (to try other settings; the
headline figures are at the defaults, without them).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadtools
from bench.persistence import DEFAULT_PG, Schema, cpu_seconds

MODELS = {"iris": "iris", "penguins": "penguins-hgb"}


@dataclass
class Child:
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    code: int
    stdout: str
    stderr: str


def run_child(argv: list[str], env: dict[str, str], log: Path) -> Child:
    """Run argv to its end under /usr/bin/time (a small parent, so the peak RSS is the program's own, not a copy
    of this process's pages from the fork); its wall time, peak RSS and CPU."""
    with tempfile.NamedTemporaryFile(suffix=".time") as timing, open(log, "w+b") as err, \
            tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-o", timing.name, "-f", "%M %U %S", *argv], cwd=ROOT, env=env,
                              stdout=out, stderr=err)
        wall = time.perf_counter() - t0
        fields = Path(timing.name).read_text().split()[-3:]  # a killed child's line starts "Command exited ..."
        out.seek(0)
        err.seek(0)
        return Child(wall, int(fields[0]) / 1024, float(fields[1]) + float(fields[2]), proc.returncode,
                     out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def start_server(store: Path, db_url: str, spool: Path, log: Path, extra: dict[str, str]):
    port = loadtools.free_port()
    env = {**os.environ, "PREDMESH_GRPC_ADDR": f"127.0.0.1:{port}", "PREDMESH_METRICS_ADDR": "",
           "PREDMESH_MODEL_STORE": str(store), "PREDMESH_DATABASE_URL": db_url, "PREDMESH_SPOOL_DIR": str(spool),
           "PREDMESH_LOG_LEVEL": "WARNING", **extra}
    for variable in ("PREDMESH_PROCESSES", "PREDMESH_RUNTIME", "PREDMESH_PERSISTENCE"):
        if variable not in extra:
            env.pop(variable, None)  # the server's defaults
    proc = subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train"], cwd=ROOT, env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    target = f"127.0.0.1:{port}"
    from predmesh import Client, PredmeshError
    deadline = time.monotonic() + 300  # a busy machine: loading and checking the models takes a while
    with Client(target, timeout=2) as client:
        while True:
            try:
                client.get_model("iris")
                return proc, target
            except PredmeshError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    stop(proc)
                    raise SystemExit(f"the server did not come up; see {log}") from None
                time.sleep(0.3)


def stop(proc: subprocess.Popen) -> None:
    loadtools.stop(proc)


def pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{item!r} is not KEY=VALUE")
        out[key] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--models", default="iris,penguins", help="comma-separated: iris, penguins")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pg-url", default=os.environ.get("PREDMESH_BENCH_PG_URL")
                        or os.environ.get("PREDMESH_TEST_PG_URL", DEFAULT_PG))
    parser.add_argument("--server-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--cli-env", action="append", default=[], metavar="K=V")
    parser.add_argument("--check", choices=("wait-stored", "count"), default="wait-stored",
                        help="how the mesh run knows every row is stored: `score --wait-stored` (default), or "
                             "score without it and count the rows in PostgreSQL until all are there (the clock "
                             "stops then)")
    parser.add_argument("--warmup-rows", type=int, default=2000, help="a first unmeasured run of each (0: none)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; choose from {sorted(MODELS)}")

    from batch.synth import synthesize
    from batch.table import write_csv
    from predmesh import Client

    work = Path(tempfile.mkdtemp(prefix="predmesh-bench-million-"))
    store = work / "models"
    subprocess.run([sys.executable, "-m", "inference", "train", "--model", "iris"], cwd=ROOT,
                   env={**os.environ, "PREDMESH_MODEL_STORE": str(store)}, check=True, capture_output=True)
    if "penguins" in models:
        from bench import penguins
        penguins.store(store, work)
    schema = Schema(args.pg_url)
    token = secrets.token_urlsafe(24)  # the score runs record their attempts, as a deployment's do
    try:
        proc, target = start_server(store, f"{schema.url}&application_name={schema.name}", work / "spool",
                                    work / "server.log", {"PREDMESH_WRITER_TOKEN": token, **pairs(args.server_env)})
    except BaseException:
        schema.drop()
        shutil.rmtree(work, ignore_errors=True)
        raise
    predmesh = str(Path(sys.executable).with_name("predmesh"))
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith(("PREDMESH_BATCH_", "LUIGI_"))}
    cli_env.update({"PREDMESH_SERVER_ADDR": target, "PREDMESH_WRITER_TOKEN": token,
                    "PREDMESH_BATCH_DIR": str(work / "batch"), "PREDMESH_LOG_LEVEL": "WARNING", "TQDM_DISABLE": "1",
                    **pairs(args.cli_env)})
    base_env = {**os.environ}

    def count(table: str) -> int:
        return schema._sql(f"SELECT count(*) FROM {schema.name}.{table}")[0][0]

    def backends() -> list[int]:
        return [pid for (pid,) in schema._sql(
            f"SELECT pid FROM pg_stat_activity WHERE application_name = '{schema.name}'")]

    def mesh(model: str, source: Path, out: Path, tag: str, rows: int) -> dict:
        before = count("predictions")
        cpu0 = cpu_seconds(proc.pid)
        pg0 = {pid: cpu_seconds(pid) for pid in backends()}
        wait = ["--wait-stored"] if args.check == "wait-stored" else []
        t0 = time.perf_counter()
        child = run_child([predmesh, "batch", "score", "--model", model, "--input", str(source), "--output",
                           str(out), *wait], cli_env, work / f"{tag}.log")
        if not wait and child.code == 0:
            loadtools.wait_for(lambda: count("predictions") - before >= rows, 600, "rows stored", interval=0.1)
            child.wall_s = time.perf_counter() - t0
        server_cpu = cpu_seconds(proc.pid) - cpu0
        pg_cpu = sum(cpu_seconds(pid) - pg0.get(pid, 0.0) for pid in backends())
        stored = count("predictions") - before
        if child.code != 0:
            raise SystemExit(f"predmesh batch score exited {child.code}: {child.stderr[-2000:]}")
        return {"wall_s": child.wall_s, "peak_rss_mb": child.peak_rss_mb, "client_cpu_s": child.cpu_s,
                "server_cpu_s": server_cpu, "pg_cpu_s": pg_cpu, "stored": stored,
                "last_line": child.stdout.strip().splitlines()[-1] if child.stdout.strip() else ""}

    def baseline(model: str, source: Path, out: Path, tag: str) -> dict:
        table = f"{schema.name}.{tag.replace('-', '_')}"
        child = run_child([sys.executable, str(ROOT / "bench" / "batch_baseline.py"), "--store", str(store),
                           "--model", model, "--input", str(source), "--output", str(out), "--pg-url", args.pg_url,
                           "--table", table], base_env, work / f"{tag}.log")
        if child.code != 0:
            raise SystemExit(f"the baseline exited {child.code}: {child.stderr[-2000:]}")
        steps = json.loads(child.stdout.strip().splitlines()[-1])
        return {"wall_s": child.wall_s, "peak_rss_mb": child.peak_rss_mb, "client_cpu_s": child.cpu_s,
                "pg_cpu_s": steps.get("pg_cpu", 0.0), "stored": count(tag.replace("-", "_")), "steps": steps}

    def per(cpu_s: float) -> str:
        return f"{cpu_s * 100_000 / args.rows:.2f}"

    print(f"{args.rows:,} rows per run, models {', '.join(models)}, {args.rounds} round(s); server at its defaults "
          f"on {target}, PostgreSQL schema {schema.name}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)
    results: dict[str, list[dict]] = {}
    try:
        with Client(target) as client:
            infos = {m: client.get_model(MODELS[m]) for m in models}
        for m in models:
            model = MODELS[m]
            header, rows = synthesize(infos[m], date(2026, 12, 6), args.rows)
            features = header[:-1]  # no true label: a customer file
            # warm-up: the server's first calls and the page cache of both programs' imports are not measured
            if args.warmup_rows:
                warm = work / f"{m}-warm.csv"
                write_csv(warm, ["id", *features],
                          ([f"w{i}", *r[:-1]] for i, r in enumerate(rows[:args.warmup_rows])))
                mesh(model, warm, work / f"{m}-warm.out.csv", f"{m}-warm-mesh", args.warmup_rows)
                baseline(model, warm, work / f"{m}-warm.base.csv", f"{m}_warm_base")
            for rnd in range(args.rounds):
                source = work / f"{m}-{rnd}.csv"
                write_csv(source, ["id", *features], ([f"r{rnd}-{i}", *r[:-1]] for i, r in enumerate(rows)))
                size_mb = source.stat().st_size / 1e6
                order = ("mesh", "baseline") if rnd % 2 == 0 else ("baseline", "mesh")
                got = {}
                for side in order:
                    if side == "mesh":
                        got[side] = mesh(model, source, work / f"{m}-{rnd}.scored.csv", f"{m}-{rnd}-mesh",
                                         args.rows)
                    else:
                        got[side] = baseline(model, source, work / f"{m}-{rnd}.base.csv", f"{m}_{rnd}_base")
                    os.unlink(work / (f"{m}-{rnd}.scored.csv" if side == "mesh" else f"{m}-{rnd}.base.csv"))
                for side in order:
                    r = got[side]
                    r["rows_per_s"] = args.rows / r["wall_s"]
                    if r["stored"] != args.rows:
                        raise SystemExit(f"{side}: {r['stored']} rows stored of {args.rows}")
                ratio = got["mesh"]["rows_per_s"] / got["baseline"]["rows_per_s"]
                results.setdefault(m, []).append({**got, "ratio": ratio, "input_mb": size_mb})
                b, s = got["baseline"], got["mesh"]
                print(f"{m} round {rnd + 1} ({size_mb:.0f} MB CSV; {order[0]} first):\n"
                      f"  mesh      {s['rows_per_s']:>9,.0f} rows/s  {s['wall_s']:6.2f} s  peak RSS "
                      f"{s['peak_rss_mb']:6.0f} MB  client CPU {s['client_cpu_s']:6.2f} s  server CPU "
                      f"{s['server_cpu_s']:6.2f} s  PostgreSQL (server's backends) {s['pg_cpu_s']:5.2f} s  "
                      f"stored {s['stored']:,}\n"
                      f"            its last line: …{s['last_line'][-120:]}\n"
                      f"  baseline  {b['rows_per_s']:>9,.0f} rows/s  {b['wall_s']:6.2f} s  peak RSS "
                      f"{b['peak_rss_mb']:6.0f} MB  CPU {b['client_cpu_s']:6.2f} s  stored {b['stored']:,}  "
                      f"(steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in b["steps"].items()
                                             if k not in ("rows", "pg_cpu"))
                      + f")\n  CPU s per 100k rows: mesh client {per(s['client_cpu_s'])} + server "
                      f"{per(s['server_cpu_s'])} + PostgreSQL {per(s['pg_cpu_s'])} = "
                      f"{per(s['client_cpu_s'] + s['server_cpu_s'] + s['pg_cpu_s'])}; baseline client "
                      f"{per(b['client_cpu_s'])} + PostgreSQL {per(b['pg_cpu_s'])} = "
                      f"{per(b['client_cpu_s'] + b['pg_cpu_s'])}"
                      + f"\n  ratio mesh/baseline {ratio:.2f}x", flush=True)
    finally:
        stop(proc)
        schema.drop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    for m, rs in results.items():
        ratio = statistics.median(r["ratio"] for r in rs)
        print(f"{m}: median ratio {ratio:.2f}x (goal >= 1.0x): mesh median "
              f"{statistics.median(r['mesh']['rows_per_s'] for r in rs):,.0f} rows/s at "
              f"{max(r['mesh']['peak_rss_mb'] for r in rs):.0f} MB peak, baseline "
              f"{statistics.median(r['baseline']['rows_per_s'] for r in rs):,.0f} rows/s at "
              f"{max(r['baseline']['peak_rss_mb'] for r in rs):.0f} MB peak")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
