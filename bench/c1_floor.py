"""What a durable answer at concurrency 1 cannot go below on this machine: the Python gRPC server's own round trip
(an empty unary handler, sync server vs grpc.aio) and one synchronous spool append (O_DSYNC pwrite into a
preallocated file, as inference/recording/spool.py writes), measured in one run.

Usage:  .venv/bin/python bench/c1_floor.py [--seconds 4] [--rounds 2]

h2load (closed loop, 1 connection, 1 stream) calls grpc.health.v1.Health/Check on a server in a child process
that answers SERVING and does nothing else: 64 handler threads for the sync server (as predmesh's), the default
event loop for grpc.aio. No interceptor, no scoring, no record. Then 3,000 appends of 384 bytes (about one
prediction record) with O_DSYNC into a posix_fallocate'd file under var/. Issue 10's c=1 target (p50 <= 0.6 ms
with durable persistence) has to fit predmesh's Python work (decode, validate, score, encode the record,
metrics, respond) into what these leave.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadtools

METHOD = "/grpc.health.v1.Health/Check"


def serve(kind: str, port: int) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
    if kind == "sync":
        class Health(health_pb2_grpc.HealthServicer):
            def Check(self, request, context):
                return serving
        server = grpc.server(futures.ThreadPoolExecutor(64))
        health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    class AsyncHealth(health_pb2_grpc.HealthServicer):
        async def Check(self, request, context):
            return serving

    async def main() -> None:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(AsyncHealth(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()
    asyncio.run(main())


def floor(kind: str, seconds: float) -> loadtools.Point:
    port = loadtools.free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port)])
    try:
        import grpc
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        loadtools.check_grpc(f"127.0.0.1:{port}", METHOD, b"")
        return loadtools.h2load(f"127.0.0.1:{port}", METHOD, loadtools.grpc_frame(b""), 1, seconds, warmup=1)
    finally:
        proc.terminate()
        proc.wait(10)


def dsync_append_us(n: int = 3000, size: int = 384) -> tuple[float, float]:
    """p50 and p99 of one O_DSYNC pwrite of `size` bytes into a preallocated file, in microseconds."""
    path = ROOT / "var" / f"c1-floor-{os.getpid()}.spool"
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DSYNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, n * size)
        data, took = b"x" * size, []
        for i in range(n):
            t0 = time.perf_counter()
            os.pwrite(fd, data, i * size)
            took.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    took.sort()
    return took[n // 2] * 1e6, took[int(n * 0.99)] * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    loadtools.require_tools()
    p50s: dict[str, list[float]] = {"sync": [], "aio": []}
    for rnd in range(args.rounds):
        for kind in ("sync", "aio"):
            point = floor(kind, args.seconds)
            p50s[kind].append(point.p50_ms)
            print(f"  round {rnd + 1} {kind:<4} empty unary call, c=1: {point.rps:,.0f}/s  p50 {point.p50_ms:.3f} ms  "
                  f"p99 {point.p99_ms:.3f} ms", flush=True)
    write_p50, write_p99 = dsync_append_us()
    sync, aio = statistics.median(p50s["sync"]), statistics.median(p50s["aio"])
    print(f"\nempty unary call p50 (median of rounds): sync server {sync:.3f} ms, grpc.aio {aio:.3f} ms "
          f"(aio / sync {aio / sync:.2f}x)")
    print(f"O_DSYNC append of 384 bytes into a preallocated file: p50 {write_p50:.0f} us, p99 {write_p99:.0f} us")
    left = 0.6 - sync - write_p50 / 1000
    print(f"a durable answer at c=1 within 0.6 ms leaves {left * 1000:.0f} us p50 for everything predmesh does in "
          f"Python and the thread hand-offs of a real call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
