"""The dashboard's shared feed: one poller per process that keeps every read the open tabs show fresh.

Each open tab (a Session) subscribes with the reads it shows (`Query`: an SDK method and its arguments). Every
refresh period the feed makes each distinct read once, whatever the number of tabs showing it, and tells the
subscribers; a read still in flight is not started again (a slow server never piles up calls). When the last tab
unsubscribes (its session is destroyed) the poller stops: nothing is polled for nobody.

Each read has a `Load`: the last good value and when it came, the call in flight and since when, the last
failure. Views show from it "loading", "slow" (which call, for how long), "failed" (the status and message, the
last good data kept and marked stale) and "empty". "Server unreachable" is only said when the channel cannot
connect (UNAVAILABLE); a deadline or a refusal is a failed load of that one read.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from predmesh import errors
from ui import analytics

if TYPE_CHECKING:
    from predmesh import AsyncClient

log = logging.getLogger(__name__)

RPC_NAMES = {"list_models": "ListModels", "list_predictions": "ListPredictions", "get_stats": "GetStats",
             "list_batch_runs": "ListBatchRuns"}
SLOW_AFTER_S = 1.0          # a read in flight longer than this is shown as slow (which call, for how long)
RECONNECT_GRACE_S = 10.0    # calls still in flight on a replaced channel may finish before it closes


def now_utc() -> datetime:
    return datetime.now(UTC)


def describe(exc: errors.PredmeshError) -> str:
    code = getattr(exc.code, "name", str(exc.code))
    return f"{exc.message} ({code})"


@dataclass(frozen=True)
class Query:
    """One read a view shows: an SDK method and its keyword arguments (hashable: equal reads are shared).

    `window` (a key of analytics.WINDOWS) is resolved at each call: start_time = now - window ("all": none)."""

    method: str
    args: tuple[tuple[str, Any], ...] = ()
    window: str | None = None

    @classmethod
    def of(cls, method: str, window: str | None = None, **kwargs: Any) -> Query:
        return cls(method, tuple(sorted(kwargs.items())), window)

    @property
    def rpc(self) -> str:
        return RPC_NAMES.get(self.method, self.method)

    def kwargs(self, now: datetime) -> dict[str, Any]:
        kwargs = dict(self.args)
        if self.window is not None:
            kwargs["start_time"] = analytics.window_start(self.window, now)
        return kwargs


@dataclass(frozen=True)
class Load:
    """What is known of one read: the last good value, the call in flight, the last failure."""

    value: Any = None
    loaded_at: datetime | None = None     # when `value` came (None: never loaded)
    since: float | None = None            # monotonic start of the call in flight (None: idle)
    error: str = ""                       # the last call's failure ("message (CODE)"), "" when it succeeded
    took_s: float = 0.0                   # how long the last finished call took

    @property
    def loaded(self) -> bool:
        return self.loaded_at is not None

    def note(self, rpc: str, now: float, slow_after_s: float = SLOW_AFTER_S) -> tuple[str, str]:
        """(kind, sentence) for the view showing this read: ("", "") when the view is up to date; "info" while
        it first loads, "warning" when slow or stale, "error" when it failed with nothing to show."""
        stale = f"showing the data loaded at {self.loaded_at:%H:%M:%S} UTC" if self.loaded_at else ""
        if self.since is not None:
            waited = now - self.since
            if waited >= slow_after_s:
                tail = f"; {stale} meanwhile" if stale else ""
                return "warning", f"{rpc} has taken {waited:.1f} s so far (the server is slow to answer){tail}…"
            if not self.loaded and not self.error:
                return "info", f"Loading ({rpc})…"
        if self.error:
            if stale:
                return "warning", f"{rpc} failed after {self.took_s:.1f} s: {self.error}. Stale: {stale}."
            return "error", f"{rpc} failed after {self.took_s:.1f} s: {self.error}. Nothing loaded yet."
        if not self.loaded:
            return "info", f"Loading ({rpc})…"
        return "", ""


class Subscriber(Protocol):
    def wants(self) -> Iterable[Query]: ...
    def notify(self) -> None: ...


@dataclass
class _Flight:
    task: asyncio.Task
    started: float = field(default_factory=time.monotonic)


class Feed:
    """The process-wide poller (see the module's docstring). Runs on the event loop of the Panel server."""

    def __init__(self, connect: Callable[[], AsyncClient], *, target: str, refresh_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self._connect = connect
        self._client: AsyncClient | None = None
        self._retired: set[asyncio.Task] = set()
        self.target = target
        self.refresh_s = refresh_s
        self.clock = clock
        self.loads: dict[Query, Load] = {}
        self.unreachable = ""               # why the server cannot be reached; "" while the channel connects
        self.answered_at: datetime | None = None   # when a read last succeeded
        self.rounds = 0                     # refresh rounds run (for tests and the log)
        self._subscribers: list[Subscriber] = []
        self._flights: dict[Query, _Flight] = {}
        self._poller: asyncio.Task | None = None

    # -- subscribers ---------------------------------------------------------------------------------------------
    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def polling(self) -> bool:
        return self._poller is not None and not self._poller.done()

    def subscribe(self, subscriber: Subscriber) -> None:
        """Start showing a tab: its reads start now (those not loaded yet) and then follow the refresh."""
        if subscriber not in self._subscribers:
            self._subscribers.append(subscriber)
        log.debug("feed: %d tabs subscribed", len(self._subscribers))
        if not self.polling:
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        self.kick()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """A tab is gone; with the last one the poller stops and the reads in flight are cancelled."""
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
        log.debug("feed: %d tabs subscribed", len(self._subscribers))
        if not self._subscribers:
            if self._poller is not None:
                self._poller.cancel()
                self._poller = None
            for flight in self._flights.values():
                flight.task.cancel()
            self._flights.clear()
            self.loads.clear()
            log.info("feed: no tab open, polling stopped")

    def wanted(self) -> set[Query]:
        wanted: set[Query] = set()
        for subscriber in self._subscribers:
            wanted.update(subscriber.wants())
        return wanted

    def load(self, query: Query) -> Load:
        """The read's state now (with its call in flight, if any)."""
        load = self.loads.get(query, Load())
        flight = self._flights.get(query)
        return replace(load, since=flight.started) if flight is not None else load

    # -- polling -------------------------------------------------------------------------------------------------
    async def _poll(self) -> None:
        while self._subscribers:
            try:
                await self.refresh()
            except Exception:  # a bug must not stop the live refresh: log it, try again next round
                log.exception("dashboard refresh failed")
            await asyncio.sleep(self.refresh_s)

    async def refresh(self) -> None:
        """One round: probe the server when unreachable, else start every wanted read not in flight; tell the
        tabs (the reads still in flight show as slow)."""
        self.rounds += 1
        wanted = self.wanted()
        for stale in set(self.loads) - wanted - set(self._flights):
            del self.loads[stale]
        if self.unreachable and not await self._reconnect():
            self._notify()
            return
        self.start(wanted)
        self._notify()

    def kick(self) -> None:
        """Start now the wanted reads never loaded (a new tab, a new filter), without waiting for the round."""
        self.start(q for q in self.wanted() if q not in self.loads)

    def start(self, queries: Iterable[Query]) -> list[asyncio.Task]:
        """Start each read not already in flight; the tasks of all of them (in flight or new)."""
        tasks = []
        for query in queries:
            flight = self._flights.get(query)
            if flight is None:
                flight = self._flights[query] = _Flight(asyncio.get_running_loop().create_task(self._fetch(query)),
                                                        self.clock())
            tasks.append(flight.task)
        return tasks

    async def fetch(self, queries: Iterable[Query]) -> None:
        """Start these reads (sharing those in flight) and wait until each has finished, failed or not."""
        tasks = self.start(queries)
        if tasks:
            await asyncio.wait([asyncio.shield(t) for t in tasks])

    async def _fetch(self, query: Query) -> None:
        started = self.clock()
        previous = self.loads.get(query, Load())
        try:
            value = await self.call(query.method, **query.kwargs(now_utc()))
        except asyncio.CancelledError:
            raise
        except errors.Unavailable as exc:
            took = self.clock() - started
            if not await self.connects():   # the channel does not connect: the server is unreachable
                self._unreachable(exc)
            else:                           # it connects: the server answered UNAVAILABLE for this read
                log.warning("dashboard read %s failed after %.1f s: %s", query.rpc, took, describe(exc))
            self.loads[query] = replace(previous, since=None, error=describe(exc), took_s=took)
        except errors.PredmeshError as exc:
            log.warning("dashboard read %s failed after %.1f s: %s", query.rpc, self.clock() - started,
                        describe(exc))
            self.loads[query] = replace(previous, since=None, error=describe(exc), took_s=self.clock() - started)
        except Exception as exc:  # a bug or a closed channel: log it once, show a sentence, never a traceback
            log.error("dashboard read %s failed: %s: %s", query.rpc, type(exc).__name__, exc)
            self.loads[query] = replace(previous, since=None, took_s=self.clock() - started,
                                        error="the dashboard could not make the call; see its log")
        else:
            self.answered_at = now_utc()
            self.loads[query] = Load(value, self.answered_at, None, "", self.clock() - started)
            if self.unreachable:
                log.info("server %s answers again", self.target)
                self.unreachable = ""
        finally:
            flight = self._flights.get(query)
            if flight is not None and flight.task is asyncio.current_task():
                del self._flights[query]
        if query in self.loads:
            self._notify()

    def _notify(self) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber.notify()
            except Exception:
                log.exception("dashboard tab update failed")

    # -- the channel ---------------------------------------------------------------------------------------------
    async def call(self, method: str, *args, **kwargs):
        """One SDK call on the feed's channel (made on first use: grpc.aio channels belong to their loop)."""
        if self._client is None:
            self._client = self._connect()
        return await getattr(self._client, method)(*args, **kwargs)

    async def connects(self, timeout: float = 1.0) -> bool:
        """Whether the feed's channel connects to the server (an UNAVAILABLE answer can come from a server that
        is up, e.g. its database is down: that is a failed read, not an unreachable server)."""
        if self._client is None:
            return False
        try:
            await self._client.wait_ready(timeout=timeout)
        except Exception:
            return False
        return True

    def _unreachable(self, exc: errors.PredmeshError) -> None:
        if not self.unreachable:
            log.warning("server %s unreachable: %s", self.target, describe(exc))
        since = f"{self.answered_at:%H:%M:%S} UTC" if self.answered_at else "never"
        self.unreachable = (f"The predmesh server at {self.target} cannot be reached: {describe(exc)}. The page "
                            f"keeps what it last loaded (updated {since}) and retries every {self.refresh_s:g} s.")

    async def _reconnect(self) -> bool:
        """A fresh channel (gRPC's own reconnect backoff grows to minutes); swapped in once the server answers."""
        fresh = self._connect()
        try:
            await fresh.list_models()
        except errors.Unavailable as exc:   # still down: keep the old channel, try again next round
            try:
                await fresh.wait_ready(timeout=1.0)
            except Exception:
                self._unreachable(exc)
                await fresh.close()
                return False
        except Exception:                   # it connects (a refusal or a slow answer is not "unreachable")
            pass
        old, self._client = self._client, fresh
        if old is not None:
            self._retire(old)
        log.info("server %s answers again", self.target)
        self.unreachable = ""
        return True

    def _retire(self, client: AsyncClient) -> None:
        async def close_later():
            await asyncio.sleep(RECONNECT_GRACE_S)
            await client.close()
        task = asyncio.get_running_loop().create_task(close_later())
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        """End of the process: the poller stops and every channel closes."""
        for subscriber in list(self._subscribers):
            self.unsubscribe(subscriber)
        for task in list(self._retired):
            task.cancel()
        if self._client is not None:
            await self._client.close()
            self._client = None
