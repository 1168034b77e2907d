"""predmesh vs MLServer 1.7 on the same machine, same models, same C load tools, in one run.

Usage (one command; see bench/README.md):  .venv/bin/python bench/compare_mlserver.py [--seconds 10]

It installs MLServer + its sklearn runtime into var/bench/mlserver-venv (once, pinned), trains LogisticRegression
and RandomForest(100) on Iris into a fresh predmesh store and hands MLServer the very same fitted estimators;
with --models penguins (the default is both sets) it also fits a categorical pipeline on the Palmer penguins
(one-hot + HistGradientBoosting, bench/penguins.py), imports it into predmesh as a "frame" model (`predmesh
import`'s code path) and serves the same object from MLServer's sklearn runtime with the pandas content type:
one penguin per request, one OIP tensor per column (BYTES for island and sex, FP64 for the numbers); the first
answer of each server must equal the pipeline's own predict_proba (to 1e-6). Then it starts predmesh at its
DEFAULTS (no tuning variables: one process per CPU, verified native kernels, durable persistence, here to
PostgreSQL; metrics on) with its Envoy gateway, and MLServer (adaptive batching on, best
parallel_workers of a short probe; plus an unbatched one for concurrency 1, and for the categorical model at
every concurrency: its best is the better of the two), then drives them alternately, one row per request, closed
loop: each cell (tool, model, concurrency) runs --rounds rounds (default 5) back to back, the systems alternating
A B [C] A B [C] ..., so that a round's points ran seconds apart on the same machine state:
  OIP gRPC ModelInfer with h2load (pre-encoded frame, a connection per stream; one answer's grpc-status checked
  first) at 1/8/32/64,
  OIP gRPC ModelInfer with Triton's perf_analyzer (one client multiplexing its streams on one channel; real Iris
  rows, or the penguin, via --input-data) at 1 and 32, when it is installed (../shared/tools/perf-analyzer.sh;
  --perf-analyzer),
  REST with wrk (predmesh: Predict through Envoy; MLServer: its V2 REST), and predmesh's Predict through the
  Python SDK (a Python load generator: it competes for the 2 cores, so its figures are a floor).
Prints one table (the median round's infer/s, p50 and p99, the min–max of infer/s over the rounds, the median and
the worst of the per-round ratios predmesh/MLServer), every round, and the targets, each judged on its worst round
(issue 27); writes it to var/bench/.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadtools, penguins
from bench.mlserver import MLServer, ensure_venv, write_repository

ROW = [5.9, 3.0, 5.1, 1.8]
NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS = {"iris-lr": "lr", "iris-rf": "rf"}
MODEL_SETS = {"iris": list(IRIS), "penguins": [penguins.MODEL]}
MODELS: list[str] = []  # the models of the chosen sets (main sets it from --models)
OIP_METHOD = "/inference.GRPCInferenceService/ModelInfer"
DEFAULT_PG = "postgresql://predmesh:predmesh@127.0.0.1:5432/predmesh_test"
MIN_ROUNDS = 5  # issue 27: a comparison alternates at least 5 rounds of each system before it is judged
LABELS = {"grpc": "OIP gRPC (h2load)", "pa": "OIP gRPC (perf_analyzer)", "rest": "REST (wrk; predmesh via Envoy)",
          "client": "predmesh Predict, Python SDK"}


def bench_database(admin_url: str) -> str:
    """A dedicated database predmesh_bench next to the one in admin_url (created once)."""
    import psycopg2

    base, _, _ = admin_url.rpartition("/")
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = 'predmesh_bench'")
        if not cur.fetchone():
            cur.execute("CREATE DATABASE predmesh_bench")
    conn.close()
    return f"{base}/predmesh_bench"


def oip_request(model: str, *, mlserver: bool) -> bytes:
    from predmesh.oip import grpc_predict_v2_pb2 as pb

    if model == penguins.MODEL:
        return penguins.oip_request(mlserver=mlserver)

    tensor = pb.ModelInferRequest.InferInputTensor(
        name="input-0" if mlserver else "input", datatype="FP32", shape=[1, 4],
        contents=pb.InferTensorContents(fp32_contents=ROW))
    outputs = ([pb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in ("predict", "predict_proba")]
               if mlserver else [])
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], outputs=outputs).SerializeToString()


def check_oip(target: str, model: str, mlserver: bool, expected: dict[str, list[float]]) -> str:
    """One answer to the exact bytes the load tools send: grpc-status OK and, where `expected` has the model's
    own predict_proba, the same probabilities to 1e-6 (else SystemExit: nothing is timed)."""
    from predmesh.oip import grpc_predict_v2_pb2 as pb

    raw = loadtools.check_grpc(target, OIP_METHOD, oip_request(model, mlserver=mlserver))
    answer = pb.ModelInferResponse.FromString(raw)
    names = ", ".join(o.name for o in answer.outputs)
    if model in expected:
        got = penguins.probabilities(raw, "predict_proba" if mlserver else "probabilities")
        want = expected[model]
        if len(got) != len(want) or max(abs(a - b) for a, b in zip(got, want)) > 1e-6:
            raise SystemExit(f"{target} {model}: probabilities {got} differ from the pipeline's own "
                             f"predict_proba {want}")
        diff = max(abs(a - b) for a, b in zip(got, want))
        names += f"; probabilities = the pipeline's predict_proba (max |diff| {diff:.1e})"
    return names


def mlserver_model_config(model: str, max_batch: int) -> bytes:
    """The Triton ModelConfigResponse perf_analyzer needs from MLServer (which lacks the RPC; see
    bench/mlserver_modelconfig.py): MLServer's input and its two outputs, both of which the h2load frames ask for."""
    from predmesh.oip import grpc_predict_v2_pb2 as pb

    if model == penguins.MODEL:
        return penguins.mlserver_model_config(max_batch, 3)
    return pb.ModelConfigResponse(config=pb.ModelConfig(
        name=model, platform="mlserver_sklearn", max_batch_size=max(max_batch, 1),
        input=[pb.ModelInput(name="input-0", data_type=pb.TYPE_FP32, dims=[len(NAMES)])],
        output=[pb.ModelOutput(name="predict", data_type=pb.TYPE_INT64, dims=[1]),
                pb.ModelOutput(name="predict_proba", data_type=pb.TYPE_FP64, dims=[3])])).SerializeToString()


