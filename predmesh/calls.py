"""Every unary call of the contract, defined once: its request and how its response becomes a typed result.

`Client` (blocking) and `AsyncClient` (asyncio) both expose these functions as methods, so the two clients have
the same surface, defaults and conversions; only how a `Call` is executed differs.
"""
from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from grpc_health.v1 import health_pb2

from predmesh.errors import BadArgument, from_status
from predmesh.types import (
    BatchRun,
    CanaryCriteria,
    DesiredState,
    Feedback,
    FeedbackBatch,
    ModelInfo,
    Page,
    Prediction,
    RecordedRun,
    ReloadResult,
    ScoredMatrix,
    Stats,
    StoredPrediction,
    StreamResult,
    batch_run_status_value,
    set_row_numbers,
    to_timestamp,
    transport_value,
)
from predmesh.v1 import admin_pb2, analytics_pb2, inference_pb2
from predmesh.values import Features, fill

T = TypeVar("T")
# A row: its features by name (each a number, a string for a category, a bool, or None for missing), or a
# (features, request_id) pair.
Row = Features | tuple[Features, str]


@dataclass(frozen=True)
class Call(Generic[T]):
    """One RPC to make: which stub and method, the request, how to convert the answer, and its deadline."""

    service: str  # "inference" | "admin" | "analytics"
    method: str
    request: Any
    convert: Callable[[Any], T]
    timeout: float | None = None  # None: the client's default
    writes: bool = False  # writes monitoring data: sent with the writer token (or the admin token)


def method_signature(op: Callable[..., Call[Any]], *, awaitable: bool) -> inspect.Signature:
    """The signature a client method made from `op` shows in help(): self first, returning what the Call gives."""
    sig = inspect.signature(op)
    result = str(sig.return_annotation).removeprefix("Call[").removesuffix("]")
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    return sig.replace(parameters=[self_param, *sig.parameters.values()],
                       return_annotation=f"Awaitable[{result}]" if awaitable else result)


def row(r: Row, where: str = "features") -> inference_pb2.FeatureRow:
    """A row given as a features mapping or a (features, request_id) pair."""
    features, request_id = r if isinstance(r, tuple) else (r, "")
    out = inference_pb2.FeatureRow(request_id=request_id)
    fill(out.features, features, where)
    return out


# -- health (grpc.health.v1) --------------------------------------------------------------------------------------
def check_health(service: str = "", *, timeout: float | None = None) -> Call[str]:
    """The server's health ("SERVING", "NOT_SERVING", …) overall, or of one service (e.g. predmesh.v1.InferenceService);
    an unreachable server raises Unavailable."""
    request = health_pb2.HealthCheckRequest(service=service)
    return Call("health", "Check", request, lambda r: health_pb2.HealthCheckResponse.ServingStatus.Name(r.status),
                timeout)


# -- inference ---------------------------------------------------------------------------------------------------
def predict(model: str, features: Features, *, request_id: str = "",
            timeout: float | None = None) -> Call[Prediction]:
    """Score one row of named features (a number, a string for a category, a bool, or None for a missing value:
    {"tenure": 1, "contract": "Month-to-month", "total_charges": None}); request_id makes a retry idempotent
    (stored once). A value of any other type is BadArgument naming the feature."""
    request = inference_pb2.PredictRequest(model=model, request_id=request_id)
    fill(request.features, features)
    return Call("inference", "Predict", request, lambda r: Prediction.from_proto(r.prediction), timeout)


def _batch_request(model: str, rows: Sequence[Row], partial_success: bool) -> inference_pb2.PredictBatchRequest:
    request = inference_pb2.PredictBatchRequest(model=model, partial_success=partial_success)
    add = request.rows.add  # in place: ~2x cheaper per row than building FeatureRows and copying them in
    for i, r in enumerate(rows):
        if isinstance(r, tuple):
            fill(add(request_id=r[1]).features, r[0], f"rows[{i}]")
        else:
            fill(add().features, r, f"rows[{i}]")
    return request


