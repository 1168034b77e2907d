"""The dashboard's store: one per browser session, and the only part of a tab that talks to the server.

What the tabs show is read by the process's shared feed (ui.feed); the store makes the calls of this tab's own
actions (predict, feedback, older history pages) on the feed's channel, and its admin calls on a channel of their
own with the token the user typed. Every call goes through the SDK's `AsyncClient` (transport "ui") on the
server's event loop, so a slow server never blocks other sessions and no thread is needed. The admin token is kept
in this object only (one browser session); it is never logged nor written.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import param

from predmesh import errors
from ui.feed import Feed, describe, now_utc

if TYPE_CHECKING:
    from predmesh import AsyncClient

__all__ = ["Notice", "Offline", "Store", "describe", "now_utc"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notice:
    """A message for the user: kind is "info", "success", "warning" or "error"."""

    kind: str = "info"
    text: str = ""


class Offline(Exception):
    """The server could not be reached (the channel does not connect)."""


class Store(param.Parameterized):
    """The session's view of the server and what every view shares: the models and the selected one."""

    problem = param.String("", doc="why the server cannot be reached; empty while the channel connects")
    updated_at = param.Parameter(None, doc="when a read last succeeded (UTC datetime)")
    models = param.List([], doc="ModelInfo of the serving version of every model")
    model = param.String("", doc="the selected model")
    info = param.Parameter(None, doc="ModelInfo of the selected model's serving version")

    def __init__(self, feed: Feed, connect: Callable[..., AsyncClient], **params):
        """`connect(admin_token=...)` returns a new `predmesh.AsyncClient` for admin calls."""
        super().__init__(**params)
        self.feed = feed
        self._connect = connect
        self._token: str | None = None
        self.target = feed.target
        self.closed = False

    # -- calls -------------------------------------------------------------------------------------------------
    async def call(self, method: str, *args, **kwargs):
        """One SDK call on the shared channel; a channel that cannot connect raises Offline, the rest as they are
        (an UNAVAILABLE answer from a server that is up, e.g. its database is down, is a refusal like any other)."""
        try:
            return await self._run(self.feed.call, method, *args, **kwargs)
        except errors.Unavailable as exc:
            if await self.feed.connects():
                raise
            raise Offline(describe(exc)) from None

    async def admin(self, method: str, *args, **kwargs):
        """One admin call with the typed token, on a channel of its own (closed right after)."""
        client = self._connect(admin_token=self._token)
        try:
            return await self._run(lambda name, *a, **k: getattr(client, name)(*a, **k), method, *args, **kwargs)
        except errors.Unavailable as exc:
            raise Offline(describe(exc)) from None
        finally:
            await client.close()

    @staticmethod
    async def _run(call, method: str, *args, **kwargs):
        try:
            return await call(method, *args, **kwargs)
        except errors.PredmeshError:
            raise
        except Exception as exc:  # a bug or a closed channel: log it once, show a sentence, never a traceback
            log.error("dashboard call %s failed: %s: %s", method, type(exc).__name__, exc)
            raise errors.PredmeshError("the dashboard could not make the call; see its log") from None

    def close(self) -> None:
        self.closed = True

    # -- models ------------------------------------------------------------------------------------------------
    def set_models(self, models) -> None:
        models = sorted(models, key=lambda m: m.name)
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
