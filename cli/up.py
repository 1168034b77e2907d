"""`predmesh up`: run the whole local mesh as supervised child processes.

N inference replicas, the Envoy gateway in front of them, then the parts that are clients of the mesh: the queue
consumer (only when the broker at PREDMESH_AMQP_URL answers), the dashboard, Luigi's central scheduler and
Prometheus (when installed). Every URL is printed; Ctrl-C (or SIGTERM) stops everything it started; a part that
dies is reported and restarted with capped exponential backoff, and so is one that stops answering its health
check (frozen, deadlocked: ~30 s of no answer). `predmesh up --check` (also `predmesh status`)
asks each part's health endpoint and prints which are up, without starting anything.

A part is one entry (Part: name, argv, env, health probe, URLs, restartable); adding a part to the mesh is
adding one entry to plan().
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cli.probe import grpc_health, http_ok
from predmesh.env import Env, redact
from predmesh.logs import setup_logging
from predmesh.startup import StartupError, check_bindable, run_guarded

ROOT = Path(__file__).resolve().parent.parent
BACKOFF_START, BACKOFF_MAX, STABLE_AFTER = 1.0, 30.0, 30.0

CONSUMER_CONNECTED = "predmesh_consumer_connected 1.0"   # its /metrics while connected and consuming
Probe = Callable[[], "tuple[bool, str]"]


@dataclass
class Part:
    """One supervised child process of the mesh."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    probe: Probe | None = None              # (healthy, detail) from the part's health endpoint
    urls: list[str] = field(default_factory=list)   # what the operator is told, one line each
    binds: list[str] = field(default_factory=list)  # the addresses it listens on (checked free before the start)
    restartable: bool = True                # restarted with backoff when it dies (all parts are, today)
    core: bool = False                      # the mesh cannot run without it: startup fails if it never gets healthy
    stage: int = 2                          # started after every part of a lower stage is healthy
    prepare: Callable[[], object] | None = None    # run before each start (directories, config files)
    proc: subprocess.Popen | None = None
    restarts: int = 0
    backoff: float = BACKOFF_START
    restart_at: float = 0.0                 # monotonic time of the next restart attempt (0: none pending)
    started_at: float = 0.0
    recovering: bool = False                # restarted: say so once it is healthy again
    checked_at: float = 0.0

    def healthy(self) -> tuple[bool, str]:
        if self.probe is None:
            return (self.proc is not None and self.proc.poll() is None), "running"
        return self.probe()


# --- the plan: which parts, where they listen --------------------------------------------------------------

def _next_addr(addr: str, offset: int) -> str:
    host, _, port = addr.rpartition(":")
    return f"{host}:{int(port) + offset}"


def _port(addr: str) -> int:
    return int(addr.rpartition(":")[2])


