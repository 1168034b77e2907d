"""The blocking client: the one place (with predmesh.aio) that opens gRPC channels."""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2_grpc

from predmesh import calls
from predmesh.channel import PID_HEADER, STUBS, ChannelSpec, TlsConfig, call_timeout
from predmesh.errors import Unavailable, from_rpc_error
from predmesh.types import StoredPrediction, StreamResult
from predmesh.v1 import admin_pb2_grpc, analytics_pb2_grpc, inference_pb2, inference_pb2_grpc

P = ParamSpec("P")
T = TypeVar("T")
# The generated *_pb2_grpc stubs are untyped: their methods are looked up by name (calls.Call.method).
_STUB_CLASSES: dict[str, Callable[[grpc.Channel | grpc.aio.Channel], Any]] = dict(zip(
    STUBS, (inference_pb2_grpc.InferenceServiceStub, admin_pb2_grpc.ModelAdminServiceStub,
            analytics_pb2_grpc.AnalyticsServiceStub, health_pb2_grpc.HealthStub)))

__all__ = ["Client", "TlsConfig"]


def _unary(op: Callable[P, calls.Call[T]]) -> Callable[Concatenate[Client, P], T]:
    """A client method from a call definition in predmesh.calls (same arguments, same docstring)."""
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(op(*args, **kwargs))
    functools.update_wrapper(method, op)
    method.__signature__ = calls.method_signature(op, awaitable=False)  # type: ignore[attr-defined]  # for help()
    return method


class Client:
    """Typed, blocking access to every predmesh RPC.

    Every call carries a deadline (`timeout`, per call or the client's default), is retried only on UNAVAILABLE,
    is tagged with the caller's transport (stored with each prediction), and raises predmesh.errors exceptions.
    admin_token is sent with the admin calls (reload_model, list_model_versions, rollout_model, pin_model,
    rollback_model, get_desired_state); writer_token (else admin_token)
    with the writes of monitoring data (submit_feedback, submit_feedback_batch, record_batch_run); no other call
    carries a token. own_connection: a connection of the client's own (gRPC otherwise shares one between the clients
    of a process with equal settings); predmesh.spread.Spread needs it to spread connections over server processes.
    """

    def __init__(self, target: str = "127.0.0.1:50051", *, timeout: float = 5.0, transport: str = "grpc",
                 admin_token: str | None = None, writer_token: str | None = None, tls: TlsConfig | None = None,
                 max_message_bytes: int = 4 * 1024 * 1024, own_connection: bool = False):
        self.target = target
        self.timeout = call_timeout(None, timeout)
        self._spec = ChannelSpec.build(target, transport=transport, admin_token=admin_token, tls=tls,
                                       max_message_bytes=max_message_bytes, writer_token=writer_token,
                                       own_connection=own_connection)
        if tls is None:
            self._channel = grpc.insecure_channel(target, options=self._spec.options)
        else:
            self._channel = grpc.secure_channel(target, self._spec.credentials(), options=self._spec.options)
        self._stubs = {name: cls(self._channel) for name, cls in _STUB_CLASSES.items()}

    # -- lifecycle -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects, or raise Unavailable."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise Unavailable(f"no connection to {self.target} within {timeout:g}s") from None

    def _run(self, call: calls.Call[T]) -> T:
        method = getattr(self._stubs[call.service], call.method)
        timeout = call_timeout(call.timeout, self.timeout)
        try:
            response = method(call.request, timeout=timeout,
                              metadata=self._spec.metadata_for(call.service, call.writes))
        except grpc.RpcError as err:
            raise from_rpc_error(err, timeout) from None
        return call.convert(response)

    # -- the calls (defined once in predmesh.calls) -------------------------------------------------------------
    check_health = _unary(calls.check_health)
    predict = _unary(calls.predict)
    predict_batch = _unary(calls.predict_batch)
    predict_each = _unary(calls.predict_each)
    predict_matrix = _unary(calls.predict_matrix)
    list_models = _unary(calls.list_models)
    get_model = _unary(calls.get_model)
    reload_model = _unary(calls.reload_model)
    list_model_versions = _unary(calls.list_model_versions)
    rollout_model = _unary(calls.rollout_model)
    pin_model = _unary(calls.pin_model)
    rollback_model = _unary(calls.rollback_model)
    get_desired_state = _unary(calls.get_desired_state)
    list_predictions = _unary(calls.list_predictions)
    count_predictions = _unary(calls.count_predictions)
    get_stats = _unary(calls.get_stats)
    submit_feedback = _unary(calls.submit_feedback)
    submit_feedback_batch = _unary(calls.submit_feedback_batch)
    record_batch_run = _unary(calls.record_batch_run)
    list_batch_runs = _unary(calls.list_batch_runs)

    def server_pid(self, timeout: float | None = None) -> int | None:
        """The pid of the server process this client's connection reached (a ListModels call; None from a server
        that does not say). Processes sharing one port (PREDMESH_PROCESSES > 1, SO_REUSEPORT) each hold the
        connections the kernel gave them, so a client spreading work over connections can check where they went."""
        timeout = call_timeout(timeout, self.timeout)
        try:
            _, call = self._stubs["inference"].ListModels.with_call(
                inference_pb2.ListModelsRequest(), timeout=timeout, metadata=self._spec.metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err, timeout) from None
        pid = dict(call.trailing_metadata() or ()).get(PID_HEADER)
        return int(pid) if isinstance(pid, str) and pid.isdigit() else None

    def iter_predictions(self, **filters: Any) -> Iterator[StoredPrediction]:
        """Every stored prediction matching the filters of list_predictions, newest first, across pages (from
        page_token's page when given: a walk resumed where an earlier page ended)."""
        token = filters.pop("page_token", "")
        while True:
            page = self.list_predictions(**filters, page_token=token)
            yield from page
            if not page.next_page_token:
                return
            token = page.next_page_token

    def predict_stream(self, model: str, rows: Iterable[calls.Row], *,
                       timeout: float | None = None) -> Iterator[StreamResult]:
        """Stream rows and yield one result per row, in order: its prediction or that row's error (not raised).

        The timeout bounds the whole stream. Rows without a request_id get a fresh one so answers can be matched.
        """
        requests = calls.StreamRows(model, rows)
        timeout = call_timeout(timeout, self.timeout)
        try:
            for response in self._stubs["inference"].PredictStream(
                    iter(requests), timeout=timeout, metadata=self._spec.metadata):
                yield calls.stream_result(response)
        except grpc.RpcError as err:
            if requests.error is not None:  # a row refused here, or the caller's rows failing: that, not gRPC's cancel
                raise requests.error from None
            raise from_rpc_error(err, timeout, stream=True) from None
