"""The asyncio client (grpc.aio): the same calls, defaults, retries, transport tag and errors as predmesh.Client."""
from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc
import grpc.aio

from predmesh import calls
from predmesh.channel import ChannelSpec, TlsConfig, call_timeout
from predmesh.client import _STUB_CLASSES
from predmesh.errors import Unavailable, from_rpc_error
from predmesh.types import StoredPrediction, StreamResult

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["AsyncClient"]


def _unary(op: Callable[P, calls.Call[T]]) -> Callable[Concatenate[AsyncClient, P], Awaitable[T]]:
    """A coroutine method from a call definition in predmesh.calls (same arguments, same docstring)."""
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(op(*args, **kwargs))
    functools.update_wrapper(method, op)
    method.__signature__ = calls.method_signature(op, awaitable=True)  # type: ignore[attr-defined]  # for help()
    return method


class AsyncClient:
    """Typed asyncio access to every predmesh RPC; see predmesh.Client for the guarantees of every call.

    Create it inside a running event loop (grpc.aio channels belong to the loop that made them).
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
            self._channel = grpc.aio.insecure_channel(target, options=self._spec.options)
        else:
            self._channel = grpc.aio.secure_channel(target, self._spec.credentials(), options=self._spec.options)
        self._stubs = {name: cls(self._channel) for name, cls in _STUB_CLASSES.items()}

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until the channel connects, or raise Unavailable."""
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise Unavailable(f"no connection to {self.target} within {timeout:g}s") from None

    async def _run(self, call: calls.Call[T]) -> T:
        method = getattr(self._stubs[call.service], call.method)
        timeout = call_timeout(call.timeout, self.timeout)
        try:
            response = await method(call.request, timeout=timeout,
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

    async def iter_predictions(self, **filters: Any) -> AsyncIterator[StoredPrediction]:
        """Every stored prediction matching the filters of list_predictions, newest first, across pages (from
        page_token's page when given: a walk resumed where an earlier page ended)."""
        token = filters.pop("page_token", "")
        while True:
            page = await self.list_predictions(**filters, page_token=token)
            for item in page:
                yield item
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def predict_stream(self, model: str, rows: Iterable[calls.Row], *,
                             timeout: float | None = None) -> AsyncIterator[StreamResult]:
        """Stream rows and yield one result per row, in order: its prediction or that row's error (not raised).

        The timeout bounds the whole stream. Rows without a request_id get a fresh one so answers can be matched.
        """
        requests = calls.StreamRows(model, rows)
        timeout = call_timeout(timeout, self.timeout)
        call = self._stubs["inference"].PredictStream(iter(requests), timeout=timeout, metadata=self._spec.metadata)
        try:
            async for response in call:
                yield calls.stream_result(response)
        except (grpc.RpcError, asyncio.CancelledError) as err:
            # a row refused here, or the caller's rows failing, makes grpc.aio cancel the call (CancelledError, as
            # if the caller's task had been cancelled): raise what went wrong instead
            if requests.error is not None:
                raise requests.error from None
            if isinstance(err, asyncio.CancelledError):
                raise
            raise from_rpc_error(err, timeout, stream=True) from None
        finally:
            call.cancel()
