"""An idle-stream attack (one client, many open PredictStreams that send one row and then say nothing) and latency
probes of unary calls, for the tests of a client's share of the server (T27)."""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import grpc
import requests

from predmesh.v1 import inference_pb2, inference_pb2_grpc
from predmesh.values import encode
from tests.conftest import IRIS_ROW


@dataclass
class StreamAttack:
    """What the open streams got: answers (a prediction for their row: the stream holds a handler), statuses
    that ended them (code name → count, and one message per code), and which are still open."""

    answered: int = 0
    ended: Counter = field(default_factory=Counter)
    messages: dict[str, str] = field(default_factory=dict)
    open_streams: int = 0


class IdleStreams:
    """n grpc.aio PredictStreams on one channel (one client) in a background event loop: each writes one row and
    keeps its request side open, idle, until close(). started.wait() returns once every stream was answered or
    ended (or after `settle` seconds)."""

    def __init__(self, target: str, n: int, *, settle: float = 20.0):
        self.target, self.n, self.settle = target, n, settle
        self.result = StreamAttack()
        self.started = threading.Event()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),),
                                        name="idle-streams", daemon=True)
        self._stop: asyncio.Event | None = None
        self._first: list[float] = []

    def __enter__(self) -> IdleStreams:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    async def _one(self, stub, i: int, settled: asyncio.Semaphore) -> None:
        stop = self._stop
        assert stop is not None

        async def requests_():
            yield inference_pb2.PredictStreamRequest(model="iris", features=encode(IRIS_ROW),
                                                     request_id=f"idle-{uuid.uuid4()}")
            await stop.wait()  # the request side stays open, silent

        call = stub.PredictStream(requests_(), timeout=120)
        counted = False
        try:
            async for _response in call:
                if not counted:
                    counted = True
                    with self._lock:
                        self.result.answered += 1
                        self.result.open_streams += 1
                    settled.release()
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED and stop.is_set():
                return
            with self._lock:
                self.result.ended[err.code().name] += 1
                self.result.messages.setdefault(err.code().name, err.details() or "")
                if counted:
                    self.result.open_streams -= 1
            if not counted:
                settled.release()
        finally:
            call.cancel()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        settled = asyncio.Semaphore(0)
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            tasks = [asyncio.ensure_future(self._one(stub, i, settled)) for i in range(self.n)]

            async def all_settled():
                for _ in range(self.n):
                    await settled.acquire()
            try:
                await asyncio.wait_for(all_settled(), self.settle)
            except TimeoutError:
                pass
            self.started.set()
            await self._stop.wait()
            # the request sides close now (a half-close): give each admitted stream time to end as the server ends
            # it (OK), rather than cancelling it in the same instant, which a loaded server sees as CANCELLED
            _, pending = await asyncio.wait(tasks, timeout=10)
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def unary_predict(target: str):
    """A callable making one gRPC Predict on its own channel (deadline 5 s); returns the latency in seconds."""
    channel = grpc.insecure_channel(target)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    request = inference_pb2.PredictRequest(model="iris", features=encode(IRIS_ROW))

    def call() -> float:
        started = time.perf_counter()
        stub.Predict(request, timeout=5)
        return time.perf_counter() - started
    call.close = channel.close  # type: ignore[attr-defined]
    return call


def rest_predict(base_url: str):
    """A callable making one REST predict through the gateway (timeout 5 s); returns the latency in seconds."""
    session = requests.Session()
    body = {"features": IRIS_ROW}

    def call() -> float:
        started = time.perf_counter()
        response = session.post(f"{base_url}/v1/models/iris:predict", json=body, timeout=5)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, (response.status_code, response.text[:200])
        return elapsed
    call.close = session.close  # type: ignore[attr-defined]
    return call


def latencies(call, n: int, pause: float = 0.005) -> tuple[list[float], list[str]]:
    """n calls one after another: (latencies of the answered ones, errors of the others)."""
    answered, errors = [], []
    for _ in range(n):
        try:
            answered.append(call())
        except Exception as exc:  # every failure is data here
            errors.append(type(exc).__name__ + ": " + str(exc)[:120])
        time.sleep(pause)
    return answered, errors


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("inf")