def predict_batch(model: str, rows: Sequence[Row], *, timeout: float | None = None) -> Call[list[Prediction]]:
    """Score many rows (at most the server's max batch rows) in one call; answers in row order. One refused row
    refuses the call (InvalidArgument naming the row); predict_each answers each row on its own instead."""
    return Call("inference", "PredictBatch", _batch_request(model, rows, False),
                lambda r: [Prediction.from_proto(p) for p in r.predictions], timeout)


def predict_each(model: str, rows: Sequence[Row], *, timeout: float | None = None) -> Call[list[StreamResult]]:
    """Score many rows (at most ModelInfo.limits.max_batch_rows) in one call, each row answered on its own: one
    StreamResult per row, in row order, holding its prediction or the error that refused it (a PredmeshError,
    not raised); the other rows are scored and stored. Problems of the call itself (unknown model, too many rows,
    message too large) still raise."""
    return Call("inference", "PredictBatch", _batch_request(model, rows, True),
                lambda r: [batch_row_result(m) for m in r.results], timeout)


def batch_row_result(m: inference_pb2.BatchRowResult) -> StreamResult:
    """One row's answer of predict_each as a typed result (its error as a PredmeshError, not raised)."""
    if m.HasField("prediction"):
        return StreamResult(m.request_id, Prediction.from_proto(m.prediction), None, m)
    return StreamResult(m.request_id, None, from_status(m.error.code, m.error.message), m)


def predict_matrix(model: str, feature_names: Sequence[str], values: Iterable[float], *,
                   string_columns: Mapping[str, Sequence[str | None]] | None = None, request_id_prefix: str = "",
                   row_numbers: Sequence[int] = (), partial_success: bool = False, new_keys: bool = False,
                   timeout: float | None = None) -> Call[ScoredMatrix]:
    """Score many rows given in columns (the bulk form of predict_batch, at most the server's max batch rows):
    the number and boolean features in feature_names once and values row-major (len(feature_names) per row, a flat
    list or 1-D numpy array of floats; a boolean 1.0 or 0.0, NaN for a missing value), each categorical feature in
    string_columns as one column of str (None for a missing value). Row r's request_id is request_id_prefix +
    str(row_numbers[r]) (idempotent: a retry stores nothing twice); without a prefix the server generates fresh ids.
    The answer is in columns too (ScoredMatrix). With partial_success a refused row (a value the model cannot take)
    is answered in ScoredMatrix.errors and the others are scored; without it, it refuses the call. new_keys (with a
    prefix): the caller's word that none of these request ids was sent before, so the server does not look them up
    among the stored predictions (FeatureMatrix.new_keys; set it only on a first send, never when retrying a call)."""
    request = inference_pb2.PredictBatchRequest(model=model, partial_success=partial_success)
    matrix = request.matrix
    matrix.feature_names.extend(feature_names)
    add_values(matrix, values)
    for name, column in (string_columns or {}).items():
        add_string_column(matrix, name, column)
    matrix.request_id_prefix = request_id_prefix
    matrix.new_keys = new_keys
    set_row_numbers(matrix.row_numbers, row_numbers)
    return Call("inference", "PredictBatch", request, lambda r: ScoredMatrix.from_proto(r.matrix), timeout)


def add_values(matrix: inference_pb2.FeatureMatrix, values: Iterable[float]) -> None:
    """The number and boolean values of a FeatureMatrix (row-major); BadArgument naming the row and feature of a
    value that is not a number (protobuf's own TypeError names neither; a 2-D array gives one array a row)."""
    if isinstance(values, Iterator):  # read once: kept, so that a refused value can be found again
        values = list(values)
    try:
        matrix.values.extend(values)
        return
    except (TypeError, ValueError, OverflowError):
        pass
    if not isinstance(values, Iterable):
        raise BadArgument(f"values is {type(values).__name__}; send a flat, row-major sequence of numbers") from None
    names, one = matrix.feature_names, inference_pb2.FeatureMatrix().values
    for i, value in enumerate(values):
        try:
            one.append(value)  # protobuf's own rule for a double
        except (TypeError, ValueError, OverflowError):
            where = f"values[{i}]" + (f" (row {i // len(names)}, feature {names[i % len(names)]!r})" if names else "")
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:80] + "…"
            raise BadArgument(f"{where} is {shown} ({type(value).__name__}); send numbers, flat and row-major (a "
                              "boolean as 1.0/0.0, math.nan for missing; a category goes in string_columns)") from None
    raise BadArgument("values: send a flat, row-major sequence of numbers")  # not reached: extend failed on one


