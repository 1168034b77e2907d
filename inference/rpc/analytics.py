"""AnalyticsService: stored predictions, aggregates and feedback, read from the database through database.repo."""
from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import date
from typing import Literal, overload

from google.protobuf.struct_pb2 import NULL_VALUE, Value
from google.protobuf.timestamp_pb2 import Timestamp

from database import repo
from database.bounded import QueryBound, QueryTimeout, bounded
from database.bounded import sleep as db_sleep
from database.connect import DatabaseUnavailable, RejectedData, session
from inference import errors
from inference.bounds import MAX_ID, MAX_LABEL, MAX_TOKEN, check_name, check_optional_name, check_text, shown
from inference.rpc.auth import TokenAuth
from inference.rpc.edge import rpc
from inference.scoring.convert import prediction_message
from predmesh import types
from predmesh.faults import fault_point
from predmesh.types import transport_value
from predmesh.v1 import analytics_pb2, analytics_pb2_grpc, model_pb2

log = logging.getLogger(__name__)
ANALYTICS_SERVICE = analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name
DEFAULT_PAGE, MAX_PAGE = 50, 1000
MAX_FEEDBACK_ITEMS = 1000  # per SubmitFeedbackBatch call
SERIES_STEP = 60  # GetStats bucket_seconds is a multiple of this (the finest bucket the aggregates keep)
MAX_RUN_KEY, MAX_RUN_MESSAGE, MAX_RUN_INPUT = 128, 1024, 1024
MAX_RUN_ROWS = 2**31 - 1  # batch_runs.rows/rejected are 32-bit integers
# A ListPredictions page's encoded rows, whatever page_size asks: stored features can be large (an unseen category
# is kept as sent, up to the request size), and a page over 4 MiB (gRPC's default receive limit, the server's send
# limit, the gateway's transcoding buffer) failed for every caller. 1 MiB leaves room for the JSON of the REST answer.
MAX_PAGE_BYTES = 1024 * 1024
MAX_EPOCH = 4102444800  # 2100-01-01: a started_at beyond this is a client mistake, not a date to store
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
RUN_STATUS = {analytics_pb2.BATCH_RUN_STATUS_RUNNING: "running",
              analytics_pb2.BATCH_RUN_STATUS_SUCCEEDED: "succeeded",
              analytics_pb2.BATCH_RUN_STATUS_FAILED: "failed"}  # what RecordBatchRun takes
# what ListBatchRuns answers: those, and abandoned (set by the server only: repo.mark_abandoned)
RUN_STATUS_VALUE = {**{name: value for value, name in RUN_STATUS.items()},
                    "abandoned": analytics_pb2.BATCH_RUN_STATUS_ABANDONED}


# The range google.protobuf.Timestamp defines (0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z).
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def transport_name(value: int) -> str:
    """TRANSPORT_REST → "rest"; unspecified → "" (no filter); a value this server does not know → InvalidArgument."""
    if not value:
        return ""
    if value not in model_pb2.Transport.values():
        # Not `in model_pb2.Transport`: iterating a protobuf EnumTypeWrapper is not iterating its names.
        known = ", ".join(n for n in model_pb2.Transport.keys()  # noqa: SIM118 (an EnumTypeWrapper, not a dict)
                          if n.startswith("TRANSPORT_") and n != "TRANSPORT_UNSPECIFIED")  # not the aliases
        raise errors.InvalidArgument(f"transport {value} is not a known transport; use one of {known}")
    return types.transport_name(value)


@overload
def epoch(field: str, ts: Timestamp, present: Literal[True]) -> float: ...
@overload
def epoch(field: str, ts: Timestamp, present: bool) -> float | None: ...
def epoch(field: str, ts: Timestamp, present: bool) -> float | None:
    """Unix seconds of a Timestamp field (None when absent); InvalidArgument outside Timestamp's own range."""
    if not present:
        return None
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos <= 999_999_999:
        raise errors.InvalidArgument(f"{field} ({ts.seconds} s, {ts.nanos} ns) is outside the Timestamp range "
                                     "0001-01-01 .. 9999-12-31")
    return ts.seconds + ts.nanos / 1e9


