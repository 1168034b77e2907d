"""REST: predmesh (Envoy → server) vs the FastAPI baseline vs MLServer's V2 REST, alternating rounds (issue 27).

Usage (one command; see bench/README.md):  .venv/bin/python bench/rest_compare.py [--rounds 5 --seconds 10]

Trains LogisticRegression and RandomForest(100) on Iris into a fresh predmesh store and hands the very same
fitted estimators to the two others. Three systems, all on this machine at once, on loopback:
  pm  predmesh at its defaults (one process per CPU, native kernels, durable persistence: fsynced spool, then
      PostgreSQL) behind its Envoy gateway at its defaults (one Envoy worker, JSON transcoding) except the
      protective rate limit (2,000/s per listener), which is off so that it does not cap a point;
  fa  the FastAPI baseline (bench/fastapi_baseline.py: the seed's design, one committed PostgreSQL INSERT per
      request) at its best uvicorn worker count of a short probe (--fastapi-workers);
  ml  MLServer 1.7's V2 REST /v2/models/<m>/infer, its best configuration as in bench/compare_mlserver.py:
      adaptive batching (32 rows / 10 ms) at the best parallel_workers of a short probe, plus an unbatched one
      at c=1 (ml1): MLServer's best is the better of the two. MLServer stores nothing.
Two clients, both wrk (C, one thread), one row per request, closed loop: keep-alive ("ka") and a new TCP
connection per request ("close": `Connection: close`; checked before timing: the server side must show a
closed connection per request, and for predmesh Envoy's own downstream_cx_total counts one per request in every
point). Concurrency 1 and 32. Plus predmesh's native gRPC Predict at c=1 (h2load, its one-stream-per-connection
closed loop) for the REST-vs-gRPC c=1 target.

Every cell (model, client, concurrency) runs each system once per round, back to back, in an order that flips
from cell to cell and from round to round (A B, B A, ...); --rounds rounds (≥ 5 for figures). Per cell it
prints the median and the spread (min–max) of infer/s and p50, the CPU per request of each system's process
tree and of Envoy alone (from /proc/<pid>/stat, utime+stime, over the point; Envoy's divided by its own
downstream_rq_total), and the ratios per round. A target counts as met when its worst round meets it.
Writes results.json and results.md under var/bench/rest-<stamp>/.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadtools
from bench.compare_mlserver import DEFAULT_PG, IRIS, NAMES, ROW, Predmesh, bench_database
from bench.fastapi_baseline import FastAPIBaseline, count_rows, create_table, write_models
from bench.mlserver import MLServer, ensure_venv, write_repository

PREDICT = "/predmesh.v1.InferenceService/Predict"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SYSTEMS = {"pm": "predmesh REST (Envoy)", "fa": "FastAPI baseline", "ml": "MLServer REST (batched)",
           "ml1": "MLServer REST (unbatched)", "grpc": "predmesh gRPC (h2load)"}
CLIENTS = {"ka": "wrk keep-alive", "close": "wrk new connection per request"}
GOALS = {"fa": 3.0, "ml": 2.0, "envoy_us": 60.0, "c1_gap_ms": 0.3}


# --- CPU from /proc -------------------------------------------------------------------------------------------

def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (their own, not their reaped children's), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted after the comm field
    return total / CLK_TCK


def time_wait(port: int) -> int:
    """TCP sockets in TIME_WAIT with `port` at either end: one per connection closed (on whichever side closed
    first) in the last minute."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            ends = (int(parts[1].rpartition(":")[2], 16), int(parts[2].rpartition(":")[2], 16))
            if parts[3] == "06" and port in ends:
                n += 1
    return n


# --- the systems ----------------------------------------------------------------------------------------------

@dataclass
class Target:
    """One system as the load tool sees it: its URL, a body per model, its process tree, how to check it."""

    key: str
    url: dict[str, str]
    body: dict[str, dict]
    port: int
    root_pid: int
    pids: list[int] = field(default_factory=list)

    def refresh(self) -> None:
        self.pids = loadtools.process_tree(self.root_pid)


def envoy_pid(gateway_pid: int) -> int:
    for pid in loadtools.process_tree(gateway_pid)[1:]:
        try:
            if "envoy" in Path(f"/proc/{pid}/comm").read_text():
                return pid
        except OSError:
            pass
    raise SystemExit(f"no Envoy process under the gateway launcher {gateway_pid}")