def add_string_column(matrix: inference_pb2.FeatureMatrix, name: str, column: Sequence[str | None]) -> None:
    """One categorical column of a FeatureMatrix: its strings, None as a missing row; BadArgument naming the feature
    and row of a value that is neither."""
    texts: list[str] = []
    missing: list[int] = []
    for i, value in enumerate(column):
        if isinstance(value, str):
            texts.append(value)
        elif value is None:
            texts.append("")
            missing.append(i)
        else:
            raise BadArgument(f"string_columns[{name!r}][{i}] is {value!r}; send a string (a category) or None "
                              "(missing)")
    out = matrix.string_columns.add(name=name)
    out.values.extend(texts)
    out.missing_rows.extend(missing)


def list_models(*, timeout: float | None = None) -> Call[list[ModelInfo]]:
    """The serving version of every model."""
    return Call("inference", "ListModels", inference_pb2.ListModelsRequest(),
                lambda r: [ModelInfo.from_proto(m) for m in r.models], timeout)


def get_model(model: str, *, timeout: float | None = None) -> Call[ModelInfo]:
    """The serving version of one model: schema, classes, metrics and training distribution."""
    return Call("inference", "GetModel", inference_pb2.GetModelRequest(model=model),
                lambda r: ModelInfo.from_proto(r.model), timeout)


def stream_request(model: str, r: Row, request_id: str, where: str = "features") -> inference_pb2.PredictStreamRequest:
    """One row of a prediction stream."""
    features, own_id = r if isinstance(r, tuple) else (r, "")
    out = inference_pb2.PredictStreamRequest(model=model, request_id=own_id or request_id)
    fill(out.features, features, where)
    return out


class StreamRows:
    """The requests of a prediction stream, made from the caller's rows as gRPC pulls them (rows may be a generator,
    endless). Rows without a request_id get a fresh one so answers can be matched. An exception raised making them
    (BadArgument naming the row, or the caller's own iterator failing) is kept in `error` for the client to raise:
    gRPC would only cancel the call ("Exception iterating requests!", or CancelledError on asyncio)."""

    def __init__(self, model: str, rows: Iterable[Row]):
        self.model = model
        self.rows = rows
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[inference_pb2.PredictStreamRequest]:
        try:
            for i, r in enumerate(self.rows):
                yield stream_request(self.model, r, str(uuid.uuid4()), f"rows[{i}]")
        except Exception as exc:
            self.error = exc
            raise


def stream_result(m: inference_pb2.PredictStreamResponse) -> StreamResult:
    """One answer of a prediction stream as a typed result (a row's error as a PredmeshError, not raised)."""
    if m.HasField("prediction"):
        return StreamResult(m.request_id, Prediction.from_proto(m.prediction), None, m)
    return StreamResult(m.request_id, None, from_status(m.error.code, m.error.message), m)


# -- admin (needs the admin token; listing versions also accepts the read-only token) -----------------------------
def reload_model(model: str, version: str = "", *, timeout: float | None = None) -> Call[ReloadResult]:
    """Roll a model to a stored version (newest when empty), verified before it serves."""
    request = admin_pb2.ReloadModelRequest(model=model, version=version)
    return Call("admin", "ReloadModel", request,
                lambda r: ReloadResult(ModelInfo.from_proto(r.model), r.previous_version, r), timeout)


