"""Prometheus metrics of the server beyond the per-RPC ones py-grpc-prometheus records."""
from __future__ import annotations

import time
import warnings
from collections import Counter as Tally
from timeit import default_timer
from typing import Any

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from py_grpc_prometheus import grpc_utils
from py_grpc_prometheus.prometheus_server_interceptor import PromServerInterceptor

# Handling-time buckets resolving a sub-millisecond service (py-grpc-prometheus' default starts at 5 ms):
# 13 bounds, so every method costs 16 series (buckets, +Inf, sum, count).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


class CachingPromServerInterceptor(PromServerInterceptor):
    """py-grpc-prometheus's server interceptor (same metrics, labels and status codes) with its per-call set-up
    done once per method for unary-unary RPCs, the hot path: the stock interceptor splits the method name,
    builds a new wrapped handler and looks up every labelled series again on every call. Streaming RPCs are counted
    too (the stock code counts neither their start nor their end). Only registered methods are cached (their number
    is bounded); unknown ones are not."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS, **kwargs):
        super().__init__(**kwargs)
        if self._legacy or self._skip_exceptions:
            raise ValueError("legacy metrics and skip_exceptions are not supported by the caching interceptor")
        # Same histogram, finer buckets; the legacy histogram (never observed here) is not exported at all.
        registry = kwargs.get("registry", REGISTRY)
        stock = self._metrics["grpc_server_handled_histogram"]
        for name in ("grpc_server_handled_histogram", "legacy_grpc_server_handled_latency_seconds"):
            registry.unregister(self._metrics.pop(name))
        self._metrics["grpc_server_handled_histogram"] = Histogram(
            "grpc_server_handling_seconds", stock._documentation, stock._labelnames, buckets=buckets,
            registry=registry)
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def intercept_service(self, continuation, handler_call_details):
        wrapped = self._wrapped.get(handler_call_details.method)
        if wrapped is not None:
            return wrapped
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        streaming = handler.request_streaming or handler.response_streaming
        wrapped = (self._wrap_streaming if streaming else self._wrap_unary)(handler, handler_call_details)
        self._wrapped[handler_call_details.method] = wrapped
        return wrapped

    def _compute_status_code(self, servicer_context):
        """The call's status: the code the server set (a stream the server ended from another thread is cancelled
        underneath, with the code it set), else CANCELLED when the client went away, else OK."""
        code = servicer_context._state.code
        if code is not None:
            return code
        return super()._compute_status_code(servicer_context)

    def _wrap_streaming(self, handler, handler_call_details):
        """A streaming call counted like a unary one (py-grpc-prometheus counts neither its start nor its end):
        started when the handler begins, handled with its status when the stream ends (CANCELLED when the client
        went away), its duration in the handling-time histogram, and every message in msg_received/msg_sent."""
        service, method, _ = grpc_utils.split_method_call(handler_call_details)
        kind = grpc_utils.get_method_type(handler.request_streaming, handler.response_streaming)
        labels = {"grpc_type": kind, "grpc_service": service, "grpc_method": method}
        started = self._metrics["grpc_server_started_counter"].labels(**labels)
        histogram = (self._metrics["grpc_server_handled_histogram"].labels(**labels)
                     if self._enable_handling_time_histogram else None)
        received = (self._metrics["grpc_server_stream_msg_received"].labels(**labels) if handler.request_streaming
                    else None)
        sent = self._metrics["grpc_server_stream_msg_sent"].labels(**labels)
        handled_counter = self._grpc_server_handled_total_counter
        compute_code = self._compute_status_code

        def count(code: grpc.StatusCode, start: float) -> None:
            handled_counter.labels(**labels, grpc_code=code.name).inc()
            if histogram is not None:
                histogram.observe(max(default_timer() - start, 0))

        def counted(messages):
            assert received is not None  # only request streams are counted
            for message in messages:
                received.inc()
                yield message

        def failed(context) -> grpc.StatusCode:
            code = compute_code(context)
            return grpc.StatusCode.UNKNOWN if code == grpc.StatusCode.OK else code

        if handler.response_streaming:
            behavior = handler.stream_stream or handler.unary_stream

            def streams(request, context):
                start = default_timer()
                started.inc()
                try:
                    for response in behavior(counted(request) if handler.request_streaming else request, context):
                        sent.inc()
                        yield response
                except GeneratorExit:  # grpc stopped asking for answers: the client went away (or was ended)
                    code = compute_code(context)
                    count(grpc.StatusCode.CANCELLED if code == grpc.StatusCode.OK else code, start)
                    raise
                except Exception:
                    count(failed(context), start)
                    raise
                count(compute_code(context), start)

            make = (grpc.stream_stream_rpc_method_handler if handler.request_streaming
                    else grpc.unary_stream_rpc_method_handler)
            return make(streams, request_deserializer=handler.request_deserializer,
                        response_serializer=handler.response_serializer)
        behavior_unary = handler.stream_unary

        def collects(requests, context):
            start = default_timer()
            started.inc()
            try:
                response = behavior_unary(counted(requests), context)
            except Exception:
                count(failed(context), start)
                raise
            count(compute_code(context), start)
            return response

        return grpc.stream_unary_rpc_method_handler(collects, request_deserializer=handler.request_deserializer,
                                                    response_serializer=handler.response_serializer)

    def _wrap_unary(self, handler, handler_call_details):
        service, method, _ = grpc_utils.split_method_call(handler_call_details)
        labels = {"grpc_type": grpc_utils.UNARY, "grpc_service": service, "grpc_method": method}
        started = self._metrics["grpc_server_started_counter"].labels(**labels)
        histogram = (self._metrics["grpc_server_handled_histogram"].labels(**labels)
                     if self._enable_handling_time_histogram else None)
        handled_counter = self._grpc_server_handled_total_counter
        handled: dict[grpc.StatusCode, Any] = {}
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


def forget(gauge: Gauge, labels: tuple) -> None:
    """Remove a gauge's series. Multi-process mode keeps a removed series' last value in its file (and warns on
    every removal): it is zeroed first, and the supervisor's GroupCollector drops it."""
    gauge.labels(*labels).set(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        gauge.remove(*labels)


class ServerMetrics:
    """RPC, model, reload and batching metrics in one registry; labels are bounded (no per-request values):
    models × versions × classes × transports at most."""

    def __init__(self, registry: CollectorRegistry = REGISTRY):
        disable_created_metrics()  # *_created series would double every counter's series for nothing
        # Per-RPC counts by method and code, and handling-time histograms (py-grpc-prometheus).
        self.rpc_interceptor = CachingPromServerInterceptor(enable_handling_time_histogram=True,
                                                            registry=registry)
        self.model_info = Gauge("predmesh_model_info", "1 for the version each model is serving (one series per "
                                "model)", ["model", "version", "sha256"], registry=registry,
                                multiprocess_mode="livemax")
        self.reloads = Counter("predmesh_reload_total", "Model reloads after start (admin calls and, with several "
                               "processes, serving pointers) by result", ["model", "result"], registry=registry)
        self.predictions = Counter("predmesh_predictions_total", "Rows scored, by model, version, predicted class "
                                   "and transport", ["model", "version", "class", "transport"], registry=registry)
        self._predicted: dict[tuple, object] = {}  # (model, version, class, transport) -> child; all bounded
        self._info: dict[str, tuple[str, str]] = {}  # model -> (version, sha256) exported
        self.desired_info = Gauge("predmesh_model_desired_info", "1 for the version the fleet's desired state "
                                  "names for each model, as this replica last read it (none: no desired state; "
                                  "the newest stored version serves)", ["model", "version"], registry=registry,
                                  multiprocess_mode="livemax")
        self._desired: dict[str, str] = {}  # model -> desired version exported
        self.desired_failures = Counter("predmesh_desired_state_failures_total", "Times this replica could not "
                                        "apply a model's desired version (missing from its store, or refused by "
                                        "verification); it keeps serving what it serves", ["model"],
                                        registry=registry)
        self.desired_reads = Counter("predmesh_desired_state_reads_total", "Reads of the fleet's desired state by "
                                     "result (failure: the database did not answer)", ["result"],
                                     registry=registry)
        # Canary rollouts (inference/models/canary.py): the candidate each replica holds and its share of the calls,
        # and the automatic decisions this replica applied.
        self.canary_share = Gauge("predmesh_canary_share", "Share of the model's calls this replica routes to the "
                                  "canary candidate version (no series: no canary)", ["model", "version"],
                                  registry=registry, multiprocess_mode="livemax")
        self._canary: dict[str, str] = {}  # model -> candidate version exported
        self.canary_decisions = Counter("predmesh_canary_decisions_total", "Canary decisions this replica took "
                                        "and recorded for the fleet (promote, rollback)", ["model", "decision"],
                                        registry=registry)
        # Drift of the serving versions' live traffic against their training distribution (inference/models/drift.py).
        mv, mvf = ["model", "version"], ["model", "version", "feature"]
        self.drift_psi = Gauge("predmesh_feature_drift_psi", "Population stability index of the feature over the "
                               "drift window against the training deciles", mvf, registry=registry,
                               multiprocess_mode="livemax")
        self.drift_out_of_range = Gauge("predmesh_feature_out_of_range_ratio", "Share of the feature's values in "
                                        "the drift window outside the training range", mvf, registry=registry,
                                        multiprocess_mode="livemax")
        self.class_drift = Gauge("predmesh_class_drift", "Total variation distance between the predicted class "
                                 "shares in the drift window and the training class balance", mv,
                                 registry=registry, multiprocess_mode="livemax")
        self.drift_missing = Gauge("predmesh_feature_missing_ratio", "Share of the rows in the drift window in "
                                   "which the feature was missing (features that may be missing)", mvf,
                                   registry=registry, multiprocess_mode="livemax")
        self.category_share = Gauge("predmesh_feature_category_share", "Share of each training category among the "
                                    "rows with a value: in the drift window (source=live) and in training "
                                    "(source=training); the 10 most common by name, then (other) and (unseen)",
                                    [*mvf, "category", "source"], registry=registry, multiprocess_mode="livemax")
        self.unseen_categories = Counter("predmesh_feature_unseen_categories_total", "Scored values of a category "
                                         "feature that training never saw", ["model", "feature"],
                                         registry=registry)
        self.drift_rows = Gauge("predmesh_drift_window_rows", "Rows scored in the drift window", mv,
                                registry=registry, multiprocess_mode="livesum")
        # the drift a replica exports is the highest of its processes': it is only as sure as their smallest window
        self.drift_rows_min = Gauge("predmesh_drift_window_rows_min", "Rows in the smallest drift window among "
                                    "this replica's processes (the one behind the drift gauges' least sure value; "
                                    "with one process, the window's rows)", mv, registry=registry,
                                    multiprocess_mode="livemin")
        self._drift_series: dict[tuple[str, str], set[tuple]] = {}  # (model, version) -> series set
        self.batch_rows = Histogram("predmesh_batch_rows", "Rows per predict_proba call (adaptive batching)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=registry)
        # Idempotency keys (client-sent request_ids, inference/scoring/idempotency.py)
        self.idempotency_replayed = Counter("predmesh_idempotency_replayed_total", "Rows answered again from the "
                                            "stored answer of their request_id (a retry of the same request)",
                                            registry=registry)
        self.idempotency_refused = Counter("predmesh_idempotency_refused_total", "Rows refused ALREADY_EXISTS: "
                                           "their request_id was already used for a different request",
                                           registry=registry)
        self.idempotency_unverified = Counter("predmesh_idempotency_unverified_total", "Keyed rows decided without "
                                              "the database (unreachable): checked against this process's recent "
                                              "answers only", registry=registry)
        self.idempotency_vouched = Counter("predmesh_idempotency_vouched_total", "Keyed rows the caller vouched "
                                           "were never sent before (FeatureMatrix.new_keys): not looked up in the "
                                           "database", registry=registry)

    def idempotency(self, replayed: int, refused: int) -> None:
        if replayed:
            self.idempotency_replayed.inc(replayed)
        if refused:
            self.idempotency_refused.inc(refused)

    def predicted(self, model: str, version: str, transport: str, labels: list[str]) -> None:
        """Count scored rows by predicted class (the series' children looked up once: this runs on every call)."""
        if len(labels) == 1:
            self._child(model, version, labels[0], transport).inc()
            return
        for label, n in Tally(labels).items():
            self._child(model, version, label, transport).inc(n)

    def predicted_counts(self, model: str, version: str, transport: str, counts: dict[str, int]) -> None:
        """predicted() for rows already counted per label."""
        for label, n in counts.items():
            if n:
                self._child(model, version, label, transport).inc(n)

    def _child(self, model: str, version: str, label: str, transport: str):
        key = (model, version, label, transport)
        child = self._predicted.get(key)
        if child is None:
            child = self._predicted[key] = self.predictions.labels(*key)
        return child

    def drift(self, summaries: dict) -> None:
        """Set the drift gauges from {(model, version): DriftTracker summary or None}; versions no longer
        serving lose their series."""
        for key in [k for k in self._drift_series if k not in summaries]:
            for gauge, labels in self._drift_series.pop(key):
                forget(gauge, labels)
        for (model, version), summary in summaries.items():
            if summary is None:
                continue
            series = self._drift_series.setdefault((model, version), set())

            def put(gauge, labels, value):
                gauge.labels(*labels).set(value)
                series.add((gauge, labels))  # noqa: B023 - put() is called only within this iteration

            put(self.drift_rows, (model, version), summary["rows"])
            put(self.drift_rows_min, (model, version), summary["rows"])
            for feature, value in summary["psi"].items():
                put(self.drift_psi, (model, version, feature), value)
            for feature, value in summary["out_of_range"].items():
                put(self.drift_out_of_range, (model, version, feature), value)
            for feature, value in summary.get("missing", {}).items():
                put(self.drift_missing, (model, version, feature), value)
            for feature, shares in summary.get("categories", {}).items():
                for category, (live, training) in shares.items():
                    put(self.category_share, (model, version, feature, category, "live"), live)
                    put(self.category_share, (model, version, feature, category, "training"), training)
            for feature, n in summary.get("unseen", {}).items():
                self.unseen_categories.labels(model, feature).inc(n)
            if summary["class_drift"] is not None:
                put(self.class_drift, (model, version), summary["class_drift"])

    def serving(self, model: str, version: str, sha256: str) -> None:
        """model_info shows exactly the serving version of each model: the previous series goes."""
        previous = self._info.get(model)
        if previous == (version, sha256):
            return
        if previous is None:
            self.zero_counters(model)
        if previous is not None:
            forget(self.model_info, (model, *previous))
        self.model_info.labels(model, version, sha256).set(1)
        self._info[model] = (version, sha256)

    def zero_counters(self, model: str) -> None:
        """Export the model's event counters at 0 from its first load: an alert on `increase(...)` only sees an
        event once the series existed before it (a series that appears at 1 has increased by nothing), so
        without this the first refused reload or canary rollback of a process would never fire its alert."""
        for result in ("success", "failure"):
            self.reloads.labels(model, result)
        for decision in ("promote", "rollback"):
            self.canary_decisions.labels(model, decision)
        self.desired_failures.labels(model)

    def canary(self, model: str, version: str, share: float) -> None:
        """canary_share shows the candidate this replica holds for each model (version "": none, no series)."""
        previous = self._canary.pop(model, None)
        if previous is not None and previous != version:
            forget(self.canary_share, (model, previous))
        if version:
            self.canary_share.labels(model, version).set(share)
            self._canary[model] = version

    def desired(self, model: str, version: str) -> None:
        """desired_info shows exactly the desired version of each model: the previous series goes."""
        previous = self._desired.get(model)
        if previous == version:
            return
        if previous is not None:
            forget(self.desired_info, (model, previous))
        self.desired_info.labels(model, version).set(1)
        self._desired[model] = version


DRIFT_FAMILIES = {"predmesh_feature_drift_psi", "predmesh_feature_out_of_range_ratio", "predmesh_class_drift",
                  "predmesh_drift_window_rows", "predmesh_drift_window_rows_min", "predmesh_feature_missing_ratio",
                  "predmesh_feature_category_share"}


class GroupCollector:
    """The supervisor's /metrics with several processes (prometheus_client multiprocess mode).

    - Every worker's metrics, merged from PROMETHEUS_MULTIPROC_DIR, except model_info series a worker zeroed
      when it moved to another version (multiprocess files cannot forget a series).
    - process_* for the whole group (multiprocess mode exports none): the supervisor's and its live workers'
      CPU, memory and open descriptors added up; the CPU of workers that died is kept, so the counter never goes
      back when one is replaced. Start time and descriptor limit are the supervisor's.
    """

    def __init__(self, path: str, pids):
        from prometheus_client import multiprocess
        from prometheus_client.process_collector import ProcessCollector

        self._merged = multiprocess.MultiProcessCollector(None, path=path)
        self._pids = pids  # () -> the live workers' pids
        self._process = ProcessCollector
        self._last_cpu: dict[int, float] = {}
        self._dead_cpu = 0.0

    def _merged_families(self) -> list:
        # A worker creating a metrics file leaves it empty for a moment (prometheus_client opens, then sizes
        # it): a scrape landing then cannot parse it. Read again shortly rather than answer 500.
        for attempt in range(5):
            try:
                return list(self._merged.collect())
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.02 * (attempt + 1))
        return []

    def collect(self):
        families = self._merged_families()
        serving = set()
        for family in families:
            if family.name == "predmesh_model_desired_info":
                family.samples = [s for s in family.samples if s.value != 0]
            if family.name == "predmesh_model_info":
                family.samples = [s for s in family.samples if s.value != 0]
                serving = {(s.labels["model"], s.labels["version"]) for s in family.samples}
        for family in families:
            if family.name in DRIFT_FAMILIES:  # a retired version's zeroed drift series stay in the files
                family.samples = [s for s in family.samples
                                  if (s.labels.get("model"), s.labels.get("version")) in serving]
            yield family
        yield from self._group_process_metrics()

    def _group_process_metrics(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        own = {m.name: m.samples[0].value for m in self._process(registry=None).collect() if m.samples}
        if not own:  # no /proc: nothing to add up
            return
        sums = {"process_resident_memory_bytes": own.get("process_resident_memory_bytes", 0.0),
                "process_virtual_memory_bytes": own.get("process_virtual_memory_bytes", 0.0),
                "process_open_fds": own.get("process_open_fds", 0.0)}
        cpu = own.get("process_cpu_seconds", 0.0)
        live: dict[int, float] = {}
        for pid in self._pids():
            def this_pid(p: int = pid) -> int:
                return p
            worker = {m.name: m.samples[0].value for m in self._process(pid=this_pid, registry=None).collect()
                      if m.samples}
            if not worker:
                continue
            for name in sums:
                sums[name] += worker.get(name, 0.0)
            live[pid] = worker.get("process_cpu_seconds", 0.0)
        self._dead_cpu += sum(v for pid, v in self._last_cpu.items() if pid not in live)
        self._last_cpu = live
        yield CounterMetricFamily("process_cpu_seconds", "User and system CPU time of the supervisor and its "
                                  "workers (workers that exited included), in seconds",
                                  value=cpu + self._dead_cpu + sum(live.values()))
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory of the supervisor and its "
                                "workers, in bytes", value=sums["process_resident_memory_bytes"])
        yield GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory of the supervisor and its "
                                "workers, in bytes", value=sums["process_virtual_memory_bytes"])
        yield GaugeMetricFamily("process_open_fds", "Open file descriptors of the supervisor and its workers",
                                value=sums["process_open_fds"])
        for name in ("process_max_fds", "process_start_time_seconds"):
            if name in own:
                yield GaugeMetricFamily(name, "The supervisor's " + name.removeprefix("process_").replace("_", " "),
                                        value=own[name])
        yield GaugeMetricFamily("predmesh_worker_processes", "Server processes running under this supervisor",
                                value=len(live))
