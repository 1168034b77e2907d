"""The gRPC server's handler pool (inference/rpc/pool.py): what grpc.server relies on of its thread pool."""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from inference.rpc.pool import HandlerPool


def test_each_call_runs_once_and_its_callbacks_after_it():
    pool = HandlerPool(4)
    order: list[str] = []
    release = threading.Event()
    started = threading.Event()

    def call(tag):
        started.set()
        release.wait(5)
        order.append(f"ran {tag}")

    submitted = pool.submit(call, "a")
    assert started.wait(5)
    submitted.add_done_callback(lambda c: order.append("callback a"))  # added while it runs
    release.set()
    deadline = time.monotonic() + 5
    while len(order) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert order == ["ran a", "callback a"]
    late: list[object] = []
    submitted.add_done_callback(late.append)  # added after it finished: runs at once, in this thread
    assert late == [submitted]
    pool.shutdown()


def test_a_failing_call_still_runs_its_callbacks_and_the_thread_goes_on():
    pool = HandlerPool(1)
    done = threading.Event()
    failing = pool.submit(lambda: 1 / 0)
    failing.add_done_callback(lambda c: done.set())
    assert done.wait(5)
    after = threading.Event()
    pool.submit(after.set)
    assert after.wait(5)
    pool.shutdown()


def test_threads_start_on_demand_up_to_the_limit_and_idle_ones_are_reused():
    pool = HandlerPool(3, thread_name_prefix="t")
    for _ in range(20):  # one at a time: the one thread stays enough
        finished = threading.Event()
        pool.submit(finished.set)
        assert finished.wait(5)
        time.sleep(0.005)  # let the thread count itself idle again
    assert len(pool._threads) == 1
    running: set[str] = set()
    release = threading.Event()

    def hold():
        running.add(threading.current_thread().name)
        release.wait(5)

    for _ in range(6):  # more at once than the limit: 3 threads, the rest queue
        pool.submit(hold)
    time.sleep(0.2)
    assert len(pool._threads) == 3 and running == {"t_0", "t_1", "t_2"}
    release.set()
    pool.shutdown()
    assert not any(t.is_alive() for t in pool._threads)
    with pytest.raises(RuntimeError):
        pool.submit(print)


def test_a_grpc_server_answers_through_it_with_a_concurrency_limit():
    """grpc.server with maximum_concurrent_rpcs adds a done callback to every call's future: the calls are counted
    out again, so more calls than the limit, one after another, are all answered."""
    pool = HandlerPool(2)
    server = grpc.server(pool, maximum_concurrent_rpcs=2)  # type: ignore[arg-type]
    handler = grpc.method_handlers_generic_handler("t.T", {"Echo": grpc.unary_unary_rpc_method_handler(
        lambda request, context: request)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/t.T/Echo", request_serializer=None, response_deserializer=None)
            assert [echo(b"%d" % i, timeout=5) for i in range(10)] == [b"%d" % i for i in range(10)]
    finally:
        server.stop(None).wait(5)
        pool.shutdown()