def list_model_versions(model: str, *, timeout: float | None = None) -> Call[list[ModelInfo]]:
    """Every stored version of a model, newest first (`serving` marks the one serving)."""
    return Call("admin", "ListModelVersions", admin_pb2.ListModelVersionsRequest(model=model),
                lambda r: [ModelInfo.from_proto(m) for m in r.versions], timeout)


def rollout_model(model: str, version: str, *, reason: str = "", changed_by: str = "", candidate: str = "",
                  candidate_share: float = 0.0, canary: CanaryCriteria | None = None,
                  timeout: float | None = None) -> Call[DesiredState]:
    """Make a stored version the one every replica serves: verified on the replica that answers, recorded in the
    shared database, applied by the others within their poll interval. With a candidate: a canary, candidate_share
    of the calls going to it; with canary criteria it is promoted or rolled back automatically."""
    request = admin_pb2.RolloutModelRequest(model=model, version=version, reason=reason, changed_by=changed_by,
                                            candidate=candidate, candidate_share=candidate_share,
                                            canary=canary.to_proto() if canary is not None else None)
    return Call("admin", "RolloutModel", request, DesiredState.from_proto, timeout)


def pin_model(model: str, version: str, *, reason: str = "", changed_by: str = "",
              timeout: float | None = None) -> Call[DesiredState]:
    """Like rollout_model, and marks the version as pinned (held on purpose)."""
    request = admin_pb2.PinModelRequest(model=model, version=version, reason=reason, changed_by=changed_by)
    return Call("admin", "PinModel", request, DesiredState.from_proto, timeout)


def rollback_model(model: str, *, reason: str = "", changed_by: str = "",
                   timeout: float | None = None) -> Call[DesiredState]:
    """Every replica back to the version that served before the current desired one (from the recorded history)."""
    request = admin_pb2.RollbackModelRequest(model=model, reason=reason, changed_by=changed_by)
    return Call("admin", "RollbackModel", request, DesiredState.from_proto, timeout)


def get_desired_state(model: str, *, timeout: float | None = None) -> Call[DesiredState]:
    """The fleet's desired state of a model, and the version the answering replica serves."""
    return Call("admin", "GetDesiredState", admin_pb2.GetDesiredStateRequest(model=model), DesiredState.from_proto,
                timeout)


# -- analytics (reads are open; submit_feedback, submit_feedback_batch and record_batch_run need the writer token,
# or the admin token) ---------------------------------------------------------------------------------------------
def list_predictions(*, model: str = "", model_version: str = "", label: str = "", transport: str = "",
                     start_time: datetime | None = None, end_time: datetime | None = None, page_size: int = 50,
                     page_token: str = "", request_id: str = "",
                     timeout: float | None = None) -> Call[Page[StoredPrediction]]:
    """One page of stored predictions, newest first; empty filters do not filter (page_size at most 1000);
    request_id finds the prediction stored under that idempotency key (exact match)."""
    request = analytics_pb2.ListPredictionsRequest(
        model=model, model_version=model_version, label=label, transport=transport_value(transport),
        start_time=to_timestamp(start_time, "start_time"), end_time=to_timestamp(end_time, "end_time"),
        page_size=page_size, page_token=page_token, request_id=request_id)
    return Call("analytics", "ListPredictions", request,
                lambda r: Page(tuple(StoredPrediction.from_proto(p) for p in r.predictions), r.next_page_token, r),
                timeout)


def count_predictions(model: str, request_id_prefix: str, *, start_time: datetime | None = None,
                      timeout: float | None = None) -> Call[int]:
    """How many stored predictions of model have a request id starting with request_id_prefix (created at or
    after start_time when given): whether rows sent with known request ids are queryable, without listing them."""
    request = analytics_pb2.CountPredictionsRequest(model=model, request_id_prefix=request_id_prefix,
                                                    start_time=to_timestamp(start_time, "start_time"))
    return Call("analytics", "CountPredictions", request, lambda r: r.count, timeout)