def feature_values(target: Mapping[str, Value], features: Mapping[str, object]) -> None:
    """Fill a map of google.protobuf.Value (StoredPrediction.features) with stored plain values: a number →
    number_value, a string → string_value, a boolean → bool_value, None (missing) → null_value. Rows stored
    before typed features hold numbers only. (Anything else, which no writer stores, is sent as its JSON text.)"""
    for name, value in features.items():
        entry = target[name]
        if isinstance(value, bool):  # before numbers: a bool is an int
            entry.bool_value = value
        elif isinstance(value, (float, int)):
            entry.number_value = value
        elif isinstance(value, str):
            entry.string_value = value
        elif value is None:
            entry.null_value = NULL_VALUE
        else:
            entry.string_value = json.dumps(value)


# the range of a google.protobuf.Timestamp (0001-01-01 .. 9999-12-31T23:59:59): a window's edges, rounded out to
# whole minutes, are reported within it
MIN_TIMESTAMP_S, MAX_TIMESTAMP_S = -62135596800, 253402300799


def timestamp(epoch_s: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(round(epoch_s * 1e9))
    return ts


MIN_QUERY_S = 0.01  # a call whose deadline leaves less than this is refused before any SQL
DEFAULT_MAX_QUERY_S = 10.0  # the server's cap on one call's SQL (PREDMESH_ANALYTICS_MAX_SECONDS)
QUERY_FAULT = "analytics.query_delay_ms"  # tests only (predmesh.faults): the database made slow in each call


def margin(left_s: float) -> float:
    """Time kept back from the client's deadline so the server's own DEADLINE_EXCEEDED, naming what was slow,
    reaches the client before the client's deadline ends the call (on a busy machine too): a tenth of it, at most
    250 ms."""
    return min(0.25, left_s / 10)


class Db:
    """A database session for one call, whose failures are domain errors: unreachable → StorageUnavailable
    (UNAVAILABLE); a value of the request the database refuses → InvalidArgument (the edge checks should leave
    none).

    Its SQL is bounded (database.bounded) by the call's deadline less a margin, capped by the server's maximum
    max_s: past the client's deadline → DeadlineExceeded, past the server's cap → Overloaded (RESOURCE_EXHAUSTED),
    each naming `what` was slow; a call that ends (client gone, deadline) cancels its SQL at once. A deadline that
    leaves less than MIN_QUERY_S is refused before any SQL. Without a context (at start) only the cap applies."""

    def __init__(self, context=None, what: str = "the analytics query", max_s: float = DEFAULT_MAX_QUERY_S):
        self._context = context
        self.what = what
        self.max_s = max_s
        self.by_deadline = False

    def _limit(self) -> float:
        left = self._context.time_remaining() if self._context is not None else None
        if left is None or left - margin(left) >= self.max_s:
            return self.max_s
        self.by_deadline = True
        limit = left - margin(left)
        if limit < MIN_QUERY_S:
            raise errors.DeadlineExceeded(f"{self.what}: the call's deadline leaves {max(left, 0) * 1000:.0f} ms, "
                                          f"less than the {MIN_QUERY_S * 1000:.0f} ms a database query needs; "
                                          "allow the call more time")
        return limit

    def __enter__(self):
        self._bound = QueryBound(self._limit())
        self._cm = self._run()
        return self._cm.__enter__()

    def __exit__(self, *exc_info):
        return self._cm.__exit__(*exc_info)

    @contextmanager
    def _run(self):
        bound = self._bound
        try:
            with session(), bounded(bound.limit_s, bound):
                if self._context is not None:
                    if not self._context.add_callback(bound.cancel):
                        bound.cancel()  # the call has ended already
                    fault_point(QUERY_FAULT, db_sleep)
                yield self
        except QueryTimeout as exc:
            raise self._timeout(exc) from None
        except DatabaseUnavailable as exc:
            raise errors.StorageUnavailable(f"the prediction database is unavailable; retry later ({exc})") from None
        except RejectedData as exc:
            raise errors.InvalidArgument(f"the database refused a value of this request ({exc})") from None

    def _timeout(self, exc: QueryTimeout) -> errors.PredmeshError:
        took = f"{exc.elapsed_s * 1000:.0f} ms"
        if self._bound.cancelled:
            return errors.DeadlineExceeded(f"{self.what}: the call ended (deadline or client gone) after {took}; "
                                           "its database query was cancelled")
        if self.by_deadline:
            return errors.DeadlineExceeded(
                f"{self.what} is slow: the database query took longer than the {self._bound.limit_s * 1000:.0f} ms "
                "the call's deadline left, and was cancelled; narrow the filter or the time window, or allow the "
                "call more time")
        return errors.Overloaded(
            f"{self.what} is too expensive: the database query took longer than the server's limit of "
            f"{self.max_s:g} s (PREDMESH_ANALYTICS_MAX_SECONDS), and was cancelled; narrow the filter or the time "
            "window")


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    """ListPredictions, GetStats, SubmitFeedback (a second feedback for a prediction overwrites the first). Reads
    are open; writes (SubmitFeedback, SubmitFeedbackBatch, RecordBatchRun) need the writer or admin token."""

    def __init__(self, metrics, auth: TokenAuth, stale_s: float = repo.DEFAULT_STALE_S,
                 max_query_s: float = DEFAULT_MAX_QUERY_S):
        self.metrics = metrics
        self.auth = auth
        self.stale_s = stale_s  # PREDMESH_BATCH_RUN_STALE_S: a RUNNING attempt silent this long is abandoned
        self.max_query_s = max_query_s
        self.batch_runs_loaded = False  # the batch-run gauges were read from the database (the refresher retries)

    def _db(self, context, method: str, flt: repo.PredictionFilter | None = None, paged: bool = False) -> Db:
        """The call's bounded database session; `what` names the call and its filter in a timeout's message."""
        what = method
        if flt is not None:
            what += _described(model=flt.model, model_version=flt.model_version, label=flt.label,
                               transport=flt.transport, request_id=flt.request_id, start_time=_iso(flt.start),
                               end_time=_iso(flt.end),
                               page="after a page token" if paged else "")
        return Db(context, what, self.max_query_s)

    @rpc
    def ListPredictions(self, request, context):
        if request.page_size < 0 or request.page_size > MAX_PAGE:
            raise errors.InvalidArgument(f"page_size {request.page_size} is out of range; use 1..{MAX_PAGE} "
                                         f"(0 means {DEFAULT_PAGE})")
        flt = repo.PredictionFilter(
            model=check_optional_name("model", request.model),
            model_version=check_optional_name("model_version", request.model_version),
            label=check_text("label", request.label, MAX_LABEL),
            transport=transport_name(request.transport),
            start=epoch("start_time", request.start_time, request.HasField("start_time")),
            end=epoch("end_time", request.end_time, request.HasField("end_time")),
            request_id=check_text("request_id", request.request_id, MAX_ID))
        page_token = check_text("page_token", request.page_token, MAX_TOKEN)
        try:
            with self._db(context, "ListPredictions", flt, paged=bool(page_token)):
                rows, token = repo.list_predictions(flt, request.page_size or DEFAULT_PAGE, page_token)
        except repo.InvalidPageToken as exc:
            raise errors.InvalidArgument(str(exc)) from None
        predictions, size = [], 0
        for i, row in enumerate(rows):
            message = self._stored(row)
            size += message.ByteSize()
            if i and size > MAX_PAGE_BYTES:  # cut short: the rest follows with the token (at least one row each)
                token = repo.token_after(rows[i - 1])
                break
            predictions.append(message)
        return analytics_pb2.ListPredictionsResponse(predictions=predictions, next_page_token=token)

    @rpc
    def CountPredictions(self, request, context):
        model = check_name("model", request.model)
        prefix = check_text("request_id_prefix", request.request_id_prefix, MAX_ID, required=True)
        start = epoch("start_time", request.start_time, request.HasField("start_time"))
        with self._db(context, "CountPredictions" + _described(model=model, request_id_prefix=prefix)):
            count = repo.count_by_request_prefix(model, prefix, start)
        return analytics_pb2.CountPredictionsResponse(count=count)

    @staticmethod
    def _stored(row: repo.StoredPrediction) -> analytics_pb2.StoredPrediction:
        r = row.record
        message = analytics_pb2.StoredPrediction(
            prediction=prediction_message(r), transport=transport_value(r.transport),
            created_at=timestamp(r.created_at), feedback_label=row.feedback_label)
        feature_values(message.features, r.features)
        return message

    @rpc
    def GetStats(self, request, context):
        flt = repo.PredictionFilter(model=check_optional_name("model", request.model),
                                    start=epoch("start_time", request.start_time, request.HasField("start_time")),
                                    end=epoch("end_time", request.end_time, request.HasField("end_time")))
        width = request.bucket_seconds
        if width < 0 or width % SERIES_STEP:
            raise errors.InvalidArgument(f"bucket_seconds {width} is not a multiple of {SERIES_STEP}; use 0 (no "
                                         f"series) or a multiple of {SERIES_STEP} (statistics are kept per minute)")
        try:
            with self._db(context, "GetStats", flt):
                stats = repo.stats(flt, width, time.time())
        except repo.TooManyBuckets as exc:
            raise errors.InvalidArgument(f"bucket_seconds {width}: {exc}") from None
        response = analytics_pb2.GetStatsResponse(
            total=stats.total, by_label=stats.by_label, by_version=stats.by_version,
            by_transport=stats.by_transport, latency=_latency(stats.latency_ms),
            quality=[analytics_pb2.VersionQuality(
                model=q.model, model_version=q.model_version, feedback_count=q.feedback_count,
                accuracy=q.accuracy, macro_precision=q.macro_precision, macro_recall=q.macro_recall)
                for q in stats.quality],
            series=[analytics_pb2.StatsBucket(
                start_time=timestamp(b.start), total=b.total, by_label=b.by_label, by_transport=b.by_transport,
                latency=_latency(b.latency_ms),
                latency_by_transport={name: _latency(lat) for name, lat in b.latency_by_transport.items()})
                for b in stats.series],
            window_end=timestamp(min(stats.window_end, MAX_TIMESTAMP_S)))
        if stats.window_start is not None:
            response.window_start.CopyFrom(timestamp(max(stats.window_start, MIN_TIMESTAMP_S)))
        return response

    @rpc
    def SubmitFeedback(self, request, context):
        self.auth.require_writer(context.invocation_metadata())
        if not request.prediction_id:
            raise errors.InvalidArgument("prediction_id is empty; pass the prediction_id Predict returned")
        check_text("prediction_id", request.prediction_id, MAX_ID)
        if not request.label:
            raise errors.InvalidArgument("label is empty; send the true class name")
        check_text("label", request.label, MAX_LABEL)
        with self._db(context, f"SubmitFeedback (prediction {shown(request.prediction_id)})"):
            prediction = repo.get_prediction(request.prediction_id)
            if prediction is None:
                raise errors.PredictionNotFound(f"prediction {shown(request.prediction_id)} not found (it may "
                                                "still be on its way to the database; retry in a moment)")
            classes = sorted(prediction.probabilities)
            if request.label not in prediction.probabilities:
                raise errors.InvalidArgument(f"label {shown(request.label)} is not a class of model "
                                             f"{prediction.model}; use one of {', '.join(classes)}")
            repo.upsert_feedback(request.prediction_id, request.label, time.time())
            self._refresh(prediction.model, prediction.model_version)
        log.info("feedback for prediction %s (model %s@%s): %s", request.prediction_id, prediction.model,
                 prediction.model_version, request.label)
        return analytics_pb2.SubmitFeedbackResponse(prediction_id=request.prediction_id, label=request.label,
                                                    correct=request.label == prediction.label)

    @rpc
    def SubmitFeedbackBatch(self, request, context):
        self.auth.require_writer(context.invocation_metadata())
        count = len(request.items)
        if not count:
            raise errors.InvalidArgument("items is empty; send at least one (prediction_id, label)")
        if count > MAX_FEEDBACK_ITEMS:
            raise errors.InvalidArgument(f"{count} items exceed the limit of {MAX_FEEDBACK_ITEMS} per call; "
                                         "split the request")
        labels: dict[str, str] = {}
        position: dict[str, int] = {}
        for i, item in enumerate(request.items):
            check_text(f"items[{i}].prediction_id", item.prediction_id, MAX_ID, required=True)
            check_text(f"items[{i}].label", item.label, MAX_LABEL, required=True)
            labels[item.prediction_id] = item.label  # named twice: the last label wins
            position[item.prediction_id] = i
        with self._db(context, f"SubmitFeedbackBatch ({count} items)"):
            found = repo.predictions_by_id(list(labels))
            for pid, label in labels.items():
                prediction = found.get(pid)
                if prediction is not None and label not in prediction.probabilities:
                    raise errors.InvalidArgument(
                        f"items[{position[pid]}]: label {shown(label)} is not a class of model {prediction.model}; "
                        f"use one of {', '.join(sorted(prediction.probabilities))} (nothing was recorded)")
            recorded = {pid: label for pid, label in labels.items() if pid in found}
            repo.upsert_feedback_many(recorded, time.time())
            for model, version in sorted({(found[p].model, found[p].model_version) for p in recorded}):
                self._refresh(model, version)
        correct = sum(found[pid].label == label for pid, label in recorded.items())
        not_found = [pid for pid in labels if pid not in found]
        log.info("batch feedback: %d recorded (%d correct), %d not found", len(recorded), correct, len(not_found))
        return analytics_pb2.SubmitFeedbackBatchResponse(recorded=len(recorded), correct=correct,
                                                         not_found=not_found)

    @rpc
    def RecordBatchRun(self, request, context):
        self.auth.require_writer(context.invocation_metadata())
        if not request.HasField("run"):
            raise errors.InvalidArgument("run is missing; send the batch run to record")
        run = _pipeline_run(request.run)
        try:
            with self._db(context, f"RecordBatchRun (run {shown(run.run_key)})"):
                now = time.time()
                if not run.attempt and run.status == "running":  # a new attempt: earlier silent ones are gone
                    repo.mark_abandoned(now, self.stale_s)
                stored, created = repo.record_batch_run(run, now)
        except repo.AttemptNotFound as exc:
            raise errors.NotFound(str(exc)) from None
        except repo.AttemptFinished as exc:
            raise errors.FailedPrecondition(str(exc)) from None
        except repo.AttemptConflict as exc:
            raise errors.Unavailable(str(exc)) from None
        self.metrics.batch_run_seen(stored)
        return analytics_pb2.RecordBatchRunResponse(run=batch_run_message(stored), created=created)

    @rpc
    def ListBatchRuns(self, request, context):
        if request.page_size < 0 or request.page_size > MAX_PAGE:
            raise errors.InvalidArgument(f"page_size {request.page_size} is out of range; use 1..{MAX_PAGE} "
                                         f"(0 means {DEFAULT_PAGE})")
        check_optional_name("model", request.model)
        check_optional_name("kind", request.kind)
        check_text("page_token", request.page_token, MAX_TOKEN)
        check_text("run_key", request.run_key, MAX_RUN_KEY)
        try:
            with self._db(context, "ListBatchRuns" + _described(model=request.model, kind=request.kind,
                                                                 run_key=request.run_key)):
                repo.mark_abandoned(time.time(), self.stale_s)
                runs, token = repo.list_batch_runs(request.model, request.kind, request.page_size or DEFAULT_PAGE,
                                                   request.page_token, request.run_key)
        except repo.InvalidPageToken as exc:
            raise errors.InvalidArgument(str(exc)) from None
        return analytics_pb2.ListBatchRunsResponse(runs=[batch_run_message(r) for r in runs],
                                                   next_page_token=token)

    def _refresh(self, model: str, version: str) -> None:
        for q in repo.version_quality(repo.PredictionFilter(model=model, model_version=version)):
            self.metrics.quality(q)

    def refresh_quality(self) -> None:
        """Set the quality gauges of every model version from stored feedback, and the batch-run gauges from the
        latest runs (at start; outage tolerated: the quality refresher loads what could not be read)."""
        try:
            self.refresh_versions()
            self.refresh_batch_runs()
        except errors.PredmeshError as exc:
            log.warning("feedback quality gauges not loaded at start: %s", exc)

    def refresh_batch_runs(self) -> None:
        """The batch-run gauges from the latest recorded runs, whichever replica recorded them (at start, and by the
        quality refresher until it has succeeded once: a replica started while the database was down exported no
        nightly run at all, so PredmeshNightlyBatchMissing read an older success of another replica). Raises a
        PredmeshError when the database cannot answer."""
        with Db(None, "the batch-run gauges' refresh", self.max_query_s):
            runs = repo.list_batch_runs(page_size=MAX_PAGE)[0]
        for run in runs:
            self.metrics.batch_run_seen(run)
        self.batch_runs_loaded = True

    def refresh_versions(self) -> int:
        """Set the quality gauges of every model version from the confusion counts the database keeps as feedback
        is stored (database.aggregates: a few rows per version and day, whichever replica stored the feedback);
        returns the versions set. Raises a PredmeshError when the database cannot answer."""
        with Db(None, "the quality gauges' refresh", self.max_query_s):
            found = repo.version_quality()
        for q in found:
            self.metrics.quality(q)
        return len(found)


def _iso(epoch_s: float | None) -> str:
    if epoch_s is None:
        return ""
    return timestamp(epoch_s).ToJsonString()


def _described(**fields: str) -> str:
    """" (model=iris, label=setosa)" for the fields that are set; "" when none is (no filter)."""
    shown_fields = [f"{name}={shown(value) if name != 'page' else value}" for name, value in fields.items() if value]
    return f" ({', '.join(shown_fields)})" if shown_fields else " (no filter)"


def _latency(percentiles: tuple[float, float, float]) -> analytics_pb2.LatencySummary:
    p50, p95, p99 = percentiles
    return analytics_pb2.LatencySummary(p50_ms=p50, p95_ms=p95, p99_ms=p99)


def _count(field: str, value: int) -> int:
    if value < 0 or value > MAX_RUN_ROWS:
        raise errors.InvalidArgument(f"run.{field} {value} is out of range; use 0..{MAX_RUN_ROWS}")
    return value


def _pipeline_run(run: analytics_pb2.BatchRun) -> repo.PipelineRun:
    """Validate a BatchRun from a client (every field bounded; nothing the database would refuse)."""
    check_text("run.run_key", run.run_key, MAX_RUN_KEY, required=True)
    check_name("run.kind", run.kind)
    check_name("run.model", run.model)
    check_optional_name("run.model_version", run.model_version)
    if run.run_date:
        try:
            if not _DAY.fullmatch(run.run_date):
                raise ValueError
            date.fromisoformat(run.run_date)
        except ValueError:
            raise errors.InvalidArgument(f"run.run_date {shown(run.run_date)} is not a date; use YYYY-MM-DD") \
                from None
    if run.status not in RUN_STATUS:
        raise errors.InvalidArgument(f"run.status {run.status} is not a status a client records; use RUNNING, "
                                     "SUCCEEDED or FAILED (ABANDONED is set by the server)")
    accuracy = None
    if run.HasField("accuracy"):
        accuracy = run.accuracy
        if not 0.0 <= accuracy <= 1.0:  # also refuses NaN
            raise errors.InvalidArgument(f"run.accuracy {accuracy!r} is out of range; use 0..1 or leave it unset")
    if not (math.isfinite(run.duration_seconds) and 0.0 <= run.duration_seconds <= 1e9):
        raise errors.InvalidArgument(f"run.duration_seconds {run.duration_seconds!r} is out of range; use 0..1e9")
    check_text("run.message", run.message, MAX_RUN_MESSAGE)
    check_text("run.input", run.input, MAX_RUN_INPUT)
    if run.attempt < 0:
        raise errors.InvalidArgument(f"run.attempt {run.attempt} is out of range; use 0 (a new attempt, or finish "
                                     "the latest running one) or an attempt number from 1")
    started = 0.0
    if run.HasField("started_at"):
        started = epoch("run.started_at", run.started_at, True)
        if not 0 < started < MAX_EPOCH:
            raise errors.InvalidArgument("run.started_at is out of range; use a time between 1970 and 2100")
    return repo.PipelineRun(
        run_key=run.run_key, kind=run.kind, run_date=run.run_date, model=run.model, model_version=run.model_version,
        rows=_count("rows", run.rows), rejected=_count("rejected", run.rejected), accuracy=accuracy,
        duration_s=run.duration_seconds, status=RUN_STATUS[run.status], message=run.message, started_at=started,
        attempt=run.attempt, input=run.input)


def batch_run_message(run: repo.PipelineRun) -> analytics_pb2.BatchRun:
    message = analytics_pb2.BatchRun(
        run_key=run.run_key, kind=run.kind, run_date=run.run_date, model=run.model,
        model_version=run.model_version, rows=run.rows, rejected=run.rejected, duration_seconds=run.duration_s,
        status=RUN_STATUS_VALUE.get(run.status, analytics_pb2.BATCH_RUN_STATUS_UNSPECIFIED), message=run.message,
        started_at=timestamp(run.started_at), updated_at=timestamp(run.updated_at), attempt=run.attempt,
        input=run.input)
    if run.finished_at:
        message.finished_at.CopyFrom(timestamp(run.finished_at))
    if run.accuracy is not None:
        message.accuracy = run.accuracy
    return message
