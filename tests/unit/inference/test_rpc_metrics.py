"""The caching py-grpc-prometheus interceptor records exactly what the stock one records, call for call, and
counts streaming calls too (the stock one counts neither their start nor their end)."""
from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from prometheus_client import CollectorRegistry
from py_grpc_prometheus.prometheus_server_interceptor import PromServerInterceptor

from inference.metrics import CachingPromServerInterceptor


def ok(request, context):
    return request


def invalid(request, context):
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad")


def crash(request, context):
    raise RuntimeError("boom")


def echo_stream(request, context):
    yield request
    yield request


def samples(registry: CollectorRegistry) -> dict:
    """Every grpc_server_* sample except timing values (counts of the histogram are kept)."""
    out = {}
    for family in registry.collect():
        if not family.name.startswith("grpc_server"):
            continue
        for s in family.samples:
            if s.name.endswith("_created") or (s.name.endswith(("_bucket", "_sum"))):
                continue
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def exercise(interceptor) -> None:
    handlers = grpc.method_handlers_generic_handler("t.T", {
        "Ok": grpc.unary_unary_rpc_method_handler(ok),
        "Invalid": grpc.unary_unary_rpc_method_handler(invalid),
        "Crash": grpc.unary_unary_rpc_method_handler(crash),
        "Stream": grpc.unary_stream_rpc_method_handler(echo_stream),
    })
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[interceptor])
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call_ok: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/t.T/Ok")  # raw bytes
            for _ in range(3):
                assert call_ok(b"x", timeout=5) == b"x"
            for method, code in (("Invalid", grpc.StatusCode.INVALID_ARGUMENT), ("Crash", grpc.StatusCode.UNKNOWN),
                                 ("Missing", grpc.StatusCode.UNIMPLEMENTED)):
                failing: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(f"/t.T/{method}")
                for _ in range(2):
                    with pytest.raises(grpc.RpcError) as err:
                        failing(b"x", timeout=5)
                    assert err.value.code() == code
            stream: grpc.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream("/t.T/Stream")
            assert list(stream(b"x", timeout=5)) == [b"x", b"x"]
    finally:
        server.stop(None)


def test_caching_interceptor_records_the_same_series_and_counts_as_the_stock_one():
    stock, cached = CollectorRegistry(), CollectorRegistry()
    exercise(PromServerInterceptor(enable_handling_time_histogram=True, registry=stock))
    interceptor = CachingPromServerInterceptor(enable_handling_time_histogram=True, registry=cached)
    exercise(interceptor)
    expected = samples(stock)
    assert expected[("grpc_server_handled_total", (("grpc_code", "INVALID_ARGUMENT"), ("grpc_method", "Invalid"),
                                                   ("grpc_service", "t.T"), ("grpc_type", "UNARY")))] == 2
    stream = (("grpc_method", "Stream"), ("grpc_service", "t.T"), ("grpc_type", "SERVER_STREAMING"))
    assert ("grpc_server_handled_total", (("grpc_code", "OK"), *stream)) not in expected  # the stock gap
    expected.update({("grpc_server_handled_total", (("grpc_code", "OK"), *stream)): 1.0,
                     ("grpc_server_handling_seconds_count", stream): 1.0})
    assert samples(cached) == expected
    assert set(interceptor._wrapped) == {"/t.T/Ok", "/t.T/Invalid", "/t.T/Crash", "/t.T/Stream"}  # not unknown ones
