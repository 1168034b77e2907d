"""Prometheus metrics of the server beyond the per-RPC ones py-grpc-prometheus records."""
from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from py_grpc_prometheus.prometheus_server_interceptor import PromServerInterceptor


class ServerMetrics:
    """RPC, model, reload and batching metrics in one registry; labels are bounded (no per-request values)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        # Per-RPC counts by method and code, and handling-time histograms (py-grpc-prometheus).
        self.rpc_interceptor = PromServerInterceptor(enable_handling_time_histogram=True, registry=registry)
        self.model_info = Gauge("predmesh_model_info", "1 for the version each model is serving",
                                ["model", "version"], registry=registry, multiprocess_mode="livemax")
        self.reloads = Counter("predmesh_reload_total", "Model reload attempts by result",
                               ["model", "result"], registry=registry)
        self.predictions = Counter("predmesh_predictions_total", "Rows scored, by model and transport",
                                   ["model", "transport"], registry=registry)
        self.batch_rows = Histogram("predmesh_batch_rows", "Rows per predict_proba call (adaptive batching)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=registry)

    def serving(self, model: str, version: str, previous: str | None) -> None:
        if previous and previous != version:
            try:
                # Multi-process mode keeps a removed series' last value in its file: zero it first.
                self.model_info.labels(model, previous).set(0)
                self.model_info.remove(model, previous)
            except KeyError:
                pass
        self.model_info.labels(model, version).set(1)