def get_stats(*, model: str = "", start_time: datetime | None = None, end_time: datetime | None = None,
              bucket_seconds: int = 0, timeout: float | None = None) -> Call[Stats]:
    """Counts per label, version and transport, latency percentiles and quality per version over a window (its
    edges rounded out to whole minutes); bucket_seconds (a multiple of 60, at most 2000 buckets) adds the series
    of the window's buckets of that width in `Stats.series`."""
    request = analytics_pb2.GetStatsRequest(model=model, start_time=to_timestamp(start_time, "start_time"),
                                            end_time=to_timestamp(end_time, "end_time"), bucket_seconds=bucket_seconds)
    return Call("analytics", "GetStats", request, Stats.from_proto, timeout)


def submit_feedback(prediction_id: str, label: str, *, timeout: float | None = None) -> Call[Feedback]:
    """Record the true label of a stored prediction (a second submission replaces the first)."""
    request = analytics_pb2.SubmitFeedbackRequest(prediction_id=prediction_id, label=label)
    return Call("analytics", "SubmitFeedback", request,
                lambda r: Feedback(r.prediction_id, r.label, r.correct, r), timeout, writes=True)


def submit_feedback_batch(labels: Mapping[str, str] | Sequence[tuple[str, str]], *,
                          timeout: float | None = None) -> Call[FeedbackBatch]:
    """Record many true labels at once ({prediction_id: label} or (prediction_id, label) pairs; at most 1000).

    Predictions not stored yet come back in `not_found` with nothing recorded for them: retry those a moment
    later. A label that is not a class of its prediction's model refuses the whole call (InvalidArgument)."""
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    request = analytics_pb2.SubmitFeedbackBatchRequest(
        items=[analytics_pb2.FeedbackItem(prediction_id=pid, label=label) for pid, label in pairs])
    return Call("analytics", "SubmitFeedbackBatch", request,
                lambda r: FeedbackBatch(r.recorded, r.correct, tuple(r.not_found), r), timeout, writes=True)


def record_batch_run(run_key: str, *, kind: str, model: str, status: str, run_date: str = "",
                     model_version: str = "", rows: int = 0, rejected: int = 0, accuracy: float | None = None,
                     duration_seconds: float = 0.0, message: str = "", started_at: datetime | None = None,
                     attempt: int = 0, input: str = "", timeout: float | None = None) -> Call[RecordedRun]:
    """Record one attempt of a batch run (status "running", "succeeded" or "failed"); every attempt is kept.

    "running" with attempt 0 starts a new attempt (the result's run.attempt is its number); a record with that
    attempt updates it, and "succeeded" / "failed" finishes it (a finished attempt is never changed:
    FailedPrecondition). "succeeded" / "failed" with attempt 0 finishes the key's latest running attempt, or
    records a new finished one. input names what the attempt read (e.g. the file scored); started_at defaults to
    the start's time."""
    run = analytics_pb2.BatchRun(
        run_key=run_key, kind=kind, run_date=run_date, model=model, model_version=model_version, rows=rows,
        rejected=rejected, duration_seconds=duration_seconds, status=batch_run_status_value(status),
        message=message, started_at=to_timestamp(started_at, "started_at"), attempt=attempt, input=input)
    if accuracy is not None:
        run.accuracy = accuracy
    return Call("analytics", "RecordBatchRun", analytics_pb2.RecordBatchRunRequest(run=run),
                lambda r: RecordedRun(BatchRun.from_proto(r.run), r.created, r), timeout, writes=True)


def list_batch_runs(*, model: str = "", kind: str = "", page_size: int = 50, page_token: str = "",
                    run_key: str = "", timeout: float | None = None) -> Call[Page[BatchRun]]:
    """One page of recorded batch run attempts (every attempt of every key), newest first; empty filters do not
    filter (page_size at most 1000)."""
    request = analytics_pb2.ListBatchRunsRequest(model=model, kind=kind, page_size=page_size, page_token=page_token,
                                                 run_key=run_key)
    return Call("analytics", "ListBatchRuns", request,
                lambda r: Page(tuple(BatchRun.from_proto(b) for b in r.runs), r.next_page_token, r), timeout)
