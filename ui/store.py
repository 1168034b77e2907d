"""The dashboard's data store: one per browser session, and the only part of the UI that talks to the server.

Every call goes through the SDK (transport "ui") in a worker thread, so a slow server never blocks other
sessions. When the server cannot be reached the store keeps what it had, says so in `problem`, and its periodic
`tick` keeps retrying with a fresh channel until the server answers again. The admin token typed by the user is
kept in this object only (one browser session); it is never logged and never written anywhere.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import param

from predmesh import errors
from ui import analytics

if TYPE_CHECKING:
    from predmesh import Client

log = logging.getLogger(__name__)

PAGE_SIZE = 20
SAMPLE_PER_BUCKET = 200     # stored predictions read per time bucket for the latency-by-transport series
BATCH_RUNS = 10             # batch pipeline runs listed on the Quality tab
SLOW_EVERY = 5              # ticks between refreshes of the time series and the quality table
RELOAD_TIMEOUT_S = 60.0     # a reload loads, verifies and warms a model: allow it more than a read


@dataclass(frozen=True)
class Notice:
    """A message for the user: kind is "info", "success", "warning" or "error"."""

    kind: str = "info"
    text: str = ""


class Offline(Exception):
    """The server could not be reached (or did not answer in time); `problem` says so."""


def now_utc() -> datetime:
    return datetime.now(UTC)


def describe(exc: errors.PredmeshError) -> str:
    code = getattr(exc.code, "name", str(exc.code))
    return f"{exc.message} ({code})"


class Store(param.Parameterized):
    """State of one dashboard session and the actions that change it."""

    # connection
    problem = param.String("", doc="why the page may show old data; empty while the server answers")
    updated_at = param.Parameter(None, doc="when the last refresh succeeded (UTC datetime)")
    # models
    models = param.List([], doc="ModelInfo of the serving version of every model")
    model = param.String("", doc="the selected model")
    info = param.Parameter(None, doc="ModelInfo of the selected model's serving version")
    versions = param.List([], doc="every stored version of the selected model (needs a token)")
    versions_note = param.String("")
    # predict
    prediction = param.Parameter(None, doc="the last Prediction made from this page")
    predict_notice = param.ClassSelector(class_=Notice, default=Notice())
    # history filters and data
    h_model = param.String("")
    h_version = param.String("")
    h_label = param.String("")
    h_transport = param.String("")
    window: param.Selector = param.Selector(objects=list(analytics.WINDOWS), default="1 h")
    page = param.List([], doc="StoredPrediction rows of the current history page")
    page_index = param.Integer(0)
    has_next = param.Boolean(False)
    history_notice = param.ClassSelector(class_=Notice, default=Notice())
    stats = param.Parameter(None, doc="Stats of the history window (model filter only)")
    rates = param.Dict({}, doc="requests per minute by transport per time bucket")
    latencies = param.Dict({}, doc="p50/p95 latency by transport per time bucket")
    latency_rows = param.List([], doc="p50/p95/p99 by transport over the window's samples")
    # quality
    quality = param.List([], doc="VersionQuality of the selected model's versions (all time)")
    feedback_notice = param.ClassSelector(class_=Notice, default=Notice())
    batch_runs = param.List([], doc="the selected model's last batch pipeline runs (ListBatchRuns)")
    batch_note = param.String("")
    # admin
    admin_notice = param.ClassSelector(class_=Notice, default=Notice())
    busy = param.Boolean(False)

    def __init__(self, connect: Callable[..., Client], *, target: str, refresh_s: float, **params):
        """`connect(admin_token=None)` returns a new SDK client; `target` only names the server in messages."""
        super().__init__(**params)
        self._connect = connect
        self._client = connect()
        self._token: str | None = None
        self._target = target
        self._refresh_s = refresh_s
        self._tokens = [""]
        self._ticks = 0
        self._ticking = False
        self._closed = False
        self.versions_note = self._no_token_note()

    # -- plumbing ----------------------------------------------------------------------------------------------
    async def _call(self, fn, *args, **kwargs):
        """Run one blocking SDK call in a thread; connection trouble marks the page offline and raises Offline."""
        try:
            result = await asyncio.to_thread(fn, *args, **kwargs)
        except (errors.Unavailable, errors.DeadlineExceeded) as exc:
            self._offline(exc)
            raise Offline(describe(exc)) from None
        except errors.PredmeshError:
            raise
        except Exception as exc:  # a bug or a closed channel: log it once, show a sentence, never a traceback
            log.error("dashboard call %s failed: %s: %s", getattr(fn, "__name__", fn), type(exc).__name__, exc)
            self._offline(errors.PredmeshError("the dashboard could not make the call; see its log"))
            raise Offline("unexpected error") from None
        return result

    def _offline(self, exc: errors.PredmeshError) -> None:
        since = self.updated_at.strftime("%H:%M:%S UTC") if self.updated_at else "never"
        self.problem = (f"The predmesh server at {self._target} cannot answer right now: {describe(exc)}. "
                        f"The page keeps what it last loaded (updated {since}) and retries every "
                        f"{self._refresh_s:g} s.")

    def _online(self) -> None:
        self.updated_at = now_utc()
        if self.problem:
            log.info("server %s answers again", self._target)
            self.problem = ""

    async def _reconnect(self) -> bool:
        """A fresh channel (gRPC's own reconnect backoff grows to minutes); swapped in once the server answers."""
        fresh = self._connect()
        try:
            await asyncio.to_thread(fresh.list_models)
        except Exception:  # still down: keep the old channel, try again next tick
            await asyncio.to_thread(fresh.close)
            return False
        old, self._client = self._client, fresh
        asyncio.get_running_loop().call_later(10.0, old.close)  # calls still in flight on it may finish
        return True

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """First load of a new page: what shows first, then the time series and quality."""
        await self.refresh(slow=False)
        if not self.problem:
            await self.refresh_slow()

    async def refresh_slow(self) -> None:
        try:
            await self._load_series()
            await self._load_quality()
        except (Offline, errors.PredmeshError):
            pass

    async def tick(self) -> None:
        """Periodic refresh (live history) and, while the server is unreachable, the retry."""
        if self._ticking or self._closed:
            return
        self._ticking = True
        try:
            self._ticks += 1
            if self.problem and not await self._reconnect():
                return
            await self.refresh(slow=self._ticks % SLOW_EVERY == 0 or bool(self.problem))
        except Exception:  # a bug must not stop the live refresh: log it, try again next tick
            log.exception("dashboard refresh failed")
        finally:
            self._ticking = False

    async def refresh(self, *, slow: bool = False) -> None:
        """Reload models, the first history page, window stats; with slow, also time series and quality."""
        try:
            await self._load_models()
            if self.page_index == 0:
                await self._load_page()
            await self._load_stats()
            if slow:
                await self._load_series()
                await self._load_quality()
        except Offline:
            return
        except errors.PredmeshError as exc:  # the server answers, but refuses a read: say so where it shows
            self.history_notice = Notice("error", f"History not loaded: {describe(exc)}")
        self._online()

    def close(self) -> None:
        self._closed = True
        self._client.close()

    # -- models ------------------------------------------------------------------------------------------------
    async def _load_models(self) -> None:
        models = sorted(await self._call(self._client.list_models), key=lambda m: m.name)
        if models != self.models:
            self.models = models
        if not self.model and models:
            self.model = models[0].name
        info = next((m for m in models if m.name == self.model), None)
        if info != self.info:
            self.info = info

    async def select_model(self, name: str) -> None:
        if name == self.model:
            return
        self.model = name
        self.info = next((m for m in self.models if m.name == name), None)
        self.prediction = None
        self.predict_notice = Notice()
        self.versions = []
        try:
            await self._load_quality()
        except (Offline, errors.PredmeshError):
            pass
        await self.load_versions()

    # -- predict -----------------------------------------------------------------------------------------------
    async def predict(self, values: Mapping[str, float | None], version: str = "") -> None:
        """Score one row with the selected model; `version` ("" = whatever serves) must be the serving one."""
        info = self.info
        if info is None:
            self.predict_notice = Notice("error", "No model is loaded yet; wait for the server to answer.")
            return
        given = {name: value for name in info.feature_names if (value := values.get(name)) is not None}
        missing = [name for name in info.feature_names if name not in given]
        if missing:
            self.predict_notice = Notice("error", f"Fill in {', '.join(missing)} before predicting.")
            return
        if version and version != info.version:
            self.predict_notice = Notice(
                "error", f"Version {version} of {info.name} is not serving: the server answers with its serving "
                         f"version ({info.version}) only. Reload {version} in the Model tab first, or choose "
                         "'serving'.")
            return
        features = {name: float(value) for name, value in given.items()}
        try:
            prediction = await self._call(self._client.predict, info.name, features)
        except Offline as exc:
            self.predict_notice = Notice("error", f"Not scored: the server is not answering ({exc}).")
            return
        except errors.InvalidArgument as exc:
            self.predict_notice = Notice("error", f"The server refused this input: {exc.message}")
            return
        except errors.PredmeshError as exc:
            self.predict_notice = Notice("error", f"Not scored: {describe(exc)}")
            return
        self.prediction = prediction
        self.predict_notice = Notice("success", f"{prediction.label} (model {prediction.model} version "
                                                f"{prediction.model_version})")
        self._soon(self._after_write)

    def _soon(self, coro_fn, delay: float = 0.5) -> None:
        """Run a refresh shortly: a prediction is readable once the server's writer has stored it (~200 ms)."""
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: loop.create_task(coro_fn()))

    async def _after_write(self) -> None:
        if self.page_index == 0 and not self._closed:
            await self.refresh(slow=False)

    # -- history -----------------------------------------------------------------------------------------------
    def _filters(self) -> dict:
        return {"model": self.h_model, "model_version": self.h_version, "label": self.h_label,
                "transport": self.h_transport, "start_time": analytics.window_start(self.window, now_utc())}

    async def _load_page(self) -> None:
        page = await self._call(self._client.list_predictions, **self._filters(), page_size=PAGE_SIZE,
                                page_token=self._tokens[self.page_index])
        rows = list(page.items)
        log.debug("history page %d: %d rows, newest %s", self.page_index + 1, len(rows),
                  rows[0].prediction.prediction_id if rows else "-")
        if rows != self.page:  # unchanged pages leave the table (and the user's selection) alone
            self.page = rows
        self.has_next = bool(page.next_page_token)
        if page.next_page_token:
            self._tokens[self.page_index + 1:] = [page.next_page_token]
        self.history_notice = Notice()

    async def set_filters(self, **filters) -> None:
        """Change history filters (h_model, h_version, h_label, h_transport, window) and reload from page 1."""
        self.param.update(**filters)
        self._tokens, self.page_index = [""], 0
        try:
            await self._load_page()
            await self._load_stats()
            await self._load_series()
        except Offline:
            return
        except errors.InvalidArgument as exc:
            self.history_notice = Notice("error", f"Filter refused: {exc.message}")
            return
        except errors.PredmeshError as exc:
            self.history_notice = Notice("error", describe(exc))
            return
        self._online()

    async def next_page(self) -> None:
        if not self.has_next:
            return
        await self._goto(self.page_index + 1)

    async def previous_page(self) -> None:
        if self.page_index > 0:
            await self._goto(self.page_index - 1)

    async def _goto(self, index: int) -> None:
        previous = self.page_index
        self.page_index = index
        try:
            await self._load_page()
        except Offline:
            self.page_index = previous
        except errors.PredmeshError as exc:
            self.page_index = previous
            self.history_notice = Notice("error", describe(exc))

    async def _load_stats(self) -> None:
        stats = await self._call(self._client.get_stats, model=self.h_model,
                                 start_time=analytics.window_start(self.window, now_utc()))
        if stats != self.stats:
            self.stats = stats

    async def _load_series(self) -> None:
        bucket_list = analytics.buckets(self.window, now_utc())
        counts, samples = await self._call(self._series, self._client, self.h_model, bucket_list)
        self.rates = analytics.rate_series(bucket_list, counts)
        self.latencies = analytics.latency_series(bucket_list, samples)
        self.latency_rows = analytics.latency_table(samples)

    @staticmethod
    def _series(client, model: str, bucket_list) -> tuple[list[dict], list[list[tuple[str, float]]]]:
        """Per bucket: exact counts by transport (GetStats) and a latency sample (newest rows of ListPredictions)."""
        counts, samples = [], []
        for b in bucket_list:
            counts.append(dict(client.get_stats(model=model, start_time=b.start, end_time=b.end).by_transport))
            page = client.list_predictions(model=model, start_time=b.start, end_time=b.end,
                                           page_size=SAMPLE_PER_BUCKET)
            samples.append([(row.transport, row.prediction.latency_ms) for row in page.items])
        return counts, samples

    # -- quality -----------------------------------------------------------------------------------------------
    async def _load_quality(self) -> None:
        if not self.model:
            return
        stats = await self._call(self._client.get_stats, model=self.model)
        quality = sorted((q for q in stats.quality if q.model == self.model), key=lambda q: q.model_version)
        if quality != self.quality:
            self.quality = quality
        await self._load_batch_runs()

    async def _load_batch_runs(self) -> None:
        try:
            page = await self._call(self._client.list_batch_runs, model=self.model, page_size=BATCH_RUNS)
        except errors.PredmeshError as exc:  # e.g. a server without ListBatchRuns: the rest of the page still works
            self.batch_note = f"Batch runs not loaded: {describe(exc)}"
            return
        runs = list(page.items)
        if runs != self.batch_runs:
            self.batch_runs = runs
        self.batch_note = ""

    async def submit_feedback(self, prediction_id: str, label: str) -> None:
        prediction_id = prediction_id.strip()
        if not prediction_id or not label:
            self.feedback_notice = Notice("error", "Pick a prediction in the table and its true label first.")
            return
        try:
            feedback = await self._call(self._client.submit_feedback, prediction_id, label)
        except Offline as exc:
            self.feedback_notice = Notice("error", f"Not recorded: the server is not answering ({exc}).")
            return
        except errors.PredmeshError as exc:
            self.feedback_notice = Notice("error", f"Not recorded: {exc.message}")
            return
        verdict = "the prediction was right" if feedback.correct else "the prediction was wrong"
        self.feedback_notice = Notice("success", f"Recorded true label {feedback.label} for prediction "
                                                 f"{feedback.prediction_id}: {verdict}.")
        try:
            await self._load_quality()
            if self.page_index == 0:
                await self._load_page()
        except (Offline, errors.PredmeshError):
            pass

    # -- admin (token typed by the user, kept in this session only) --------------------------------------------
    @staticmethod
    def _no_token_note() -> str:
        return ("Listing every version needs the admin or read-only token (ListModelVersions): type it above. "
                "It is kept in this browser session only.")

    @property
    def target(self) -> str:
        return self._target

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    async def set_token(self, token: str) -> None:
        """Use this token for admin calls from now on (nothing changes when it is the one already in use)."""
        new = token.strip() or None
        if new == self._token:
            return
        self._token = new
        self.admin_notice = Notice()
        await self.load_versions()

    async def _admin(self, method: str, *args, **kwargs):
        client = self._connect(admin_token=self._token)
        try:
            return await self._call(getattr(client, method), *args, **kwargs)
        finally:
            await asyncio.to_thread(client.close)

    async def load_versions(self) -> None:
        if not self._token:
            self.versions, self.versions_note = [], self._no_token_note()
            return
        if not self.model:
            return
        try:
            versions = await self._admin("list_model_versions", self.model)
        except Offline as exc:
            self.versions_note = f"Versions not loaded: the server is not answering ({exc})."
            return
        except (errors.Unauthenticated, errors.PermissionDenied) as exc:
            self.versions, self.versions_note = [], f"The token was refused: {exc.message}"
            return
        except errors.PredmeshError as exc:
            self.versions_note = f"Versions not loaded: {describe(exc)}"
            return
        self.versions = list(versions)
        self.versions_note = f"{len(versions)} stored versions of {self.model}, newest first."

    async def reload(self, version: str = "") -> None:
        """Roll the selected model to `version` (newest when "") through the admin API with the typed token."""
        target = version or "the newest version"
        if not self.model:
            return
        self.busy = True
        log.info("reload of model %s to %s requested from the dashboard", self.model, target)
        try:
            result = await self._admin("reload_model", self.model, version, timeout=RELOAD_TIMEOUT_S)
        except Offline as exc:
            self.admin_notice = Notice("error", f"Reload not sent: the server is not answering ({exc}).")
            return
        except errors.Unauthenticated as exc:  # without a typed token the server sees none: the UI holds none
            what = "the admin token was not accepted" if self._token else \
                "type the admin token first (the dashboard has no admin credential of its own)"
            self.admin_notice = Notice("error", f"Reload refused by the server: {what} ({exc.message}).")
            return
        except errors.PermissionDenied as exc:
            self.admin_notice = Notice("error", f"Reload refused: {exc.message}.")
            return
        except errors.FailedPrecondition as exc:
            serving = self.info.version if self.info else "the previous version"
            self.admin_notice = Notice("error", f"Reload to {target} refused by the server; {serving} still "
                                                f"serves. Reason: {exc.message}")
            return
        except errors.NotFound as exc:
            self.admin_notice = Notice("error", f"Reload refused: {exc.message}")
            return
        except errors.PredmeshError as exc:
            self.admin_notice = Notice("error", f"Reload failed: {describe(exc)}")
            return
        finally:
            self.busy = False
        was = result.previous_version or "none"
        self.admin_notice = Notice("success", f"Reloaded {result.model.name}: version {result.model.version} now "
                                              f"serves (was {was}).")
        await self.refresh(slow=True)
        await self.load_versions()
