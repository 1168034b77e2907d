"""One browser session: the store, one state object per tab, and the refresh that keeps them live."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from predmesh import errors
from ui.history import HistoryState
from ui.state import ModelState, PredictState, QualityState
from ui.store import Notice, Offline, Store, describe

if TYPE_CHECKING:
    from predmesh import AsyncClient

log = logging.getLogger(__name__)

SLOW_EVERY = 5              # ticks between refreshes of the time series and the quality table
STORED_AFTER_S = 0.5        # a prediction is readable once the server's writer has stored it (~200 ms)


class Session:
    """The state of one dashboard page and its lifecycle: first load, periodic tick, model choice, close."""

    def __init__(self, connect: Callable[..., AsyncClient], *, target: str, refresh_s: float):
        self.store = Store(connect, target=target, refresh_s=refresh_s)
        self.predict = PredictState(self.store, after_predict=self._after_predict)
        self.quality = QualityState(self.store)
        self.history = HistoryState(self.store, after_feedback=self.quality.load)
        self.model = ModelState(self.store, after_reload=self._after_reload)
        self._ticks = 0
        self._ticking = False
        self._later: set[asyncio.TimerHandle] = set()

    async def start(self) -> None:
        """First load of a new page: what shows first, then the time series and quality."""
        log.debug("dashboard session started")
        await self.refresh(slow=False)
        if not self.store.problem:
            await self.refresh_slow()

    async def refresh_slow(self) -> None:
        try:
            await self.history.load_series()
            await self.quality.load()
        except (Offline, errors.PredmeshError):
            pass

    async def tick(self) -> None:
        """Periodic refresh (live history) and, while the server is unreachable, the retry."""
        if self._ticking or self.store.closed:
            return
        self._ticking = True
        try:
            self._ticks += 1
            if self.store.problem and not await self.store.reconnect():
                return
            await self.refresh(slow=self._ticks % SLOW_EVERY == 0 or bool(self.store.problem))
        except Exception:  # a bug must not stop the live refresh: log it, try again next tick
            log.exception("dashboard refresh failed")
        finally:
            self._ticking = False

    async def refresh(self, *, slow: bool = False) -> None:
        """Reload models, the first history page, window stats; with slow, also time series and quality."""
        try:
            await self.store.load_models()
            if self.history.page_index == 0:
                await self.history.load_page()
            await self.history.load_stats()
            if slow:
                await self.history.load_series()
                await self.quality.load()
        except Offline:
            return
        except errors.PredmeshError as exc:  # the server answers, but refuses a read: say so where it shows
            self.history.notice = Notice("error", f"History not loaded: {describe(exc)}")
        self.store.online()

    async def select_model(self, name: str) -> None:
        if not name or not self.store.choose(name):
            return
        self.predict.clear()
        self.model.versions = []
        try:
            await self.quality.load()
        except (Offline, errors.PredmeshError):
            pass
        await self.model.load_versions()

    def _after_predict(self) -> None:
        loop = asyncio.get_running_loop()
        self._later = {h for h in self._later if h.when() > loop.time()}
        handle = loop.call_later(STORED_AFTER_S, lambda: loop.create_task(self._refresh_first_page()))
        self._later.add(handle)

    async def _refresh_first_page(self) -> None:
        if self.history.page_index == 0 and not self.store.closed:
            await self.refresh(slow=False)

    async def _after_reload(self) -> None:
        await self.refresh(slow=True)

    async def close(self) -> None:
        """The page is gone: pending refreshes are dropped and the channels close."""
        for handle in self._later:
            handle.cancel()
        await self.store.close()
        log.debug("dashboard session closed")