def envoy_counters(admin_port: int) -> dict[str, float]:
    """The public listener's downstream_rq_total and downstream_cx_total from Envoy's admin interface."""
    url = f"http://127.0.0.1:{admin_port}/stats?filter=^http\\.public\\.downstream_(rq|cx)_total$"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        out[name.rpartition(".")[2]] = float(value)
    return out


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def answer_label(key: str, answer: dict, classes: list[str]) -> str:
    if key in ("ml", "ml1"):
        predict = next(o for o in answer["outputs"] if o["name"] == "predict")
        return classes[int(predict["data"][0])]
    if key == "pm":
        return str(answer["prediction"]["label"])
    return str(answer["label"])


def verify_reconnects(target: Target, model: str) -> str:
    """Before timing: wrk with `Connection: close` must leave a closed TCP connection per request on the port."""
    before = time_wait(target.port)
    point = loadtools.wrk(target.url[model], target.body[model], 4, 2, close=True)
    closed = time_wait(target.port) - before
    if point.failed or closed < 0.9 * point.ok:
        raise SystemExit(f"{target.key}: wrk with Connection: close made {point.ok} requests ({point.failed} failed) "
                         f"but only {closed} connections were closed: it does not reconnect per request")
    return f"{target.key}: {point.ok} requests, {closed} connections closed"


# --- one point ------------------------------------------------------------------------------------------------

@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    ok: int
    failed: int
    cpu_us: float                 # the system's process tree, CPU µs per answered request
    envoy_us: float | None = None  # predmesh only: Envoy's CPU µs per request it counted
    conns_per_req: float | None = None  # predmesh only: Envoy's downstream connections opened per request


def run_point(target: Target, model: str, client: str, c: int, seconds: float, *, admin_port: int | None = None,
              envoy: int | None = None, grpc_frame: bytes | None = None, grpc_target: str = "") -> Sample:
    counters = envoy_counters(admin_port) if admin_port else {}
    cpu0 = cpu_seconds(target.pids)
    env0 = cpu_seconds([envoy]) if envoy else 0.0
    if grpc_frame is not None:
        point = loadtools.h2load(grpc_target, PREDICT, grpc_frame, c, seconds)
    else:
        point = loadtools.wrk(target.url[model], target.body[model], c, seconds, close=client == "close")
    cpu = cpu_seconds(target.pids) - cpu0
    sample = Sample(point.rps, point.p50_ms, point.p99_ms, point.ok, point.failed, cpu * 1e6 / max(point.ok, 1))
    if envoy:
        envoy_cpu = cpu_seconds([envoy]) - env0
        after = envoy_counters(admin_port) if admin_port else {}
        requests = after.get("downstream_rq_total", 0) - counters.get("downstream_rq_total", 0)
        sample.envoy_us = envoy_cpu * 1e6 / max(requests, 1)
        sample.conns_per_req = (after.get("downstream_cx_total", 0) - counters.get("downstream_cx_total", 0)) / max(
            requests, 1)
    return sample


# --- the run --------------------------------------------------------------------------------------------------

def train_iris(store: Path, models: list[str]) -> dict[str, tuple[object, list[str], list[str]]]:
    """Train into the predmesh store; return each fitted estimator as loaded back from it, its features and classes."""
    from inference.models.loader import load_estimator, version_dir
    from inference.models.store import ModelStore
    from inference.models.train import train

    out: dict[str, tuple[object, list[str], list[str]]] = {}
    for name in models:
        manifest = train(ModelStore(store), name, IRIS[name])
        out[name] = (load_estimator(version_dir(store, name, manifest.version), manifest),
                     list(manifest.feature_names), list(manifest.classes))
    return out


