"""Assemble and run the gRPC server: servicers, health, reflection, metrics, graceful drain on SIGTERM."""
from __future__ import annotations

import gc
import logging
import os
import signal
import threading
from concurrent import futures
from typing import cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from inference.metrics import ServerMetrics
from inference.models.drift import DriftMonitor
from inference.models.pointers import PointerWatcher, ServingPointers
from inference.models.registry import ModelRegistry
from inference.models.store import ModelStore
from inference.recording.recorder import NullRecorder, Recorder
from inference.rpc import logcontext, oip, reflection
from inference.rpc.auth import TokenAuth
from inference.rpc.edge import DecodeGuard, quiet_metadata_noise
from inference.rpc.pool import HandlerPool
from inference.rpc.servicer import InferenceServicer, ModelAdminServicer, call_limits
from inference.rpc.streams import StreamGate
from inference.scoring.idempotency import Keys
from inference.settings import ServerSettings, stream_share
from predmesh.env import split_addr
from predmesh.startup import StartupError
from predmesh.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc

log = logging.getLogger(__name__)

INFERENCE_SERVICE = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
ADMIN_SERVICE = admin_pb2.DESCRIPTOR.services_by_name["ModelAdminService"].full_name
STOP_MARGIN_S = 5.0


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials when PREDMESH_TLS_CERT/KEY are set; client certificates required when TLS_CLIENT_CA is."""
    if not (settings.tls_cert or settings.tls_key or settings.tls_client_ca):
        return None
    if not (settings.tls_cert and settings.tls_key):
        raise ValueError("PREDMESH_TLS_CERT and PREDMESH_TLS_KEY must be set together")
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,  # without root certificates, grpc ignores require_client_auth
        require_client_auth=client_ca is not None)


class InferenceServer:
    """One server process: build with settings, start(), then stop() or serve_forever()."""

    def __init__(self, settings: ServerSettings, *, recorder: Recorder | None = None,
                 metrics: ServerMetrics | None = None):
        self.settings = settings
        quiet_metadata_noise()  # a client's non-UTF-8 metadata value: one warning line, not a traceback
        self.recorder = recorder or NullRecorder()
        self.metrics = metrics or ServerMetrics()
        self.store = ModelStore(settings.model_store, settings.signing_key)
        self.registry = ModelRegistry(
            self.store, self.metrics, max_batch_rows=settings.batch_max_size,
            max_delay_s=settings.batch_max_delay_ms / 1000, range_tolerance=settings.range_tolerance,
            runtime=settings.runtime, drift_window_s=settings.drift_window_s if settings.drift else None)
        self._drift = DriftMonitor(self.registry, self.metrics) if settings.drift else None
        # Several processes share the port (PREDMESH_PROCESSES > 1): reloads travel through serving pointers.
        self.pointers = ServingPointers(self.registry) if settings.processes > 1 else None
        self.health = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"))
        # streams (each holding a handler thread while open) get a bounded share of the pool, and an idle timeout
        self.streams = StreamGate(stream_share(settings.max_streams, settings.workers), settings.stream_idle_seconds)
        # handler threads with less work per call than a ThreadPoolExecutor (inference/rpc/pool.py)
        self._pool = HandlerPool(settings.workers, thread_name_prefix="rpc")
        self._server = grpc.server(
            cast(futures.ThreadPoolExecutor, self._pool),
            # metrics first, so they count what the gate and the guard answer; the guard last: undecodable
            # requests answered INVALID_ARGUMENT
            interceptors=[self.metrics.rpc_interceptor, self.streams, DecodeGuard()],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", max(settings.max_message_bytes, 4 * 1024 * 1024)),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
                ("grpc.so_reuseport", 1 if settings.processes > 1 else 0),
            ])
        # idempotency keys: one cache of recent answers per process, shared by every path that scores
        self.keys = Keys(settings.idempotency_cache, self.metrics)
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(
            InferenceServicer(self.registry, self.recorder, max_batch_rows=settings.max_batch_rows,
                              max_request_bytes=settings.max_message_bytes, keys=self.keys), self._server)
        # the tokens of every role: the admin plane here, writes of monitoring data in AnalyticsService
        self.auth = TokenAuth(settings.admin_token, settings.readonly_token, settings.writer_token,
                              settings.open_writes)
        admin_pb2_grpc.add_ModelAdminServiceServicer_to_server(
            ModelAdminServicer(self.registry, self.auth,
                               on_reload=self.pointers.publish if self.pointers else None,
                               limits=call_limits(settings.max_batch_rows, settings.max_message_bytes)),
            self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self.services = [INFERENCE_SERVICE, ADMIN_SERVICE, health.SERVICE_NAME]
        self.port = 0
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopping = False  # stop() has begun (later calls return at once; wait() waits for the first)
        self.clean_stop = True
        self._draining = False
        self._watcher = PointerWatcher(self.pointers, settings.reload_poll_seconds) if self.pointers else None
        self.add_service(lambda server: oip.register(server, self.registry, self.recorder,
                                                     max_batch_rows=settings.max_batch_rows, ready=self.ready,
                                                     keys=self.keys),
                         oip.SERVICE)

    def ready(self) -> bool:
        """Serving at least one model and not draining."""
        return not self._draining and bool(self.registry.serving())

    def add_service(self, register, name: str) -> None:
        """Register another servicer (register(server)) before start(); it gets health and reflection too."""
        register(self._server)
        self.services.append(name)

    def start(self) -> int:
        """Load models, bind, start serving; returns the bound gRPC port."""
        fleet = self.registry.fleet
        self.registry.load_all(fleet.preload() if fleet else None)
        if fleet:
            fleet.start()  # converge on the desired state (if the start-up load could not), then poll
        if self.pointers:
            self.pointers.apply(counted=False)  # part of this process's start-up load
            assert self._watcher is not None  # made with the pointers
            self._watcher.start()
        if self._drift:
            self._drift.start()
        credentials = server_credentials(self.settings)
        try:
            self.port = (self._server.add_secure_port(self.settings.grpc_addr, credentials) if credentials
                         else self._server.add_insecure_port(self.settings.grpc_addr))
        except RuntimeError:  # grpc's "Failed to bind": in use, or not an address of this machine
            self.port = 0
        if not self.port:
            raise StartupError(f"cannot bind gRPC address {self.settings.grpc_addr} (in use, or not an address "
                               "of this machine)")
        reflection.enable_server_reflection(self.services, self._server)  # v1 and v1alpha
        # Everything built so far (modules, models, the server) lives as long as the process: move it out of the
        # cyclic collector's reach, so a full collection under load walks only what serving allocates (measured:
        # ~150k objects, ~80 ms per full collection with the GIL held, otherwise). No full collection first: it
        # cost each start those ~80 ms of CPU to free ~40 objects (the Iris store), which now stay frozen instead.
        gc.freeze()
        self._server.start()
        status = (health_pb2.HealthCheckResponse.SERVING if self.registry.serving()
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", *self.services):
            self.health.set(name, status)
        return self.port

    def stop(self, grace: float | None = None, drain: float | None = None) -> None:
        """Drain: health NOT_SERVING at once, keep serving for drain seconds, then refuse new calls and let
        in-flight ones finish within grace seconds."""
        with self._stop_lock:  # once: a second SIGTERM (a process group's and a supervisor's) must not close twice
            if self._stopping:
                return
            self._stopping = True
        self._draining = True
        self.health.enter_graceful_shutdown()
        if self._watcher:
            self._watcher.stop()
        if self.registry.fleet:
            self.registry.fleet.stop()
        if self._drift:
            self._drift.stop()
        drain = self.settings.drain_seconds if drain is None else drain
        if drain > 0:
            log.info("draining: health is NOT_SERVING, still serving for %.1f s", drain)
            self._stopped.wait(drain)
        grace = self.settings.grace_seconds if grace is None else grace
        # grpc's stop event waits for every handler thread; one a client left stuck must not hold the stop
        # forever: after grace (plus a margin for cancelled calls to unwind) we go on without it.
        self.clean_stop = self._server.stop(grace).wait(grace + STOP_MARGIN_S)
        if not self.clean_stop:
            log.error("some RPC handlers did not finish within %.1f s of the grace period; stopping without them",
                      STOP_MARGIN_S)
        self.streams.close()
        self._pool.shutdown(wait=False)  # idle threads end; a stuck handler's thread is not waited for
        self.recorder.close()
        self._stopped.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def wait(self) -> None:
        """Until stopped. In short waits: a process-directed SIGTERM may be delivered to another thread (one of
        grpc's), and then only the main thread's return to Python runs the handler; blocked in one untimed lock
        wait, it never returned (seen in CI: a SIGTERM'd server that never drained, nor logged the signal)."""
        while not self._stopped.wait(0.25):
            pass


def serve(settings: ServerSettings, recorder: Recorder | None = None, extend=None) -> None:
    """Run until SIGTERM/SIGINT, then drain gracefully; the process ends within drain + grace (+ a margin)
    whatever clients did."""
    logcontext.install()
    server = InferenceServer(settings, recorder=recorder)
    if extend is not None:  # e.g. persistence: AnalyticsService and the activation hook, before start
        extend(server)
    metrics = "off"
    if settings.metrics_addr:
        host, port = split_addr(settings.metrics_addr)
        httpd, _ = start_http_server(port, addr=host)
        metrics = f"http://{host}:{httpd.server_port}/metrics"  # the bound port (also for :0)
    port = server.start()
    host = split_addr(settings.grpc_addr)[0]
    loaded = ", ".join(f"{m.name}@{m.version}" for m in server.registry.serving()) or "none"
    log.info("predmesh inference listening on %s:%d (gRPC); metrics: %s; models: %s", host, port, metrics, loaded)

    asked: list[int] = []  # the signals that asked for the stop (handlers run one at a time, in this thread)

    def on_signal(signum, frame):
        # asked, not only server.stopping: the shutdown thread may not have run yet when a second signal comes
        # (a loaded machine), and that signal would be logged as a second graceful stop (stop() runs once anyway)
        if asked or server.stopping:
            log.info("received %s: already shutting down", signal.Signals(signum).name)
            return
        asked.append(signum)
        log.info("received %s: shutting down gracefully", signal.Signals(signum).name)
        threading.Thread(target=server.stop, name="shutdown").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.wait()
    log.info("stopped")
    if not server.clean_stop:
        # a stuck handler may hold threads the interpreter would join forever at exit (the health pool's, or
        # its own non-daemon ones); the prediction log is closed (flushed or spooled) by now, so nothing is lost
        # by not waiting for them
        logging.shutdown()
        os._exit(0)
