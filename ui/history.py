"""State of the History tab: filters, the page of stored predictions, window stats, time series and feedback."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import param

from predmesh import errors
from ui import analytics
from ui.feed import Feed, Query
from ui.store import Notice, Offline, Store, describe, now_utc

log = logging.getLogger(__name__)

PAGE_SIZE = 20


class HistoryState(param.Parameterized):
    """What the History tab shows; the first page and the window's stats come from the shared feed."""

    model = param.String("", doc="model filter; empty: every model")
    version = param.String("", doc="model version filter")
    label = param.String("", doc="predicted label filter")
    transport = param.String("", doc="transport filter")
    request_id = param.String("", doc="request id filter (exact)")
    window: param.Selector[str] = param.Selector(objects=list(analytics.WINDOWS), default="1 h")
    page = param.List([], doc="StoredPrediction rows of the current history page")
    page_loaded = param.Boolean(False, doc="the page shown was loaded for these filters (empty then means none)")
    page_note = param.ClassSelector(class_=Notice, default=Notice(), doc="loading / slow / failed")
    page_index = param.Integer(0)
    has_next = param.Boolean(False)
    notice = param.ClassSelector(class_=Notice, default=Notice())
    stats = param.Parameter(None, doc="Stats of the history window (model filter only), with its series")
    stats_note = param.ClassSelector(class_=Notice, default=Notice(), doc="loading / slow / failed")
    series = param.Dict({}, doc="the window's time series (analytics.series_columns)")
    feedback_notice = param.ClassSelector(class_=Notice, default=Notice())

    def __init__(self, store: Store, after_feedback: Callable[[], Awaitable[None]], **params):
        super().__init__(**params)
        self._store = store
        self._after_feedback = after_feedback
        self._tokens = [""]

    # -- the reads ---------------------------------------------------------------------------------------------
    def _filters(self) -> dict:
        filters = {"model": self.model, "model_version": self.version.strip(), "label": self.label.strip(),
                   "transport": self.transport}
        if self.request_id.strip():
            filters["request_id"] = self.request_id.strip()
        return filters

    def page_query(self) -> Query:
        return Query.of("list_predictions", window=self.window, **self._filters(), page_size=PAGE_SIZE)

    def stats_query(self) -> Query:
        return Query.of("get_stats", window=self.window, model=self.model,
                        bucket_seconds=int(analytics.bucket_width(self.window).total_seconds()))

    def queries(self) -> list[Query]:
        """The live reads: the window's stats, and the first page while it is the one shown."""
        return [self.stats_query(), *([self.page_query()] if self.page_index == 0 else [])]

    def show(self, feed: Feed, now: float) -> None:
        if self.page_index == 0:
            query = self.page_query()
            load = feed.load(query)
            updates: dict = {"page_note": Notice(*load.note(query.rpc, now)), "page_loaded": load.loaded}
            if load.loaded:
                rows = list(load.value.items)
                if rows != self.page:  # unchanged pages leave the table (and the user's selection) alone
                    updates["page"] = rows
                updates["has_next"] = bool(load.value.next_page_token)
                self._tokens[1:] = [load.value.next_page_token] if load.value.next_page_token else []
            self.param.update(**{k: v for k, v in updates.items() if getattr(self, k) != v})
        query = self.stats_query()
        load = feed.load(query)
        note = Notice(*load.note(query.rpc, now))
        if note != self.stats_note:
            self.stats_note = note
        if load.loaded and load.value != self.stats:
            self.param.update(stats=load.value,
                              series=analytics.series_columns(self.window, load.value, now_utc()))

    def set_filters(self, **filters) -> None:
        """Change filters (model, version, label, transport, request id, window): back to page 1, and nothing of
        the old filters stays on show (the new reads show as loading until they come)."""
        self.param.update(**filters)
        self._tokens, self.page_index = [""], 0
        self.param.update(page=[], page_loaded=False, has_next=False, stats=None, series={}, notice=Notice())

    # -- older pages (not live: read when asked) ---------------------------------------------------------------
    async def next_page(self) -> None:
        if self.has_next:
            await self._goto(self.page_index + 1)

    async def previous_page(self) -> None:
        if self.page_index > 0:
            await self._goto(self.page_index - 1)

    async def _goto(self, index: int) -> None:
        if index == 0:   # the first page is live: the feed has it
            self.page_index = 0
            return
        try:
            page = await self._store.call("list_predictions", **self._filters(), page_size=PAGE_SIZE,
                                          start_time=analytics.window_start(self.window, now_utc()),
                                          page_token=self._tokens[index])
        except Offline as exc:
            self.notice = Notice("error", f"Page {index + 1} not loaded: the server cannot be reached ({exc}).")
            return
        except errors.PredmeshError as exc:
            self.notice = Notice("error", f"Page {index + 1} not loaded: {describe(exc)}")
            return
        rows = list(page.items)
        self._tokens[index + 1:] = [page.next_page_token] if page.next_page_token else []
        self.param.update(page_index=index, page=rows, has_next=bool(page.next_page_token), page_loaded=True,
                          page_note=Notice(), notice=Notice())

    # -- feedback ----------------------------------------------------------------------------------------------
    async def submit_feedback(self, prediction_id: str, label: str) -> None:
        prediction_id = prediction_id.strip()
        if not prediction_id or not label:
            self.feedback_notice = Notice("error", "Pick a prediction in the table and its true label first.")
            return
        try:
            feedback = await self._store.call("submit_feedback", prediction_id, label)
        except Offline as exc:
            self.feedback_notice = Notice("error", f"Not recorded: the server cannot be reached ({exc}).")
            return
        except errors.PredmeshError as exc:
            self.feedback_notice = Notice("error", f"Not recorded: {describe(exc)}")
            return
        verdict = "the prediction was right" if feedback.correct else "the prediction was wrong"
        self.feedback_notice = Notice("success", f"Recorded true label {feedback.label} for prediction "
                                                 f"{feedback.prediction_id}: {verdict}.")
        await self._after_feedback()