def replica_addrs(environ: Mapping[str, str], replicas: int, taken: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(gRPC, metrics) address of each replica: replica 1 on PREDMESH_GRPC_ADDR / PREDMESH_METRICS_ADDR (read by
    the server's own settings, defaults included), replica k on the next ports after replica k-1's that no other
    part listens on (taken: the other parts' addresses; the consumer's metrics default to 9102, right after the
    first replica's 9101). Empty metrics address: off; port 0 (any free port) stays 0 for every replica."""
    from inference.settings import ServerSettings

    server = ServerSettings.from_env(environ)
    used = {_port(a) for a in taken if a}

    def after(addr: str) -> str:
        if _port(addr) == 0:  # any free port: each replica picks its own (0 + k was port k, privileged)
            return addr
        offset = 1
        while _port(addr) + offset in used:
            offset += 1
        return _next_addr(addr, offset)

    out: list[tuple[str, str]] = []
    grpc_addr, metrics_addr = server.grpc_addr, server.metrics_addr
    for i in range(replicas):
        if i:
            grpc_addr, metrics_addr = after(grpc_addr), after(metrics_addr) if metrics_addr else ""
        used.update(_port(a) for a in (grpc_addr, metrics_addr) if a and _port(a))
        out.append((grpc_addr, metrics_addr))
    return out


def prometheus_addr(environ: Mapping[str, str]) -> str:
    """PREDMESH_PROMETHEUS_ADDR: where `predmesh up` runs Prometheus (read here: Prometheus is no predmesh part)."""
    return Env(environ).addr("PROMETHEUS_ADDR", "127.0.0.1:9090")


def other_addrs(args: argparse.Namespace, environ: Mapping[str, str]) -> list[str]:
    """The addresses the mesh's other parts will listen on (the replicas' are chosen around them)."""
    out = []
    if not args.no_gateway:
        from gateway.settings import GatewaySettings

        s = GatewaySettings.from_env(environ)
        out += [s.public_addr, s.admin_addr, s.envoy_admin_addr, s.stats_addr]
    if not args.no_consumer:
        from consumer.settings import ConsumerSettings

        out.append(ConsumerSettings.from_env(environ).metrics_addr)
    if not args.no_ui:
        from ui.settings import UiSettings

        out.append(UiSettings.from_env(environ).addr)
    if not args.no_luigid:
        from batch.settings import BatchSettings

        out.append(BatchSettings.from_env(environ).luigid)
    if not args.no_prometheus:
        out.append(prometheus_addr(environ))
    return [a for a in out if a]


def addresses_in_use(parts: list[Part]) -> str:
    """Why the addresses parts would listen on cannot be bound now, in one line ("" when all are free). Checked
    before anything is started: a second `predmesh up` would otherwise find the first one's parts healthy, report
    them as its own, and restart its own children failing on "address already in use" for ever."""
    taken: list[str] = []  # "part address" of each address another process holds
    other: list[str] = []  # any other reason, as check_bindable words it
    for part in parts:
        for addr in filter(None, part.binds):
            try:
                check_bindable(addr, f"{part.name}'s address")
            except StartupError as exc:
                if "already in use" in str(exc):
                    taken.append(f"{part.name} {addr}")
                else:
                    other.append(str(exc))
    if taken:
        other.insert(0, "addresses already in use: " + ", ".join(taken) + ". Is another `predmesh up` running? "
                     "`predmesh status` says what answers there; stop that mesh, or set the parts' PREDMESH_*_ADDR "
                     "variables")
    return "; ".join(other)


def broker_reachable(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """(reachable, detail): an AMQP connection to url opens (and is closed again)."""
    import pika

    # one probe connection, whose failure the caller reports in one line: none of pika's own log of it (seven
    # ERROR lines and a traceback on the operator's terminal when the broker was down)
    pika_log = logging.getLogger("pika")
    level, pika_log.level = pika_log.level, logging.CRITICAL + 1
    try:
        params = pika.URLParameters(url)
        params.socket_timeout = params.blocked_connection_timeout = timeout
        params.connection_attempts, params.retry_delay = 1, 0
        pika.BlockingConnection(params).close()
        return True, "reachable"
    except Exception as exc:  # any failure means "not reachable", reported with its reason
        return False, f"not reachable ({type(exc).__name__}: {str(exc) or 'no answer'})"
    finally:
        pika_log.setLevel(level)


def rabbitmq_metrics_addr(environ: Mapping[str, str], amqp_url: str) -> str:
    """Where the broker's Prometheus plugin (rabbitmq_prometheus) answers: PREDMESH_RABBITMQ_METRICS_ADDR, else
    the AMQP URL's host on the plugin's port, 15692."""
    from urllib.parse import urlsplit

    host = urlsplit(amqp_url).hostname or "127.0.0.1"
    return Env(environ).addr("RABBITMQ_METRICS_ADDR", f"[{host}]:15692" if ":" in host else f"{host}:15692")


WRITER_TOKEN_FILE = Path("var/writer-token")  # under the working directory, like var/models and var/prometheus


def writer_token_env(environ: Mapping[str, str]) -> tuple[dict[str, str], str, Callable[[], object] | None]:
    """How the parts get the writer token (writes of monitoring data: feedback, batch runs): (variables for the
    replicas and the dashboard, a line for the operator, what to run before a replica starts). A token the
    operator set (PREDMESH_WRITER_TOKEN[_FILE]) or PREDMESH_OPEN_WRITES is used as it is; otherwise a token is
    generated once into var/writer-token (mode 0600) and reused by every later `predmesh up` here."""
    if environ.get("PREDMESH_OPEN_WRITES", "").strip().lower() in ("1", "true", "yes", "on"):
        return {}, "writes of monitoring data: open to anyone (PREDMESH_OPEN_WRITES)", None
    if environ.get("PREDMESH_WRITER_TOKEN") or environ.get("PREDMESH_WRITER_TOKEN_FILE"):
        return {}, "writes of monitoring data: the writer token you set (PREDMESH_WRITER_TOKEN)", None
    path = WRITER_TOKEN_FILE.resolve()
    line = (f"writes of monitoring data (feedback, batch runs) need the writer token: for `predmesh batch` and "
            f"other writers, export PREDMESH_WRITER_TOKEN_FILE={path}")
    return {"PREDMESH_WRITER_TOKEN_FILE": str(path)}, line, functools.partial(ensure_token_file, path)


def admin_note(environ: Mapping[str, str]) -> str:
    """Whether the replicas serve the admin API (reload, rollout, pin, rollback): only with PREDMESH_ADMIN_TOKEN.
    Without this line a newcomer saw "admin REST http://…" printed and every admin call refused."""
    from inference.settings import ServerSettings

    if ServerSettings.from_env(environ).admin_token:
        return "admin API (reload, rollout, pin, rollback): on, with the PREDMESH_ADMIN_TOKEN you set"
    return ("admin API (reload, rollout, pin, rollback): off, as PREDMESH_ADMIN_TOKEN is not set; export it (or "
            "PREDMESH_ADMIN_TOKEN_FILE) before `predmesh up` to turn it on")


def ensure_token_file(path: Path) -> None:
    """A random token in path (created with mode 0600 if missing; an existing one is kept)."""
    import secrets

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(24) + "\n")


@dataclass
class Plan:
    parts: list[Part]
    notes: list[str]                        # parts not started, and why; how writes are authorised


def plan(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Plan:
    """The parts of the local mesh for these options and environment (nothing is started here)."""
    py = sys.executable
    parts: list[Part] = []
    notes: list[str] = []
    addrs = replica_addrs(environ, args.replicas, other_addrs(args, environ) if args.replicas > 1 else ())
    writer_env, writer_note, make_token = writer_token_env(environ)
    notes.append(writer_note)
    notes.append(admin_note(environ))
    scrape: dict[str, list[str]] = {"inference": [m for _, m in addrs if m]}   # Prometheus job -> targets
    for i, (grpc_addr, metrics_addr) in enumerate(addrs):
        urls = [f"gRPC {grpc_addr}"] + ([f"metrics http://{metrics_addr}/metrics"] if metrics_addr else [])
        env = {"PREDMESH_GRPC_ADDR": grpc_addr, "PREDMESH_METRICS_ADDR": metrics_addr, **writer_env}
        if args.replicas > 1 and "PREDMESH_PROCESSES" not in environ:
            env["PREDMESH_PROCESSES"] = "1"     # the replicas share the CPUs already: not one process per CPU each
        parts.append(Part(f"inference-{i + 1}" if args.replicas > 1 else "inference",
                          [py, "-m", "inference", "serve", "--no-train"], env,
                          probe=functools.partial(grpc_health, grpc_addr), urls=urls, core=True, stage=0,
                          prepare=make_token, binds=[grpc_addr, metrics_addr]))
    # the clients of the mesh reach the replicas through the gateway's public listener (native gRPC passes
    # through, balanced over healthy replicas), or replica 1 directly without a gateway
    server_addr = admin_addr = addrs[0][0]
    if not args.no_gateway:
        from gateway.config import OPENAPI_PATH
        from gateway.settings import GatewaySettings

        env = {"PREDMESH_GATEWAY_UPSTREAMS": ",".join(g for g, _ in addrs)}
        s = GatewaySettings.from_env({**environ, **env})
        urls = [(f"REST {s.public_url}/v1/models  (OpenAPI {s.public_url}{OPENAPI_PATH}, gRPC {s.public_addr}; "
                 f"work files in {s.work_dir})")]
        if s.docs:
            urls.append(f"API docs {s.public_url}/docs")
        if s.admin_url:
            urls.append(f"admin REST {s.admin_url} (ModelAdminService, loopback)")
        urls.append(f"Envoy admin/stats http://{s.envoy_admin_addr}/stats/prometheus")
        scrape["envoy"] = [s.envoy_admin_addr]
        parts.append(Part("gateway", [py, "-m", "gateway"], env,
                          probe=functools.partial(http_ok, f"http://{s.envoy_admin_addr}/ready", "LIVE"),
                          urls=urls, core=True, stage=1,
                          binds=[s.public_addr, s.admin_addr, s.envoy_admin_addr, s.stats_addr]))
        server_addr = s.public_addr
        admin_addr = s.admin_addr or admin_addr
    client_env = {"PREDMESH_SERVER_ADDR": server_addr}

    if args.no_consumer:
        notes.append("consumer: not started (--no-consumer)")
    else:
        from consumer.settings import ConsumerSettings

        consumer = ConsumerSettings.from_env(environ)
        amqp = consumer.amqp.url
        reachable, detail = broker_reachable(amqp)
        if not reachable:
            notes.append(f"consumer: not started: the broker at {redact(amqp)} is {detail}")
        else:
            metrics = consumer.metrics_addr
            scrape["consumer"] = [metrics]
            parts.append(Part("consumer", [py, "-m", "consumer"], {**client_env, "PREDMESH_AMQP_URL": amqp},
                              probe=functools.partial(http_ok, f"http://{metrics}/metrics", CONSUMER_CONNECTED),
                              urls=[f"queue {redact(amqp)} (broker reachable)",
                                    f"metrics http://{metrics}/metrics"], binds=[metrics]))
            broker_metrics = rabbitmq_metrics_addr(environ, amqp)
            answers, why = http_ok(f"http://{broker_metrics}/metrics", timeout=2.0)
            if answers:  # the queue-depth half of PredmeshConsumerLag and the dead-letter alerts read these
                scrape["rabbitmq"] = scrape["rabbitmq-queues"] = [broker_metrics]
            else:
                notes.append(f"rabbitmq: its metrics are not scraped: http://{broker_metrics}/metrics gave {why} "
                             "(enable the broker's Prometheus plugin: `rabbitmq-plugins enable rabbitmq_prometheus`; "
                             "PREDMESH_RABBITMQ_METRICS_ADDR names another address)")

    if args.no_ui:
        notes.append("dashboard: not started (--no-ui)")
    else:
        from ui.settings import UiSettings

        ui_addr = UiSettings.from_env(environ).addr
        # reloads typed in the dashboard go to the gateway's admin listener (native gRPC passes there too)
        # feedback typed in the dashboard is sent with the writer token (kept in the dashboard's process)
        parts.append(Part("dashboard", [py, "-m", "ui"], {**client_env, "PREDMESH_UI_ADMIN_ADDR": admin_addr,
                                                          **writer_env},
                          probe=functools.partial(http_ok, f"http://{ui_addr}/liveness"),   # no login, no page built
                          urls=[f"http://{ui_addr}/"], binds=[ui_addr]))

    if args.no_luigid:
        notes.append("luigid: not started (--no-luigid)")
    else:
        from batch.settings import BatchSettings

        luigid_addr = BatchSettings.from_env(environ).luigid
        scrape["luigid"] = [luigid_addr]
        # luigid with the pipeline's configuration (retcodes, Prometheus /metrics)
        parts.append(Part("luigid", [py, "-m", "batch", "scheduler"], {"PREDMESH_LUIGID_ADDR": luigid_addr},
                          probe=functools.partial(http_ok, f"http://{luigid_addr}/api/task_list", "response"),
                          urls=[f"http://{luigid_addr}/static/visualiser/index.html (Luigi scheduler)"],
                          binds=[luigid_addr]))

    if args.no_prometheus:
        notes.append("prometheus: not started (--no-prometheus)")
    elif not shutil.which("prometheus"):
        notes.append("prometheus: not installed (Debian package prometheus)")
    else:
        parts.append(prometheus_part(environ, scrape))
    return Plan(parts, notes)


def prometheus_part(environ: Mapping[str, str], scrape: dict[str, list[str]]) -> Part:
    """Prometheus (Debian's) scraping every part started here, with the repository's rules; its configuration and
    file-based targets are written by the monitoring helper under var/prometheus when it starts."""
    from cli import monitoring

    addr = prometheus_addr(environ)
    directory = Path("var/prometheus").resolve()
    targets = {**scrape, "prometheus": [addr]}
    argv = monitoring.prometheus_argv(directory / "prometheus.yml", directory / "data", addr)
    scraped = ", ".join(f"{job} {len(t)}" for job, t in targets.items() if t)
    return Part("prometheus", argv, probe=lambda: http_ok(f"http://{addr}/-/ready"), binds=[addr],
                prepare=lambda: monitoring.write_config(directory, targets),
                urls=[f"http://{addr}/graph (scraping {scraped}; config {directory}/prometheus.yml)"])


# --- processes ---------------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """In the child: get SIGTERM if `predmesh up` itself dies (even by SIGKILL), so nothing is left behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except OSError:
        pass


def start(part: Part, environ: Mapping[str, str] = os.environ) -> None:
    """Start a part in its own process group (so stopping it stops whatever it started, e.g. Envoy)."""
    if part.prepare is not None:
        part.prepare()
    part.proc = subprocess.Popen(part.argv, env={**environ, **part.env}, start_new_session=True,
                                 preexec_fn=_die_with_parent)
    part.started_at = time.monotonic()


def _signal_group(part: Part, sig: int) -> None:
    assert part.proc is not None  # only started parts are signalled
    try:
        os.killpg(part.proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all(parts: list[Part], timeout: float = 20.0) -> None:
    """Stop the parts stage by stage, the reverse of the start: the clients (consumer, dashboard, luigid,
    Prometheus) first, then the gateway, then the replicas. Each stage's process groups get SIGTERM once the stage
    after it has exited, and SIGKILL after timeout seconds. (Signalled all at once, Envoy exited at once and the
    consumer's in-flight jobs failed UNAVAILABLE until it was killed 20 s later.)"""
    for stage in sorted({p.stage for p in parts}, reverse=True):
        group = [p for p in reversed(parts) if p.stage == stage and p.proc is not None]
        for part in group:
            _signal_group(part, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for part in group:
            assert part.proc is not None  # group holds started parts only
            try:
                part.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"predmesh up: {part.name} did not stop within {timeout:.0f} s: killing it", file=sys.stderr,
                      flush=True)
            _signal_group(part, signal.SIGKILL)      # the group's other members (a part's own children), if any
            if part.proc.poll() is None:
                part.proc.wait()


def wait_healthy(parts: list[Part], timeout: float, stopping: Callable[[], bool]) -> dict[str, tuple[bool, str]]:
    """Poll the parts' probes until all are healthy, one exits, we are stopping, or timeout; name -> result."""
    results = {p.name: (False, "not checked") for p in parts}
    deadline = time.monotonic() + timeout
    pending = list(parts)
    while pending and time.monotonic() < deadline and not stopping():
        for part in list(pending):
            assert part.proc is not None  # every part waited for was started
            if part.proc.poll() is not None:
                results[part.name] = (False, f"exited with {part.proc.returncode}")
                pending.remove(part)
                continue
            results[part.name] = part.healthy()
            if results[part.name][0]:
                pending.remove(part)
        if pending:
            time.sleep(0.2)
    return results


def supervise_once(parts: list[Part], environ: Mapping[str, str], now: float | None = None,
                   log=print) -> None:
    """One round: report parts that died, schedule their restart with backoff, restart those that are due."""
    now = time.monotonic() if now is None else now
    for part in parts:
        if part.proc is None:
            continue
        code = part.proc.poll()
        if code is None:
            if part.recovering and now - part.checked_at >= 1.0:
                part.checked_at = now
                ok, detail = part.healthy()
                if ok:
                    part.recovering = False
                    log(f"predmesh up: {part.name} is healthy again ({detail})")
            elif now - part.started_at > STABLE_AFTER:
                part.backoff = BACKOFF_START          # it has run long enough: forget its past failures
            continue
        if part.restart_at == 0:
            _signal_group(part, signal.SIGKILL)       # whatever it left behind in its group
            if not part.restartable:
                log(f"predmesh up: {part.name} exited with {code}; not restarting it")
                part.proc = None
                continue
            part.restart_at = now + part.backoff
            log(f"predmesh up: {part.name} exited with {code}; restarting it in {part.backoff:.0f} s")
            part.backoff = min(part.backoff * 2, BACKOFF_MAX)
        elif now >= part.restart_at:
            part.restart_at = 0
            part.restarts += 1
            part.recovering = True
            start(part, environ)
            log(f"predmesh up: {part.name} restarted (restart {part.restarts})")


# A part that does not answer its health probe at all (a timeout, a refused or reset connection: frozen by
# SIGSTOP, deadlocked, its listener gone) this many checks in a row, LIVENESS_INTERVAL seconds apart (~30 s), is
# killed and so restarted with backoff, as Kubernetes' liveness probe does (10 s × 3 there too). A part that
# answers "not healthy" (a replica NOT_SERVING while it drains, a consumer waiting for its broker) is alive and left
# alone.
LIVENESS_INTERVAL, LIVENESS_FAILURES = 10.0, 3
_UNANSWERED = ("no answer", "gRPC health: DEADLINE_EXCEEDED", "gRPC health: UNAVAILABLE")


def unanswered(detail: str) -> bool:
    """True when a probe's detail says the part gave no answer at all (cli.probe's wording)."""
    return detail.startswith(_UNANSWERED)


class Liveness:
    """Probes every running part in the background, LIVENESS_INTERVAL apart (a hung part's probe waits for its
    timeout off the supervising loop), and kills a part that gave no answer LIVENESS_FAILURES times in a row, so
    that supervise_once restarts it."""

    def __init__(self, interval: float = LIVENESS_INTERVAL, failures: int = LIVENESS_FAILURES):
        self.interval, self.failures = interval, failures
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="liveness")
        self._pending: dict[str, tuple[subprocess.Popen, Future[tuple[bool, str]]]] = {}
        self._missed: dict[str, int] = {}
        self._due: dict[str, float] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def check(self, parts: list[Part], now: float | None = None, log=print) -> None:
        now = time.monotonic() if now is None else now
        for part in parts:
            if part.proc is None or part.proc.poll() is not None or part.recovering or part.probe is None:
                self._missed.pop(part.name, None)   # dead (supervise_once's) or starting: not probed
                self._pending.pop(part.name, None)
                continue
            pending = self._pending.get(part.name)
            if pending is not None:
                proc, future = pending
                if not future.done():
                    continue
                del self._pending[part.name]
                if proc is not part.proc:
                    continue                        # a probe of the previous process
                ok, detail = future.result()
                missed = self._missed[part.name] = self._missed.get(part.name, 0) + 1 if (
                    not ok and unanswered(detail)) else 0
                if missed >= self.failures:
                    self._missed.pop(part.name, None)
                    log(f"predmesh up: {part.name} gave no answer to {missed} health checks in a row ({detail}): "
                        "killing it, to restart it")
                    _signal_group(part, signal.SIGKILL)
                    continue
            if now >= self._due.get(part.name, 0.0):
                self._due[part.name] = now + self.interval
                self._pending[part.name] = (part.proc, self._pool.submit(part.probe))


def train_if_empty(environ: Mapping[str, str]) -> None:
    """Train the demo model once, before the replicas start (they must not race to train it)."""
    from inference.models.store import ModelStore
    from inference.settings import ServerSettings

    settings = ServerSettings.from_env(environ)
    if not ModelStore(settings.model_store, settings.signing_key).models():
        code = subprocess.run([sys.executable, "-m", "inference", "train"], env=dict(environ)).returncode
        if code:  # it said why on its own line; the mesh cannot serve without a model
            raise StartupError(f"training the demo model into {settings.model_store} failed (exit {code}); "
                               "nothing was started")


# --- reports -----------------------------------------------------------------------------------------------

def report(mesh: Plan, results: dict[str, tuple[bool, str]]) -> str:
    lines = []
    for part in mesh.parts:
        ok, detail = results.get(part.name, (False, "not checked"))
        lines.append(f"  {part.name:<12} {'UP  ' if ok else 'DOWN'}  {detail}")
        lines += [f"  {'':<12}       {url}" for url in part.urls]
    lines += [f"  - {note}" for note in mesh.notes]
    return "\n".join(lines)


def check(mesh: Plan) -> int:
    """`predmesh up --check`: probe every planned part once (in parallel); 0 when all are up."""
    with ThreadPoolExecutor(max_workers=max(1, len(mesh.parts))) as pool:
        results = dict(zip([p.name for p in mesh.parts], pool.map(lambda p: p.probe(), mesh.parts)))
    up = sum(ok for ok, _ in results.values())
    print(f"predmesh mesh: {up}/{len(mesh.parts)} parts up\n" + report(mesh, results), flush=True)
    return 0 if up == len(mesh.parts) else 1


def parser(prog: str = "predmesh up") -> argparse.ArgumentParser:
    from inference.settings import ServerSettings
    from predmesh.env import env_epilog, variables_read

    env = variables_read(ServerSettings.from_env, only=(
        "PREDMESH_GRPC_ADDR", "PREDMESH_METRICS_ADDR", "PREDMESH_MODEL_STORE", "PREDMESH_MODEL_SIGNING_KEY",
        "PREDMESH_LOG_LEVEL"))
    env += ["PREDMESH_AMQP_URL", "PREDMESH_CONSUMER_METRICS_ADDR", "PREDMESH_UI_ADDR", "PREDMESH_LUIGID_ADDR",
            "PREDMESH_PROMETHEUS_ADDR", "PREDMESH_RABBITMQ_METRICS_ADDR", "PREDMESH_WRITER_TOKEN[_FILE]",
            "PREDMESH_OPEN_WRITES"]  # read here, by no part
    p = argparse.ArgumentParser(prog=prog, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=env_epilog(env) + "\nEach part also reads its own: see `predmesh <part> "
                                "--help`.")
    p.add_argument("--replicas", type=int, default=1,
                   help="inference replicas behind the gateway (default 1); replica k listens on the next "
                        "ports after replica k-1's, from PREDMESH_GRPC_ADDR's and PREDMESH_METRICS_ADDR's, "
                        "skipping ports another part listens on")
    p.add_argument("--check", action="store_true",
                   help="do not start anything: report which parts are up and healthy (exit 1 if any is not)")
    p.add_argument("--no-gateway", action="store_true", help="do not start the Envoy REST gateway")
    p.add_argument("--no-consumer", action="store_true", help="do not start the queue consumer")
    p.add_argument("--no-ui", action="store_true", help="do not start the dashboard")
    p.add_argument("--no-luigid", action="store_true", help="do not start Luigi's central scheduler")
    p.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    p.add_argument("--startup-timeout", type=float, default=60.0,
                   help="seconds each stage may take to become healthy (default 60)")
    return p


def main(argv: list[str] | None = None, prog: str = "predmesh up") -> int:
    args = parser(prog).parse_args(argv)
    if args.replicas < 1:
        parser(prog).error("--replicas must be at least 1")
    return run_guarded(prog, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from inference.settings import ServerSettings

    setup_logging(ServerSettings.from_env(os.environ).log_level)  # also refuses a malformed setting up front
    # the plan reads luigi's configuration (luigid's address), and luigi logs the files it read ("Loaded []") at
    # INFO: the first line `predmesh status` and `predmesh up` printed
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)
    if args.check:
        return check(plan(args))
    mesh = plan(args)
    parts = mesh.parts
    busy = addresses_in_use(parts)
    if busy:
        raise StartupError(busy)
    train_if_empty(os.environ)
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    results: dict[str, tuple[bool, str]] = {}
    try:
        for stage in sorted({p.stage for p in parts}):
            group = [p for p in parts if p.stage == stage]
            for part in group:
                start(part)
            results.update(wait_healthy(group, args.startup_timeout, lambda: stopping))
            failed = [p.name for p in group if p.core and not results[p.name][0]]
            if stopping:  # Ctrl-C before the mesh was up: an interrupted start, as every entry point reports it
                print("predmesh up: interrupted during start-up", file=sys.stderr, flush=True)
                return 130
            if failed:
                print("predmesh up: " + ", ".join(failed) + " did not become healthy; stopping the mesh\n"
                      + report(mesh, results), file=sys.stderr, flush=True)
                return 1
        up = sum(ok for ok, _ in results.values())
        print(f"predmesh up: {up}/{len(parts)} parts up; Ctrl-C stops everything\n" + report(mesh, results),
              flush=True)
        def log(message: str) -> None:
            print(message, file=sys.stderr, flush=True)

        liveness = Liveness()
        try:
            while not stopping:
                supervise_once(parts, os.environ, log=log)
                liveness.check(parts, log=log)
                time.sleep(0.2)
        finally:
            liveness.close()
        return 0
    finally:
        print("predmesh up: stopping " + ", ".join(p.name for p in parts if p.proc is not None), flush=True)
        stop_all(parts)
