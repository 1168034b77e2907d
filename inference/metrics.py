"""Prometheus metrics of the server beyond the per-RPC ones py-grpc-prometheus records."""
from __future__ import annotations

from timeit import default_timer

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from py_grpc_prometheus import grpc_utils
from py_grpc_prometheus.prometheus_server_interceptor import PromServerInterceptor


class CachingPromServerInterceptor(PromServerInterceptor):
    """py-grpc-prometheus's server interceptor (same metrics, labels and status codes) with its per-call set-up
    done once per method for unary-unary RPCs, the hot path: the stock interceptor splits the method name,
    builds a new wrapped handler and looks up every labelled series again on every call. Streaming RPCs keep the
    stock code path. Only registered methods are cached (their number is bounded); unknown ones are not."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self._legacy or self._skip_exceptions:
            raise ValueError("legacy metrics and skip_exceptions are not supported by the caching interceptor")
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(self, continuation, handler_call_details):
        wrapped = self._wrapped.get(handler_call_details.method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.response_streaming:
            return super().intercept_service(lambda _: handler, handler_call_details)
        wrapped = self._wrap_unary(handler, handler_call_details)
        self._wrapped[handler_call_details.method] = wrapped
        return wrapped

    def _wrap_unary(self, handler, handler_call_details):
        service, method, _ = grpc_utils.split_method_call(handler_call_details)
        labels = {"grpc_type": grpc_utils.UNARY, "grpc_service": service, "grpc_method": method}
        started = self._metrics["grpc_server_started_counter"].labels(**labels)
        histogram = (self._metrics["grpc_server_handled_histogram"].labels(**labels)
                     if self._enable_handling_time_histogram else None)
        handled_counter, handled = self._grpc_server_handled_total_counter, {}
        compute_code, behavior = self._compute_status_code, handler.unary_unary

        def count(code: grpc.StatusCode) -> None:
            child = handled.get(code)
            if child is None:  # at most one per status code
                child = handled[code] = handled_counter.labels(**labels, grpc_code=code.name)
            child.inc()

        def new_behavior(request, context):
            start = default_timer()
            started.inc()
            try:
                response = behavior(request, context)
            except Exception:
                code = compute_code(context)
                count(grpc.StatusCode.UNKNOWN if code == grpc.StatusCode.OK else code)
                raise
            finally:
                if histogram is not None:
                    histogram.observe(max(default_timer() - start, 0))
            count(compute_code(context))
            return response

        return grpc.unary_unary_rpc_method_handler(new_behavior, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


class ServerMetrics:
    """RPC, model, reload and batching metrics in one registry; labels are bounded (no per-request values)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        # Per-RPC counts by method and code, and handling-time histograms (py-grpc-prometheus).
        self.rpc_interceptor = CachingPromServerInterceptor(enable_handling_time_histogram=True,
                                                            registry=registry)
        self.model_info = Gauge("predmesh_model_info", "1 for the version each model is serving",
                                ["model", "version"], registry=registry, multiprocess_mode="livemax")
        self.reloads = Counter("predmesh_reload_total", "Model reload attempts by result",
                               ["model", "result"], registry=registry)
        self.predictions = Counter("predmesh_predictions_total", "Rows scored, by model and transport",
                                   ["model", "transport"], registry=registry)
        self._predicted: dict[tuple[str, str], object] = {}  # (model, transport) -> child; both sets bounded
        self.batch_rows = Histogram("predmesh_batch_rows", "Rows per predict_proba call (adaptive batching)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=registry)

    def predicted(self, model: str, transport: str, rows: int) -> None:
        """Count scored rows (the series' child looked up once: this runs on every call)."""
        child = self._predicted.get((model, transport))
        if child is None:
            child = self._predicted[(model, transport)] = self.predictions.labels(model, transport)
        child.inc(rows)

    def serving(self, model: str, version: str, previous: str | None) -> None:
        if previous and previous != version:
            try:
                # Multi-process mode keeps a removed series' last value in its file: zero it first.
                self.model_info.labels(model, previous).set(0)
                self.model_info.remove(model, previous)
            except KeyError:
                pass
        self.model_info.labels(model, version).set(1)
