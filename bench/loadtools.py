"""C load tools for the benchmark: h2load with a pre-encoded gRPC frame, wrk for REST; percentiles from their logs."""
from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass
class Point:
    """One closed-loop measurement."""

    rps: float
    p50_ms: float
    p99_ms: float
    ok: int
    failed: int
    cpu_us: float = 0.0  # server CPU per answered request, where the caller measures it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc, timeout: float = 60.0) -> None:
    """Stop a process the benchmark started: SIGTERM (the server drains and closes its prediction log), then SIGKILL
    if it has not ended within timeout seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    return found


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll predicate (exceptions count as 'not yet') until it is true; TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # not up yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def require_tools() -> None:
    missing = [t for t in ("h2load", "wrk") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"missing load tools {missing}: apt-get install nghttp2-client wrk (scripts/setup.sh)")


def grpc_frame(message: bytes) -> bytes:
    """The length-prefixed gRPC message (uncompressed) that h2load posts as the request body."""
    return b"\0" + struct.pack(">I", len(message)) + message


def check_grpc(target: str, method: str, message: bytes, timeout: float = 5.0) -> bytes:
    """Send the exact bytes h2load will send and require grpc-status OK (h2load itself only sees HTTP 200)."""
    with grpc.insecure_channel(target) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            method, request_serializer=None, response_deserializer=None)
        try:
            return call(message, timeout=timeout)
        except grpc.RpcError as exc:
            raise SystemExit(f"{target}{method}: grpc-status {exc.code().name}: {exc.details()}") from None


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def h2load(target: str, method: str, frame: bytes, concurrency: int, seconds: float, warmup: float = 1.0,
           headers: tuple[str, ...] = ()) -> Point:
    """Closed loop: `concurrency` connections, one stream each; p50/p99 from h2load's per-request log.
    headers are extra request headers, e.g. "grpc-timeout: 10S"."""
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        body, log = Path(tmp) / "frame.bin", Path(tmp) / "requests.log"
        body.write_bytes(frame)
        out = subprocess.run(
            ["h2load", "-D", f"{int(seconds * 1000)}ms", f"--warm-up-time={int(warmup * 1000)}ms",
             "-c", str(concurrency), "-m", "1", "-t", "1", "-H", "content-type: application/grpc",
             "-H", "te: trailers", *(a for h in headers for a in ("-H", h)), "-d", str(body),
             "--log-file", str(log), f"http://{target}{method}"],
            capture_output=True, text=True, timeout=seconds + warmup + 60)
        if not log.exists():
            raise SystemExit(f"h2load wrote no log (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
        durations = []
        ok = failed = 0
        for line in log.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3:
                if parts[1] == "200":
                    ok += 1
                    durations.append(int(parts[2]) / 1000)
                else:
                    failed += 1
    match = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out.stdout)
    errored = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", out.stdout)
    if errored:
        failed += sum(int(g) for g in errored.groups())
    durations.sort()
    rps = float(match.group(2)) if match else ok / seconds
    return Point(rps, _percentile(durations, 0.5), _percentile(durations, 0.99), ok, failed)


_WRK_LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{extra}
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %f %f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url: str, body: dict, concurrency: int, seconds: float, *, close: bool = False) -> Point:
    """Closed loop over HTTP/1.1 keep-alive: `concurrency` connections on one wrk thread. close: every request
    says `Connection: close`, so the server closes after answering and wrk opens a new connection for the next
    (a client without keep-alive; wrk's latency starts when the request is written, after the TCP handshake)."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_WRK_LUA.format(body=json.dumps(json.dumps(body)),
                                          extra='wrk.headers["Connection"] = "close"' if close else ""))
        out = subprocess.run(["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{seconds:g}s", "--timeout", "5s",
                              "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+)", out.stdout)
    if not match:
        raise SystemExit(f"wrk gave no result for {url}:\n{out.stdout}\n{out.stderr}")
    requests, errors, duration_us = (int(g) for g in match.groups()[:3])
    p50, p99 = (float(g) / 1000 for g in match.groups()[3:])
    return Point(requests / (duration_us / 1e6), p50, p99, requests - errors, errors)


def _sdk_worker(target: str, method: str, args: tuple, threads: int, seconds: float, out) -> None:
    import threading

    from predmesh import Client

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    with Client(target, timeout=10) as client:
        call = getattr(client, method)
        call(*args)
        stop = time.monotonic() + seconds

        def loop():
            mine, bad = [], 0
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    call(*args)
                    mine.append((time.perf_counter() - t0) * 1000)
                except Exception:  # counted, not raised: the run goes on
                    bad += 1
            with lock:
                latencies.extend(mine)
                errors[0] += bad

        workers = [threading.Thread(target=loop) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    out.put((latencies, errors[0]))


def sdk_closed_loop(target: str, method: str, args: tuple, concurrency: int, seconds: float,
                    processes: int = 2) -> Point:
    """Client.<method>(*args) in `concurrency` closed-loop threads spread over up to `processes` client
    processes (the Python client is GIL-bound); latencies in ms."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = max(1, min(processes, concurrency))
    out = ctx.Queue()
    workers = [ctx.Process(target=_sdk_worker, args=(target, method, args,
                                                     concurrency // procs + (i < concurrency % procs), seconds, out))
               for i in range(procs)]
    for w in workers:
        w.start()
    latencies, errors = [], 0
    for _ in workers:
        got, bad = out.get(timeout=seconds + 120)
        latencies.extend(got)
        errors += bad
    for w in workers:
        w.join()
    latencies.sort()
    return Point(len(latencies) / seconds, _percentile(latencies, 0.5), _percentile(latencies, 0.99),
                 len(latencies), errors)


def find_perf_analyzer(explicit: str | None = None) -> str | None:
    """Triton's perf_analyzer: the given path, $PERF_ANALYZER, or the wrapper that ../shared/tools/perf-analyzer.sh
    installs (/tmp/perf-analyzer/perf_analyzer); None when there is none (its PyPI wheel is a placeholder on
    Debian 12: see TOOLCHAIN.md §10)."""
    import os

    for candidate in (explicit, os.environ.get("PERF_ANALYZER"), "/tmp/perf-analyzer/perf_analyzer",
                      shutil.which("perf_analyzer")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


def perf_analyzer(binary: str, target: str, model: str, records: list[dict[str, list]],
                  concurrency: int, seconds: float) -> Point:
    """Closed loop with Triton's perf_analyzer over OIP gRPC: one client process multiplexing `concurrency`
    outstanding requests on its gRPC channel (unlike h2load's connection per stream), one row per request,
    cycling through real rows (--input-data: records, each {input name: its values}, e.g. {"input": [4 floats]}
    or one entry per column, strings for a BYTES input). infer/s and p50/p99 from its CSV report, over 3
    windows of seconds/3 each after its own warm-up."""
    window_ms = max(1000, int(seconds * 1000 / 3))
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
        data, csv = Path(tmp) / "rows.json", Path(tmp) / "report.csv"
        data.write_text(json.dumps({"data": records}))
        out = subprocess.run(
            [binary, "-m", model, "-u", target, "-i", "grpc", "--concurrency-range", str(concurrency),
             "--input-data", str(data), "-b", "1", "--measurement-interval", str(window_ms),
             "--stability-percentage", "10000", "--max-trials", "3", "--percentile", "99", "-f", str(csv)],
            capture_output=True, text=True, timeout=seconds * 4 + 120)
        if out.returncode != 0 or not csv.exists():
            raise SystemExit(f"perf_analyzer failed on {target} {model} (exit {out.returncode}):\n"
                             f"{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        header, values = csv.read_text().splitlines()[:2]
        row = dict(zip(header.split(","), values.split(",")))
    errors = re.search(r"(\d+) errors?", out.stdout)
    count = re.search(r"Request count: (\d+)", out.stdout)
    return Point(float(row["Inferences/Second"]), float(row["p50 latency"]) / 1000, float(row["p99 latency"]) / 1000,
                 int(count.group(1)) if count else 0, int(errors.group(1)) if errors else 0)
