"""One browser session: the store, one state object per tab, and its subscription to the shared feed."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ui.feed import Feed, Query
from ui.history import HistoryState
from ui.state import ModelState, PredictState, QualityState
from ui.store import Store

if TYPE_CHECKING:
    from predmesh import AsyncClient

log = logging.getLogger(__name__)

MODELS = Query.of("list_models")
STORED_AFTER_S = 0.5        # a prediction is readable once the server's writer has stored it (~200 ms)


def _now(_callback: Callable[[], None]) -> None:
    _callback()


class Session:
    """The state of one dashboard page and its lifecycle: subscribe to the feed, show what it loads, close.

    `schedule(fn)` runs fn where the page's models may change (the Panel app: the document's next tick, with its
    lock); by default at once."""

    def __init__(self, feed: Feed, connect: Callable[..., AsyncClient],
                 schedule: Callable[[Callable[[], None]], None] = _now):
        self.feed = feed
        self.store = Store(feed, connect)
        self.predict = PredictState(self.store, after_predict=self._after_predict)
        self.quality = QualityState(self.store)
        self.history = HistoryState(self.store, after_feedback=self._after_feedback)
        self.model = ModelState(self.store, after_reload=self._after_reload)
        self._schedule = schedule
        self._pending = False
        self._wanted: set[Query] = set()
        self._later: set[asyncio.TimerHandle] = set()

    # -- the feed's subscriber -----------------------------------------------------------------------------------
    def wants(self) -> set[Query]:
        """The reads this page shows now."""
        if self.store.closed:
            return set()
        return {MODELS, *self.history.queries(), *self.quality.queries()}

    def notify(self) -> None:
        """The feed has news: show it (once per scheduled update, however many reads finished meanwhile)."""
        if self._pending or self.store.closed:
            return
        self._pending = True

        def update() -> None:
            self._pending = False
            self.apply()
        self._schedule(update)

    def apply(self) -> None:
        """Show what the feed holds for this page's reads."""
        if self.store.closed:
            return
        feed, now = self.feed, self.feed.clock()
        self.store.param.update(problem=feed.unreachable, updated_at=feed.answered_at)
        models = feed.load(MODELS)
        if models.loaded:
            self.store.set_models(models.value)
        self.history.show(feed, now)
        self.quality.show(feed, now)
        wanted = self.wants()
        if wanted != self._wanted:   # e.g. the first model list selected a model: its quality is wanted now
            self._wanted = wanted
            feed.kick()

    async def start(self) -> None:
        """First load of a new page: subscribe, and wait for the first reads."""
        log.debug("dashboard session started")
        self._wanted = self.wants()
        self.feed.subscribe(self)
        await self.refresh()

    async def refresh(self, *queries: Query) -> None:
        """Load these reads (default: every read of the page) now, sharing those in flight, then show them."""
        wanted = self.wants()
        await self.feed.fetch(queries or wanted)
        self.apply()
        if not queries and self.wants() - wanted:   # a model was selected meanwhile: its reads too
            await self.feed.fetch(self.wants() - wanted)
            self.apply()

    # -- actions -------------------------------------------------------------------------------------------------
    async def select_model(self, name: str) -> None:
        if not name or not self.store.choose(name):
            return
        self.predict.clear()
        self.model.versions = []
        self.quality.show(self.feed, self.feed.clock())
        await self.refresh(*self.quality.queries())
        await self.model.load_versions()

    async def set_filters(self, **filters) -> None:
        self.history.set_filters(**filters)
        await self.refresh(*self.history.queries())

    def _after_predict(self) -> None:
        loop = asyncio.get_running_loop()
        self._later = {h for h in self._later if h.when() > loop.time()}
        handle = loop.call_later(STORED_AFTER_S, lambda: loop.create_task(self._refresh_first_page()))
        self._later.add(handle)

    async def _refresh_first_page(self) -> None:
        if self.history.page_index == 0 and not self.store.closed:
            await self.refresh(*self.history.queries())

    async def _after_feedback(self) -> None:
        await self.refresh(*self.quality.queries(), *self.history.queries())

    async def _after_reload(self) -> None:
        await self.refresh()

    def close(self) -> None:
        """The page is gone: it leaves the feed (the poller stops with the last page); pending refreshes drop."""
        for handle in self._later:
            handle.cancel()
        self.store.close()
        self.feed.unsubscribe(self)
        log.debug("dashboard session closed")
