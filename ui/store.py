"""The dashboard's store: one per browser session, and the only part of the UI that talks to the server.

Every call goes through the SDK's `AsyncClient` (transport "ui") on the session's event loop, so a slow server
never blocks other sessions and no thread is needed. When the server cannot be reached the store says so in
`problem` and the session's periodic tick retries with a fresh channel until the server answers again. The admin
token typed by the user is kept in this object only (one browser session); it is never logged nor written.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import param

from predmesh import errors

if TYPE_CHECKING:
    from predmesh import AsyncClient

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

RECONNECT_GRACE_S = 10.0    # calls still in flight on a replaced channel may finish before it closes


@dataclass(frozen=True)
class Notice:
    """A message for the user: kind is "info", "success", "warning" or "error"."""

    kind: str = "info"
    text: str = ""


class Offline(Exception):
    """The server could not be reached (or did not answer in time); `Store.problem` says so."""


def now_utc() -> datetime:
    return datetime.now(UTC)


def describe(exc: errors.PredmeshError) -> str:
    code = getattr(exc.code, "name", str(exc.code))
    return f"{exc.message} ({code})"


class Store(param.Parameterized):
    """The session's connection to the server and what every view shares: the models and the selected one."""

    problem = param.String("", doc="why the page may show old data; empty while the server answers")
    updated_at = param.Parameter(None, doc="when the last refresh succeeded (UTC datetime)")
    models = param.List([], doc="ModelInfo of the serving version of every model")
    model = param.String("", doc="the selected model")
    info = param.Parameter(None, doc="ModelInfo of the selected model's serving version")

    def __init__(self, connect: Callable[..., AsyncClient], *, target: str, refresh_s: float, **params):
        """`connect(admin_token=None)` returns a new `predmesh.AsyncClient`; `target` names the server in messages.

        The client is made on first use: grpc.aio channels belong to the event loop that made them.
        """
        super().__init__(**params)
        self._connect = connect
        self._client: AsyncClient | None = None
        self._token: str | None = None
        self._retired: dict[asyncio.Task, AsyncClient] = {}   # replaced channels, closed after a grace period
        self.target = target
        self.refresh_s = refresh_s
        self.closed = False

    # -- calls -------------------------------------------------------------------------------------------------
    async def call(self, method: str, *args, **kwargs):
        """One SDK call; connection trouble marks the page offline and raises Offline, refusals raise as they are."""
        if self._client is None:
            self._client = self._connect()
        return await self._run(self._client, method, *args, **kwargs)

    async def admin(self, method: str, *args, **kwargs):
        """One admin call with the typed token, on a channel of its own (closed right after)."""
        client = self._connect(admin_token=self._token)
        try:
            return await self._run(client, method, *args, **kwargs)
        finally:
            await client.close()

    async def _run(self, client: AsyncClient, method: str, *args, **kwargs):
        try:
            result = await getattr(client, method)(*args, **kwargs)
        except (errors.Unavailable, errors.DeadlineExceeded) as exc:
            self._offline(exc)
            raise Offline(describe(exc)) from None
        except errors.PredmeshError:
            raise
        except Exception as exc:  # a bug or a closed channel: log it once, show a sentence, never a traceback
            log.error("dashboard call %s failed: %s: %s", method, type(exc).__name__, exc)
            self._offline(errors.PredmeshError("the dashboard could not make the call; see its log"))
            raise Offline("unexpected error") from None
        return result

    # -- connection state --------------------------------------------------------------------------------------
    def _offline(self, exc: errors.PredmeshError) -> None:
        since = self.updated_at.strftime("%H:%M:%S UTC") if self.updated_at else "never"
        self.problem = (f"The predmesh server at {self.target} cannot answer right now: {describe(exc)}. "
                        f"The page keeps what it last loaded (updated {since}) and retries every "
                        f"{self.refresh_s:g} s.")

    def online(self) -> None:
        """A refresh succeeded: clear the problem and stamp the time."""
        self.updated_at = now_utc()
        if self.problem:
            log.info("server %s answers again", self.target)
            self.problem = ""

    async def reconnect(self) -> bool:
        """A fresh channel (gRPC's own reconnect backoff grows to minutes); swapped in once the server answers."""
        fresh = self._connect()
        try:
            await fresh.list_models()
        except Exception:  # still down: keep the old channel, try again next tick
            await fresh.close()
            return False
        old, self._client = self._client, fresh
        if old is not None:
            self._retire(old)
        return True

    def _retire(self, client: AsyncClient) -> None:
        async def close_later():
            await asyncio.sleep(RECONNECT_GRACE_S)
            await client.close()
        task = asyncio.get_running_loop().create_task(close_later())
        self._retired[task] = client
        task.add_done_callback(lambda t: self._retired.pop(t, None))

    async def close(self) -> None:
        """End of the session: no more calls; every channel closes."""
        self.closed = True
        clients = [self._client] if self._client is not None else []
        for task, client in list(self._retired.items()):
            task.cancel()
            clients.append(client)
        for client in clients:
            await client.close()

    # -- models ------------------------------------------------------------------------------------------------
    async def load_models(self) -> None:
        models = sorted(await self.call("list_models"), key=lambda m: m.name)
        if models != self.models:
            self.models = models
        if not self.model and models:
            self.model = models[0].name
        info = next((m for m in models if m.name == self.model), None)
        if info != self.info:
            self.info = info

    def choose(self, name: str) -> bool:
        """Select a model by name; False when it already is the selected one."""
        if name == self.model:
            return False
        self.param.update(model=name, info=next((m for m in self.models if m.name == name), None))
        return True

    # -- admin token (typed by the user, kept in this session only) --------------------------------------------
    @property
    def has_token(self) -> bool:
        return bool(self._token)

    def set_token(self, token: str) -> bool:
        """Use this token for admin calls from now on; False when it is the one already in use."""
        typed = token.strip() or None
        if typed == self._token:
            return False
        self._token = typed
        return True