def python_client(target: str, model: str, concurrency: int, seconds: float) -> loadtools.Point:
    """Predict through the Python SDK: `concurrency` closed-loop threads spread over up to 2 processes."""
    row = penguins.ROW if model == penguins.MODEL else dict(zip(NAMES, ROW))
    return loadtools.sdk_closed_loop(target, "predict", (model, row), concurrency, seconds)


class Predmesh:
    """`python -m inference serve` (worker group) plus `python -m gateway` (Envoy) on free ports."""

    def __init__(self, work: Path, store: Path, database_url: str, tuning: dict[str, str]):
        self.grpc_port, self.metrics_port = loadtools.free_port(), loadtools.free_port()
        self.rest_port, self.envoy_admin_port = loadtools.free_port(), loadtools.free_port()
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PREDMESH_", "PROMETHEUS_"))},
            "PREDMESH_GRPC_ADDR": self.target, "PREDMESH_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            "PREDMESH_MODEL_STORE": str(store), "PREDMESH_DATABASE_URL": database_url,
            "PREDMESH_LOG_LEVEL": "WARNING", "PREDMESH_SPOOL_DIR": str(work / "spool"),
            **tuning,  # empty by default: the defaults are what is measured
            "PREDMESH_GATEWAY_ADDR": f"127.0.0.1:{self.rest_port}", "PREDMESH_GATEWAY_ADMIN_ADDR": "",
            "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": f"127.0.0.1:{self.envoy_admin_port}",
            "PREDMESH_GATEWAY_UPSTREAMS": self.target, "PREDMESH_GATEWAY_DIR": str(work / "gateway"),
            # the gateway's protective rate limit (2,000/s by default) would cap the REST points
            "PREDMESH_GATEWAY_RATE_LIMIT_RPS": "0", "PREDMESH_GATEWAY_MAX_REQUESTS": "4096",
            "PREDMESH_GATEWAY_MAX_PENDING": "4096",
            "PYTHONUNBUFFERED": "1",
        }
        self.work = work
        self.procs: list[subprocess.Popen] = []

    def start(self) -> Predmesh:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        log = open(self.work / "predmesh.log", "ab")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "inference", "serve", "--no-train"], cwd=ROOT,
                                           env=self.env, stdout=log, stderr=subprocess.STDOUT))

        def serving():
            with grpc.insecure_channel(self.target) as ch:
                return health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=1).status == 1
        loadtools.wait_for(serving, 90, "predmesh to serve")
        glog = open(self.work / "gateway.log", "ab")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=self.env, stdout=glog,
                                           stderr=subprocess.STDOUT))
        healthz = f"http://127.0.0.1:{self.rest_port}/healthz"
        loadtools.wait_for(lambda: urllib.request.urlopen(healthz, timeout=1).status == 200, 60, "the Envoy gateway")
        return self

    def metric(self, name: str, *, having: str = "", lacking: str = "\0") -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and having in line and lacking not in line)

    def settle(self, quiet_s: float = 0.5, timeout: float = 10.0) -> None:
        """Wait until the async writer has stored what the last point produced (its written counter stops
        moving), so its database work does not run into the next point, which may be MLServer's."""
        deadline = time.monotonic() + timeout
        last, since = self.metric("predmesh_prediction_rows_written_total"), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.metric("predmesh_prediction_rows_written_total")
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return

    def failed_calls(self) -> dict[str, float]:
        """Calls answered with a non-OK grpc-status, by method and code (h2load counts them as HTTP 200)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("grpc_server_handled_total{") and 'grpc_code="OK"' not in line:
                labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
                key = f"{labels['grpc_method'].strip(chr(34))} {labels['grpc_code'].strip(chr(34))}"
                out[key] = out.get(key, 0) + float(line.rsplit(" ", 1)[1])
        return out

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def train_models(store: Path, work: Path) -> tuple[dict[str, object], dict[str, list[float]]]:
    """Train the chosen models into the predmesh store; return the fitted estimators for MLServer (Iris: loaded
    back from the store) and, per categorical model, the pipeline's own predict_proba of the request's row."""
    from inference.models.loader import load_estimator, version_dir
    from inference.models.store import ModelStore
    from inference.models.train import train

    models: dict[str, object] = {}
    expected: dict[str, list[float]] = {}
    for name, kind in IRIS.items():
        if name in MODELS:
            manifest = train(ModelStore(store), name, kind)
            models[name] = load_estimator(version_dir(store, name, manifest.version), manifest)
    if penguins.MODEL in MODELS:
        pipeline, manifest = penguins.store(store, work)
        models[penguins.MODEL] = pipeline
        expected[penguins.MODEL] = penguins.expected(pipeline, manifest)
    return models, expected


def median_point(points: list[loadtools.Point]) -> loadtools.Point:
    """The median round by infer/s (with an even count, the upper of the two middle ones)."""
    return sorted(points, key=lambda p: p.rps)[len(points) // 2]


def round_ratios(points: list[loadtools.Point], *others: list[loadtools.Point]) -> list[float]:
    """Per round: points' infer/s over the best of the others' infer/s in the same round."""
    return [p.rps / max(1e-9, *(o.rps for o in rest)) for p, *rest in zip(points, *others)]


def verdict(met: bool, rounds: int) -> str:
    """MET / NOT MET, or no verdict with fewer than MIN_ROUNDS rounds (what the rounds showed, in lower case)."""
    if rounds < MIN_ROUNDS:
        return f"no verdict ({'met' if met else 'not met'} in {rounds} rounds; a verdict needs {MIN_ROUNDS})"
    return "MET" if met else "NOT MET"


def fmt(points: list[loadtools.Point] | None) -> str:
    """A table's cells for one system: median round's infer/s, spread of infer/s, its p50 and p99."""
    if not points:
        return "| – | – | – | – "
    mid = median_point(points)
    rates = [p.rps for p in points]
    return f"| {mid.rps:,.0f} | {min(rates):,.0f}–{max(rates):,.0f} | {mid.p50_ms:.2f} | {mid.p99_ms:.2f} "


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per point (after 1 s warm-up)")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--models", default="iris,penguins", help="model sets, comma-separated: iris (LR and RF, "
                        "one FP32 matrix input) and penguins (one-hot + HistGradientBoosting over typed columns)")
    parser.add_argument("--processes", help="PREDMESH_PROCESSES (default: unset, i.e. predmesh's default)")
    parser.add_argument("--runtime", choices=["native", "sklearn"], help="PREDMESH_RUNTIME (default: unset)")
    parser.add_argument("--persistence", help="PREDMESH_PERSISTENCE: async, durable, off (default: unset)")
    parser.add_argument("--threads", help="PREDMESH_WORKERS, handler threads per process (default: unset)")
    parser.add_argument("--perf-analyzer", help="Triton's perf_analyzer binary (default: $PERF_ANALYZER or "
                        "/tmp/perf-analyzer/perf_analyzer, as ../shared/tools/perf-analyzer.sh installs it)")
    parser.add_argument("--pa-concurrency", default="1,32", help="concurrency levels for perf_analyzer")
    parser.add_argument("--pg-url", default=os.environ.get("PREDMESH_TEST_PG_URL", DEFAULT_PG),
                        help="a PostgreSQL URL whose user may create the database predmesh_bench")
    parser.add_argument("--mlserver-workers", default="1,2", help="parallel_workers values to probe")
    parser.add_argument("--mlserver-venv", type=Path, default=ROOT / "var" / "bench" / "mlserver-venv")
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS,
                        help="rounds of every comparison (gRPC and REST), the systems alternating A B A B ... within "
                        f"each cell; the table shows the median round and the spread, targets are judged on the "
                        f"worst round (fewer than {MIN_ROUNDS}: no verdict)")
    parser.add_argument("--skip-rest", action="store_true")
    parser.add_argument("--skip-client", action="store_true")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    unknown = set(args.models.split(",")) - set(MODEL_SETS)
    if unknown:
        parser.error(f"unknown model set {sorted(unknown)[0]!r}; choose from {', '.join(MODEL_SETS)}")
    MODELS[:] = [m for name in args.models.split(",") for m in MODEL_SETS[name]]
    pa_levels = [int(c) for c in args.pa_concurrency.split(",")]
    tuning = {f"PREDMESH_{name}": str(value) for name, value in (
        ("PROCESSES", args.processes), ("RUNTIME", args.runtime), ("PERSISTENCE", args.persistence),
        ("WORKERS", args.threads)) if value is not None}
    loadtools.require_tools()
    pa_binary = loadtools.find_perf_analyzer(args.perf_analyzer)
    if pa_binary is None:
        print("perf_analyzer not found (../shared/tools/perf-analyzer.sh installs it): its points are skipped",
              flush=True)
    from sklearn.datasets import load_iris
    iris_rows = load_iris().data.tolist()
    mlserver_bin = ensure_venv(args.mlserver_venv)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work = ROOT / "var" / "bench" / f"run-{stamp}"
    work.mkdir(parents=True)
    models, expected = train_models(work / "store", work)
    database_url = bench_database(args.pg_url)
    started: list = []
    lines: list[str] = []
    results: dict = {}

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    try:
        pm = Predmesh(work, work / "store", database_url, tuning).start()
        started.append(pm)
        for model in MODELS:
            say(f"predmesh {model}: OIP answer OK with outputs [{check_oip(pm.target, model, False, expected)}]")

        def mlserver(tag: str, workers: int, batch: int) -> MLServer:
            repo = work / f"mlserver-{tag}"
            write_repository(repo, models, batch_size=batch, batch_ms=10,
                             signatures={penguins.MODEL: penguins.mlserver_settings(3)})
            server = MLServer(mlserver_bin, repo, http_port=loadtools.free_port(), grpc_port=loadtools.free_port(),
                              metrics_port=loadtools.free_port(), workers=workers,
                              log_path=work / f"mlserver-{tag}.log",
                              model_configs={m: mlserver_model_config(m, batch) for m in MODELS} if pa_binary else None)
            return server.start(list(MODELS))

        # MLServer's best configuration: adaptive batching (32 rows / 10 ms) and the best parallel_workers.
        frames = {m: loadtools.grpc_frame(oip_request(m, mlserver=True)) for m in MODELS}
        probed = [MODEL_SETS[name][0] for name in args.models.split(",")]
        probe: dict[int, dict[str, float]] = {}
        for workers in [int(w) for w in args.mlserver_workers.split(",")]:
            server = mlserver(f"probe{workers}", workers, 32)
            try:
                for model in probed:
                    check_oip(server.grpc_target, model, True, expected)
                probe[workers] = {m: loadtools.h2load(server.grpc_target, OIP_METHOD, frames[m], 32, 5).rps
                                  for m in probed}
            finally:
                server.stop()
        # the workers whose worst model is closest to that model's best (one MLServer serves every model)
        best = max(probe, key=lambda w: min(probe[w][m] / max(p[m] for p in probe.values()) for m in probed))
        say(f"MLServer probe (adaptive batching, c=32, 5 s, infer/s by parallel_workers): "
            f"{ {w: {m: round(r) for m, r in rates.items()} for w, rates in probe.items()} } "
            f"-> using parallel_workers={best}")
        ml = mlserver("batched", best, 32)
        started.append(ml)
        ml_unbatched = mlserver("unbatched", best, 1)
        started.append(ml_unbatched)
        for model in MODELS:
            say(f"MLServer {model}: OIP answer OK with outputs [{check_oip(ml.grpc_target, model, True, expected)}]")
            if model in expected:
                say(f"MLServer unbatched {model}: OIP answer OK with outputs "
                    f"[{check_oip(ml_unbatched.grpc_target, model, True, expected)}]")

        pm_frames = {m: loadtools.grpc_frame(oip_request(m, mlserver=False)) for m in MODELS}
        written_before = pm.metric("predmesh_prediction_rows_written_total")
        failed_before = pm.failed_calls()

        def alternate(cell: tuple, runs: list) -> None:
            """`args.rounds` rounds of one cell back to back, the systems alternating A B [C] A B [C] ..., so each
            round's points ran seconds apart on the same machine state; every round is kept."""
            for round_no in range(args.rounds):
                for key, run in runs:
                    rounds.setdefault((*cell, key), []).append(run())
                    if key == "pm":
                        pm.settle()
                print(f"  round {round_no + 1}/{args.rounds} {LABELS[cell[0]]} {cell[1]} c={cell[2]}: " + ", ".join(
                    f"{k}={rounds[(*cell, k)][-1].rps:,.0f}/s" for k, _ in runs), flush=True)

        rounds: dict[tuple, list[loadtools.Point]] = {}
        for model in MODELS:
            for c in levels:
                runs = [("pm", lambda: loadtools.h2load(pm.target, OIP_METHOD, pm_frames[model], c, args.seconds)),
                        ("ml", lambda: loadtools.h2load(ml.grpc_target, OIP_METHOD, frames[model], c, args.seconds))]
                if c == 1 or model in expected:
                    runs.append(("ml1", lambda: loadtools.h2load(ml_unbatched.grpc_target, OIP_METHOD,
                                                                 frames[model], c, args.seconds)))
                alternate(("grpc", model, c), runs)
        if pa_binary:
            for model in MODELS:
                for c in pa_levels:
                    if model in expected:  # one tensor per column, the same names on both servers
                        pm_data = ml_data = penguins.perf_analyzer_records()
                    else:
                        pm_data = [{"input": row} for row in iris_rows]
                        ml_data = [{"input-0": row} for row in iris_rows]
                    runs = [("pm", lambda: loadtools.perf_analyzer(pa_binary, pm.target, model, pm_data, c,
                                                                   args.seconds)),
                            ("ml", lambda: loadtools.perf_analyzer(pa_binary, ml.grpc_target, model, ml_data, c,
                                                                   args.seconds))]
                    if c == 1 or model in expected:
                        runs.append(("ml1", lambda: loadtools.perf_analyzer(
                            pa_binary, ml_unbatched.grpc_target, model, ml_data, c, args.seconds)))
                    alternate(("pa", model, c), runs)
        if not args.skip_rest:
            for model in MODELS:
                if model == penguins.MODEL:
                    pm_body, ml_body = {"features": penguins.ROW}, penguins.rest_body()
                else:
                    pm_body = {"features": dict(zip(NAMES, ROW))}
                    ml_body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": ROW}],
                               "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}
                for c in levels:
                    alternate(("rest", model, c), [
                        ("pm", lambda: loadtools.wrk(f"http://127.0.0.1:{pm.rest_port}/v1/models/{model}:predict",
                                                     pm_body, c, args.seconds)),
                        ("ml", lambda: loadtools.wrk(f"http://127.0.0.1:{ml.http_port}/v2/models/{model}/infer",
                                                     ml_body, c, args.seconds))])
        for round_key, points in rounds.items():  # the table shows the median round (by infer/s) of each point
            results[round_key] = median_point(points)
        if not args.skip_client:
            for model in MODELS:
                for c in levels:
                    point = python_client(pm.target, model, c, args.seconds)  # no comparison: one round
                    rounds[("client", model, c, "pm")] = [point]
                    results[("client", model, c, "pm")] = point
                    print(f"  client {model} c={c}: {point.rps:,.0f}/s", flush=True)
        time.sleep(2)  # let the async writer flush its last batch
        written = pm.metric("predmesh_prediction_rows_written_total") - written_before
        failed_grpc = {k: v - failed_before.get(k, 0) for k, v in pm.failed_calls().items()
                       if v - failed_before.get(k, 0)}
    finally:
        for server in reversed(started):
            server.stop()

    say()
    setup = "tuned: " + ", ".join(f"{k}={v}" for k, v in tuning.items()) if tuning else "defaults (no tuning variables)"
    say(f"predmesh: {setup}, "
        f"persistence to PostgreSQL ({database_url.rpartition('@')[2]}), metrics on; MLServer 1.7.1: adaptive "
        "batching 32 rows / "
        f"10 ms, parallel_workers={best}, debug off. {args.seconds:g} s per point (after 1 s warm-up), one row per "
        "request.")
    say(f"predmesh wrote {written:,.0f} prediction rows to PostgreSQL during the run.")
    say()
    say(f"Every comparison: {args.rounds} rounds per cell, the systems alternating A B [C] A B [C] ... within the "
        "cell; infer/s and latencies are the median round's, min–max the spread over the rounds; the ratio is "
        "the median of the per-round ratios (predmesh / MLServer of the same round) and 'worst' the lowest.")
    say()
    say("| transport | model | conc | predmesh infer/s | min–max | p50 ms | p99 ms | MLServer infer/s | min–max "
        "| p50 ms | p99 ms | ratio | worst round |")
    say("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for transport in ("grpc", "pa", "rest", "client"):
        for model in MODELS:
            for c in (pa_levels if transport == "pa" else levels):
                pm_points = rounds.get((transport, model, c, "pm"))
                if pm_points is None:
                    continue
                for key, note in (("ml", ""), ("ml1", " (MLServer unbatched)")):
                    ml_points = rounds.get((transport, model, c, key))
                    if ml_points is None and (key == "ml1" or transport != "client"):
                        continue
                    ratios = round_ratios(pm_points, ml_points) if ml_points else []
                    say(f"| {LABELS[transport]} | {model} | {c}{note} {fmt(pm_points)}{fmt(ml_points)}"
                        + (f"| {statistics.median(ratios):.2f}× | {min(ratios):.2f}× |" if ratios else "| – | – |"))
    failures = sum(p.failed for points in rounds.values() for p in points)
    say(f"\nfailed/errored requests seen by the load tools: {failures}; predmesh calls answered with a non-OK "
        f"grpc-status (its metrics): {failed_grpc or 0} (CANCELLED = streams the load tool reset at the end "
        "of a point)")
    say("\nEvery round's infer/s, in the order run (predmesh / MLServer batched [/ unbatched]; ratio to "
        "MLServer's best of the round):")
    for (transport, model, c, key), points in rounds.items():
        if key == "pm" and (transport, model, c, "ml") in rounds:
            ml_points = rounds[(transport, model, c, "ml")]
            ml1_points = rounds.get((transport, model, c, "ml1"), [None] * len(points))
            say(f"- {LABELS[transport]} {model} c={c}: " + "; ".join(
                f"{p.rps:,.0f} / {m.rps:,.0f}" + (f" / {u.rps:,.0f}" if u else "")
                + f" ({p.rps / max(m.rps, u.rps if u else 0, 1e-9):.2f}×)"
                for p, m, u in zip(points, ml_points, ml1_points)))
    caveat = "" if args.rounds >= MIN_ROUNDS else f" (only {args.rounds} rounds: no verdict below {MIN_ROUNDS})"
    say(f"\nTargets (issues 10, 22 and 27: predmesh at its defaults, both load tools; a target is MET when its "
        f"WORST round meets it; MLServer's best is the better of batched and unbatched in that round){caveat}:")
    for tool in ("grpc", "pa"):
        for model in MODELS:
            pm_points = rounds.get((tool, model, 32, "pm"))
            ml_sets = [p for p in (rounds.get((tool, model, 32, k)) for k in ("ml", "ml1")) if p]
            if pm_points and ml_sets:
                ratios = round_ratios(pm_points, *ml_sets)
                say(f"- {LABELS[tool]} {model} c=32, predmesh / MLServer's best infer/s (≥ 2× every round): "
                    f"worst round {min(ratios):.2f}×, median {statistics.median(ratios):.2f}×, best "
                    f"{max(ratios):.2f}×: {verdict(min(ratios) >= 2, args.rounds)}")
            pm_one = rounds.get((tool, model, 1, "pm"))
            if pm_one and model not in expected:  # the 0.6 ms target is Iris's (issue 10)
                p50s = [p.p50_ms for p in pm_one]
                say(f"- {LABELS[tool]} {model} c=1, p50 (≤ 0.6 ms every round): worst round {max(p50s):.2f} ms, "
                    f"median {statistics.median(p50s):.2f} ms: {verdict(max(p50s) <= 0.6, args.rounds)}")
    for model in MODELS:
        rest_points, grpc_points = rounds.get(("rest", model, 32, "pm")), rounds.get(("grpc", model, 32, "pm"))
        if rest_points and grpc_points:  # two cells run minutes apart: rounds paired by their number
            ratios = round_ratios(rest_points, grpc_points)
            say(f"- REST through Envoy / direct gRPC (h2load), {model} c=32 (≥ 0.8× every round; rounds paired by "
                f"number): worst {min(ratios):.2f}×, median {statistics.median(ratios):.2f}×: "
                f"{verdict(min(ratios) >= 0.8, args.rounds)}")
    (work / "results.md").write_text("\n".join(lines) + "\n")
    (work / "results.json").write_text(json.dumps(
        {"|".join(map(str, k)): {**vars(v), "rounds": [vars(p) for p in rounds.get(k, [])]}
         for k, v in results.items()}, indent=1))
    print(f"\nwritten to {work / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
