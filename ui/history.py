"""State of the History tab: filters, the page of stored predictions, window stats, time series and feedback."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import param

from predmesh import errors
from ui import analytics
from ui.store import Notice, Offline, Store, describe, now_utc

log = logging.getLogger(__name__)

PAGE_SIZE = 20
SAMPLE_PER_BUCKET = 500     # newest stored predictions read per time bucket (its latency sample)


class HistoryState(param.Parameterized):
    """What the History tab shows; every read goes through the store."""

    model = param.String("", doc="model filter; empty: every model")
    version = param.String("", doc="model version filter")
    label = param.String("", doc="predicted label filter")
    transport = param.String("", doc="transport filter")
    window: param.Selector[str] = param.Selector(objects=list(analytics.WINDOWS), default="1 h")
    page = param.List([], doc="StoredPrediction rows of the current history page")
    page_index = param.Integer(0)
    has_next = param.Boolean(False)
    notice = param.ClassSelector(class_=Notice, default=Notice())
    stats = param.Parameter(None, doc="Stats of the history window (model filter only)")
    rates = param.Dict({}, doc="requests per minute by transport per time bucket")
    latencies = param.Dict({}, doc="p50/p95 latency by transport per time bucket")
    latency_rows = param.List([], doc="p50/p95/p99 by transport over the window's samples")
    feedback_notice = param.ClassSelector(class_=Notice, default=Notice())

    def __init__(self, store: Store, after_feedback: Callable[[], Awaitable[None]], **params):
        super().__init__(**params)
        self._store = store
        self._after_feedback = after_feedback
        self._tokens = [""]

    def _filters(self) -> dict:
        return {"model": self.model, "model_version": self.version.strip(), "label": self.label.strip(),
                "transport": self.transport, "start_time": analytics.window_start(self.window, now_utc())}

    async def load_page(self) -> None:
        page = await self._store.call("list_predictions", **self._filters(), page_size=PAGE_SIZE,
                                      page_token=self._tokens[self.page_index])
        rows = list(page.items)
        log.debug("history page %d: %d rows, newest %s", self.page_index + 1, len(rows),
                  rows[0].prediction.prediction_id if rows else "-")
        if rows != self.page:  # unchanged pages leave the table (and the user's selection) alone
            self.page = rows
        self.has_next = bool(page.next_page_token)
        if page.next_page_token:
            self._tokens[self.page_index + 1:] = [page.next_page_token]
        self.notice = Notice()

    async def load_stats(self) -> None:
        stats = await self._store.call("get_stats", model=self.model,
                                       start_time=analytics.window_start(self.window, now_utc()))
        if stats != self.stats:
            self.stats = stats

    async def load_series(self) -> None:
        """One ListPredictions call per time bucket, all at once, plus one GetStats over their whole span.

        A bucket's newest rows give its latency sample and its counts by transport; a bucket with more rows than
        one page takes its counts from the span's exact totals (see analytics.bucket_counts)."""
        bucket_list = analytics.buckets(self.window, now_utc())
        span = self._store.call("get_stats", model=self.model, start_time=bucket_list[0].start,
                                end_time=bucket_list[-1].end)
        per_bucket = [self._store.call("list_predictions", model=self.model, start_time=b.start, end_time=b.end,
                                       page_size=SAMPLE_PER_BUCKET) for b in bucket_list]
        totals, *pages = await asyncio.gather(span, *per_bucket)
        reads = [analytics.read_bucket(b, [(r.transport, r.prediction.latency_ms, r.created_at) for r in page.items],
                                       complete=not page.next_page_token)
                 for b, page in zip(bucket_list, pages)]
        counts = analytics.bucket_counts(bucket_list, reads, totals.by_transport)
        samples = [r.sample for r in reads]
        self.param.update(rates=analytics.rate_series(bucket_list, counts),
                          latencies=analytics.latency_series(bucket_list, samples),
                          latency_rows=analytics.latency_table(samples))

    async def set_filters(self, **filters) -> None:
        """Change filters (model, version, label, transport, window) and reload from page 1."""
        self.param.update(**filters)
        self._tokens, self.page_index = [""], 0
        try:
            await self.load_page()
            await self.load_stats()
            await self.load_series()
        except Offline:
            return
        except errors.InvalidArgument as exc:
            self.notice = Notice("error", f"Filter refused: {exc.message}")
            return
        except errors.PredmeshError as exc:
            self.notice = Notice("error", describe(exc))
            return
        self._store.online()

    async def next_page(self) -> None:
        if self.has_next:
            await self._goto(self.page_index + 1)

    async def previous_page(self) -> None:
        if self.page_index > 0:
            await self._goto(self.page_index - 1)

    async def _goto(self, index: int) -> None:
        previous = self.page_index
        self.page_index = index
        try:
            await self.load_page()
        except Offline:
            self.page_index = previous
        except errors.PredmeshError as exc:
            self.page_index = previous
            self.notice = Notice("error", describe(exc))

    async def submit_feedback(self, prediction_id: str, label: str) -> None:
        prediction_id = prediction_id.strip()
        if not prediction_id or not label:
            self.feedback_notice = Notice("error", "Pick a prediction in the table and its true label first.")
            return
        try:
            feedback = await self._store.call("submit_feedback", prediction_id, label)
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
            await self._after_feedback()
            if self.page_index == 0:
                await self.load_page()
        except (Offline, errors.PredmeshError):
            pass