def spread(values: list[float], digits: int = 0) -> str:
    med = statistics.median(values)
    return f"{med:,.{digits}f} [{min(values):,.{digits}f}–{max(values):,.{digits}f}]"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds; every cell runs each system once a round")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--models", default="iris-lr,iris-rf", help=f"from {', '.join(IRIS)}")
    parser.add_argument("--clients", default="ka,close", help="ka (keep-alive), close (connection per request)")
    parser.add_argument("--fastapi-workers", default="1,2,4", help="uvicorn worker counts to probe (best is used)")
    parser.add_argument("--mlserver-workers", default="1,2", help="MLServer parallel_workers to probe")
    parser.add_argument("--probe-seconds", type=float, default=5.0, help="seconds per probe point (c=32, keep-alive)")
    parser.add_argument("--pg-url", default=os.environ.get("PREDMESH_TEST_PG_URL", DEFAULT_PG),
                        help="a PostgreSQL URL whose user may create the database predmesh_bench")
    parser.add_argument("--mlserver-venv", type=Path, default=ROOT / "var" / "bench" / "mlserver-venv")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    models = args.models.split(",")
    clients = args.clients.split(",")
    if set(models) - set(IRIS) or set(clients) - set(CLIENTS):
        parser.error(f"models from {', '.join(IRIS)}, clients from {', '.join(CLIENTS)}")
    loadtools.require_tools()
    mlserver_bin = ensure_venv(args.mlserver_venv)

    from predmesh.v1 import inference_pb2
    from predmesh.values import encode

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = ROOT / "var" / "bench" / f"rest-{stamp}"
    work.mkdir(parents=True)
    fitted = train_iris(work / "store", models)
    database_url = bench_database(args.pg_url)
    create_table(database_url)
    features = dict(zip(NAMES, ROW))
    bodies = {
        "pm": {m: {"features": features} for m in models},
        "fa": {m: {"model": m, "features": features} for m in models},
        "ml": {m: {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": ROW}],
                   "outputs": [{"name": "predict"}, {"name": "predict_proba"}]} for m in models},
    }
    frames = {m: loadtools.grpc_frame(inference_pb2.PredictRequest(model=m, features=encode(features))
                                      .SerializeToString()) for m in models}
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    def best_of(probe: dict[int, dict[str, float]]) -> int:
        # the setting whose worst model is closest to that model's best (one server serves every model)
        return max(probe, key=lambda w: min(probe[w][m] / max(p[m] for p in probe.values()) for m in models))

    def answered_rps(target: Target, model: str, seconds: float) -> float:
        """A probe point: wrk keep-alive at c=32; answers per second (wrk's rate counts failed requests too)."""
        point = loadtools.wrk(target.url[model], target.body[model], 32, seconds)
        return point.rps * point.ok / max(point.ok + point.failed, 1)

    def warm(target: Target) -> None:
        for m in models:
            loadtools.wrk(target.url[m], target.body[m], 32, 2)

    started: list = []
    samples: dict[str, list[dict]] = {}
    try:
        # --- predmesh + Envoy
        pm = Predmesh(work, work / "store", database_url, {}).start()
        started.append(pm)
        envoy = envoy_pid(pm.procs[1].pid)
        pm_target = Target("pm", {m: f"http://127.0.0.1:{pm.rest_port}/v1/models/{m}:predict" for m in models},
                           bodies["pm"], pm.rest_port, pm.procs[0].pid)
        pm_target.refresh()
        pm_target.pids.append(envoy)
        grpc_target = Target("grpc", {}, {}, pm.grpc_port, pm.procs[0].pid)
        grpc_target.refresh()

        # --- the FastAPI baseline at its best worker count
        fa_dir = work / "fastapi-models"
        write_models(fa_dir, fitted)

        def fastapi(workers: int) -> tuple[FastAPIBaseline, Target]:
            server = FastAPIBaseline(fa_dir, database_url, port=loadtools.free_port(), workers=workers,
                                     log_path=work / f"fastapi-{workers}.log").start(bodies["fa"][models[0]])
            assert server.proc is not None
            return server, Target("fa", dict.fromkeys(models, server.url), bodies["fa"], server.port, server.proc.pid)

        fa_counts = [int(w) for w in args.fastapi_workers.split(",")]
        fa_probe: dict[int, dict[str, float]] = {}
        if len(fa_counts) > 1:
            for workers in fa_counts:
                server, target = fastapi(workers)
                try:
                    warm(target)
                    fa_probe[workers] = {m: answered_rps(target, m, args.probe_seconds) for m in models}
                finally:
                    server.stop()
            say(f"FastAPI probe (wrk keep-alive, c=32, {args.probe_seconds:g} s, infer/s by uvicorn workers): "
                f"{ {w: {m: round(r) for m, r in rates.items()} for w, rates in fa_probe.items()} }")
        fa_workers = best_of(fa_probe) if fa_probe else fa_counts[0]
        fa_server, fa_target = fastapi(fa_workers)
        started.append(fa_server)

        # --- MLServer: adaptive batching at the best parallel_workers, and unbatched
        def mlserver(tag: str, workers: int, batch: int) -> tuple[MLServer, Target]:
            repo = work / f"mlserver-{tag}"
            write_repository(repo, {m: fitted[m][0] for m in models}, batch_size=batch, batch_ms=10)
            server = MLServer(mlserver_bin, repo, http_port=loadtools.free_port(), grpc_port=loadtools.free_port(),
                              metrics_port=loadtools.free_port(), workers=workers,
                              log_path=work / f"mlserver-{tag}.log").start(models)
            assert server.proc is not None
            url = {m: f"http://127.0.0.1:{server.http_port}/v2/models/{m}/infer" for m in models}
            return server, Target("ml" if batch > 1 else "ml1", url, bodies["ml"], server.http_port, server.proc.pid)

        ml_counts = [int(w) for w in args.mlserver_workers.split(",")]
        ml_probe: dict[int, dict[str, float]] = {}
        if len(ml_counts) > 1:
            for workers in ml_counts:
                probed, target = mlserver(f"probe{workers}", workers, 32)
                try:
                    warm(target)
                    ml_probe[workers] = {m: answered_rps(target, m, args.probe_seconds) for m in models}
                finally:
                    probed.stop()
            say(f"MLServer probe (adaptive batching, wrk keep-alive, c=32, {args.probe_seconds:g} s, infer/s by "
                f"parallel_workers): { {w: {m: round(r) for m, r in rates.items()} for w, rates in ml_probe.items()} }")
        ml_workers = best_of(ml_probe) if ml_probe else ml_counts[0]
        ml_server, ml_target = mlserver("batched", ml_workers, 32)
        started.append(ml_server)
        ml1_server, ml1_target = mlserver("unbatched", ml_workers, 1)
        started.append(ml1_server)
        targets = {"pm": pm_target, "fa": fa_target, "ml": ml_target, "ml1": ml1_target}

        # --- checks before timing: every system answers every model with the same label; reconnects are real
        for m in models:
            got = {k: answer_label(k, post(t.url[m], t.body[m]), fitted[m][2]) for k, t in targets.items()}
            if len(set(got.values())) != 1:
                raise SystemExit(f"{m}: the systems disagree on the row's label: {got}")
            say(f"{m}: every system answers {got['pm']!r} for the row {ROW}")
        for t in targets.values():
            t.refresh()
            warm(t)
        if "close" in clients:
            for t in targets.values():
                say("Connection: close checked: " + verify_reconnects(t, models[0]))
        for t in targets.values():
            t.refresh()
        pm_target.pids.append(envoy)
        grpc_target.refresh()

        rows_pm0 = pm.metric("predmesh_prediction_rows_written_total")
        rows_fa0 = count_rows(database_url)
        cell_no = 0
        for round_no in range(args.rounds):
            for m in models:
                for client in clients:
                    for c in levels:
                        keys = ["pm", "fa", "ml"] + (["ml1"] if c == 1 else [])
                        if client == "ka" and c == 1:
                            keys.insert(1, "grpc")
                        if (round_no + cell_no) % 2:
                            keys.reverse()
                        cell_no += 1
                        for key in keys:
                            if key == "grpc":
                                s = run_point(grpc_target, m, client, c, args.seconds, grpc_frame=frames[m],
                                              grpc_target=pm.target)
                            else:
                                s = run_point(targets[key], m, client, c, args.seconds,
                                              admin_port=pm.envoy_admin_port if key == "pm" else None,
                                              envoy=envoy if key == "pm" else None)
                            samples.setdefault(f"{m}|{client}|{c}|{key}", []).append(asdict(s))
                            if key in ("pm", "grpc"):
                                pm.settle()
                        print(f"  round {round_no + 1} {m} {client} c={c}: " + ", ".join(
                            f"{k}={samples[f'{m}|{client}|{c}|{k}'][-1]['rps']:,.0f}/s" for k in keys), flush=True)
        pm.settle()
        time.sleep(1)
        rows_pm = pm.metric("predmesh_prediction_rows_written_total") - rows_pm0
        rows_fa = count_rows(database_url) - rows_fa0
    finally:
        for server in reversed(started):
            server.stop()

    # --- the report
    def of(m, client, c, key, name):
        return [s[name] for s in samples.get(f"{m}|{client}|{c}|{key}", [])]

    say()
    say(f"REST comparison, {args.rounds} rounds × {args.seconds:g} s per point, alternating; {os.cpu_count()} CPUs. "
        f"predmesh at its defaults (durable persistence, PostgreSQL), Envoy at its defaults, rate limit off; FastAPI "
        f"baseline: {fa_workers} uvicorn worker(s), an INSERT + COMMIT per request; MLServer 1.7.1: "
        f"parallel_workers={ml_workers}, adaptive batching 32 rows / 10 ms (ml) and unbatched (ml1, c=1), stores "
        "nothing.")
    pm_req = sum(s["ok"] for k, v in samples.items() if k.endswith(("|pm", "|grpc")) for s in v)
    fa_req = sum(s["ok"] for k, v in samples.items() if k.endswith("|fa") for s in v)
    say(f"rows stored during the timed rounds: predmesh {rows_pm:,.0f} for {pm_req:,} answered (≥: "
        f"{'yes' if rows_pm >= pm_req else 'NO'}), FastAPI {rows_fa:,} for {fa_req:,} answered (≥: "
        f"{'yes' if rows_fa >= fa_req else 'NO'})")
    failed = sum(s["failed"] for v in samples.values() for s in v)
    say(f"failed/errored requests seen by the load tools: {failed}")
    say()
    say("median [min–max] over the rounds; CPU µs/req: the system's processes (predmesh: server + Envoy), Envoy "
        "alone from its own request count")
    say("| model | client | c | system | infer/s | p50 ms | p99 ms | CPU µs/req | Envoy µs/req | Envoy conns/req |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    for m in models:
        for client in clients:
            for c in levels:
                for key in ("pm", "grpc", "fa", "ml", "ml1"):
                    rps = of(m, client, c, key, "rps")
                    if not rps:
                        continue
                    env = [v for v in of(m, client, c, key, "envoy_us") if v is not None]
                    cx = [v for v in of(m, client, c, key, "conns_per_req") if v is not None]
                    say(f"| {m} | {CLIENTS[client] if key != 'grpc' else 'h2load'} | {c} | {SYSTEMS[key]} "
                        f"| {spread(rps)} | {spread(of(m, client, c, key, 'p50_ms'), 2)} "
                        f"| {statistics.median(of(m, client, c, key, 'p99_ms')):.2f} "
                        f"| {spread(of(m, client, c, key, 'cpu_us'))} | {spread(env) if env else '–'} "
                        f"| {spread(cx, 2) if cx else '–'} |")
    say()
    say("Targets (issue 27), per round; met when the worst round meets it:")
    goals: dict[str, dict] = {}

    def goal(name: str, per_round: list[float], worst: float, ok: bool, unit: str) -> None:
        goals[name] = {"per_round": per_round, "worst": worst, "met": ok}
        say(f"- {name}: worst {worst:.2f}{unit}, median {statistics.median(per_round):.2f}{unit}, rounds "
            f"[{', '.join(f'{v:.2f}' for v in per_round)}]: {'MET' if ok else 'NOT MET'}")

    for m in models:
        for client in clients:
            if 32 not in levels:
                continue
            pm32 = of(m, client, 32, "pm", "rps")
            ratios = [p / f for p, f in zip(pm32, of(m, client, 32, "fa", "rps"))]
            goal(f"{m} {client} c=32 predmesh / FastAPI ≥ {GOALS['fa']:g}×", ratios, min(ratios),
                 min(ratios) >= GOALS["fa"], "×")
            ratios = [p / x for p, x in zip(pm32, of(m, client, 32, "ml", "rps"))]
            goal(f"{m} {client} c=32 predmesh / MLServer ≥ {GOALS['ml']:g}×", ratios, min(ratios),
                 min(ratios) >= GOALS["ml"], "×")
        if 32 in levels and "ka" in clients:
            env = [v for v in of(m, "ka", 32, "pm", "envoy_us") if v is not None]
            goal(f"{m} keep-alive c=32 Envoy CPU per request ≤ {GOALS['envoy_us']:g} µs", env, max(env),
                 max(env) <= GOALS["envoy_us"], " µs")
        if 1 in levels and "ka" in clients:
            gaps = [r - g for r, g in zip(of(m, "ka", 1, "pm", "p50_ms"), of(m, "ka", 1, "grpc", "p50_ms"))]
            goal(f"{m} c=1 p50 REST (wrk keep-alive) − gRPC (h2load) ≤ {GOALS['c1_gap_ms']:g} ms", gaps, max(gaps),
                 max(gaps) <= GOALS["c1_gap_ms"], " ms")
    (work / "results.md").write_text("\n".join(lines) + "\n")
    (work / "results.json").write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "fastapi_workers": fa_workers,
        "mlserver_workers": ml_workers, "probes": {"fastapi": fa_probe, "mlserver": ml_probe},
        "rows": {"predmesh": rows_pm, "predmesh_answered": pm_req, "fastapi": rows_fa, "fastapi_answered": fa_req},
        "samples": samples, "goals": goals}, indent=1))
    print(f"\nwritten to {work / 'results.md'} and results.json")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
