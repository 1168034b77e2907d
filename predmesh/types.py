"""Plain, typed results of the SDK: frozen dataclasses built from the contract's messages (each keeps `.raw`)."""
from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from google.protobuf.timestamp_pb2 import Timestamp

from predmesh.errors import BadArgument, PredmeshError, from_status
from predmesh.v1 import analytics_pb2, inference_pb2, model_pb2
from predmesh.values import PlainValue, decode_all
from predmesh.values import features_refused as features_refused  # re-exported: where it always lived

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedScalarFieldContainer
    from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

T = TypeVar("T")


def _raw() -> Any:
    """The protobuf message a result was built from: for callers who want every field as sent."""
    return field(default=None, repr=False, compare=False)


def to_datetime(ts: Timestamp) -> datetime | None:
    """A protobuf Timestamp as an aware UTC datetime; None when unset."""
    if not ts.seconds and not ts.nanos:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def to_timestamp(when: datetime | None, what: str = "time") -> Timestamp | None:
    """An aware datetime (naive ones are taken as UTC) as a protobuf Timestamp; None stays None; anything else (an
    epoch float, a date, a string) is BadArgument naming the argument `what`."""
    if when is None:
        return None
    if not isinstance(when, datetime):
        raise BadArgument(f"{what} is {when!r} ({type(when).__name__}); send a datetime (a naive one is taken as "
                          "UTC)")
    ts = Timestamp()
    ts.FromDatetime(when if when.tzinfo else when.replace(tzinfo=UTC))
    return ts


def short_name(enum: EnumTypeWrapper, prefix: str, value: int) -> str:
    """An enum value as its short lower-case name (TRANSPORT_REST → "rest"); "" when unspecified (0)."""
    return enum.Name(value).removeprefix(prefix).lower() if value else ""


def enum_value(enum: EnumTypeWrapper, prefix: str, what: str, name: str, allowed: tuple[str, ...]) -> int:
    """A short name in any case ("rest", "REST") or the enum's own name ("TRANSPORT_REST") as its enum value;
    BadArgument naming the allowed ones for anything else."""
    short = name.upper().removeprefix(prefix).lower()
    if short not in allowed:
        raise BadArgument(f"{what} {name!r} is not one of {', '.join(allowed)}")
    return enum.Value(prefix + short.upper())


def transport_name(value: int) -> str:
    """The Transport enum as its short name ("grpc", "rest", …); "" when unspecified."""
    return short_name(model_pb2.Transport, "TRANSPORT_", value)


# The short transport names ("grpc", "rest", "queue", "batch", "ui") in the contract's order: derived from its
# Transport enum, the one list every part uses (server, SDK, dashboard).
# (dict.fromkeys: the enum also has short aliases, GRPC = TRANSPORT_GRPC, …, whose values repeat)
TRANSPORTS = tuple(dict.fromkeys(transport_name(value) for value in model_pb2.Transport.values() if value))


def transport_value(name: str) -> model_pb2.Transport:
    """A transport name ("rest", "REST" or "TRANSPORT_REST") as the Transport enum ("" is TRANSPORT_UNSPECIFIED)."""
    value = enum_value(model_pb2.Transport, "TRANSPORT_", "transport", name, TRANSPORTS) if name else 0
    # The generated stubs type an enum as its own int subclass; at run time the wrapper's values are plain ints.
    return cast(model_pb2.Transport, value)


def set_row_numbers(field: RepeatedScalarFieldContainer[int], row_numbers: Sequence[int]) -> None:
    """Extend a repeated uint64 field with predict_matrix's row numbers; BadArgument naming the first that is not a
    whole number from 0 to 2**64 - 1 (protobuf's own ValueError/TypeError only on that path: no cost otherwise)."""
    try:
        field.extend(row_numbers)
    except (TypeError, ValueError):
        for i, n in enumerate(row_numbers):
            try:
                ok = 0 <= operator.index(n) < 2 ** 64
            except TypeError:
                ok = False
            if not ok:
                raise BadArgument(f"row_numbers[{i}] is {n!r}; send a whole number from 0 to 2**64 - 1") from None
        raise


@dataclass(frozen=True)
class Prediction:
    """One scored row as the server answered it."""

    prediction_id: str
    request_id: str
    model: str
    model_version: str
    label: str
    probabilities: dict[str, float]
    latency_ms: float
    raw: model_pb2.Prediction = _raw()

    @classmethod
    def from_proto(cls, m: model_pb2.Prediction) -> Prediction:
        return cls(m.prediction_id, m.request_id, m.model, m.model_version, m.label, dict(m.probabilities),
                   m.latency_ms, m)


@dataclass(frozen=True)
class ScoredMatrix:
    """The answer to predict_matrix: many scored rows in columns (plain sequences, row order), no object per row.

    With partial_success, `errors` maps the index of each refused row to its error (a PredmeshError, not raised);
    a refused row keeps its place in the columns with label 0, zero probabilities and an empty prediction id."""

    model: str
    model_version: str
    classes: tuple[str, ...]
    labels: Sequence[int]  # per row, the index of its label in classes
    probabilities: Sequence[float]  # row-major: row r's probability of classes[c] is [r * len(classes) + c]
    prediction_ids: Sequence[str]
    latency_ms: float  # server-side handling time of the call
    raw: inference_pb2.PredictionMatrix = _raw()
    errors: Mapping[int, PredmeshError] = field(default_factory=dict)  # refused row index → its error

    def __len__(self) -> int:
        return len(self.prediction_ids)

    def __reduce__(self) -> tuple[Any, ...]:
        # the columns are views of `raw` (protobuf repeated fields, which refuse to pickle): a copy, pickled or sent
        # to another process, is rebuilt from the message
        return ScoredMatrix.from_proto, (self.raw,)

    @classmethod
    def from_proto(cls, m: inference_pb2.PredictionMatrix) -> ScoredMatrix:
        errors = {e.row: from_status(e.error.code, e.error.message) for e in m.row_errors}
        return cls(m.model, m.model_version, tuple(m.classes), m.labels, m.probabilities, m.prediction_ids,
                   m.latency_ms, m, errors)


FEATURE_KINDS = ("number", "category", "boolean")


@dataclass(frozen=True)
class FeatureSpec:
    """One input feature with its training distribution: what a value is (kind), for numbers the range, mean, std
    and decile edges, for categories and booleans the values seen with their shares, and the missing share."""

    name: str
    min: float
    max: float
    mean: float
    std: float
    quantiles: tuple[float, ...]
    kind: str = "number"  # "number" (send a number), "category" (send a string) or "boolean" (send a bool)
    categories: tuple[tuple[str, float], ...] = ()  # (value, share of the rows with a value), most common first
    missing_share: float = 0.0  # share of the training rows in which it was missing
    nullable: bool = False  # whether None (a missing value) is accepted
    accepts_unknown: bool = False  # whether a category not seen in training is scored (else refused)

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(value for value, _ in self.categories)

    @classmethod
    def from_proto(cls, m: model_pb2.FeatureSpec) -> FeatureSpec:
        kind = short_name(model_pb2.FeatureKind, "FEATURE_KIND_", m.kind) or "number"
        return cls(m.name, m.min, m.max, m.mean, m.std, tuple(m.quantiles), kind,
                   tuple((c.value, c.share) for c in m.categories), m.missing_share, m.nullable, m.accepts_unknown)


@dataclass(frozen=True)
class ClassProfile:
    """The training rows of one class: share, and per-feature mean and std in schema order."""

    label: str
    share: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_proto(cls, m: model_pb2.ClassProfile) -> ClassProfile:
        return cls(m.label, m.share, tuple(m.mean), tuple(m.std))


@dataclass(frozen=True)
class CallLimits:
    """What one call to the serving server may carry (ModelInfo.limits); 0 when the server did not say."""

    max_batch_rows: int  # rows per predict_batch / predict_each / predict_matrix call
    max_request_bytes: int  # size of the serialized request message
    max_request_id_length: int  # characters of a request_id (and of a request_id_prefix plus row number)

    @classmethod
    def from_proto(cls, m: model_pb2.CallLimits) -> CallLimits:
        return cls(m.max_batch_rows, m.max_request_bytes, m.max_request_id_length)


@dataclass(frozen=True)
class ModelInfo:
    """A model version: schema, classes, artifact hash, training metrics and distribution."""

    name: str
    version: str
    features: tuple[FeatureSpec, ...]
    classes: tuple[str, ...]
    sha256: str
    metrics: dict[str, float]
    created_at: datetime | None
    sklearn_version: str
    estimator: str
    serving: bool
    class_profiles: tuple[ClassProfile, ...]
    raw: model_pb2.ModelInfo = _raw()
    limits: CallLimits = CallLimits(0, 0, 0)  # the serving server's limits per call (from get_model/list_models)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @classmethod
    def from_proto(cls, m: model_pb2.ModelInfo) -> ModelInfo:
        return cls(m.name, m.version, tuple(FeatureSpec.from_proto(f) for f in m.features), tuple(m.classes),
                   m.sha256, dict(m.metrics), to_datetime(m.created_at), m.sklearn_version, m.estimator, m.serving,
                   tuple(ClassProfile.from_proto(c) for c in m.class_profiles), m,
                   CallLimits.from_proto(m.limits))


@dataclass(frozen=True)
class StreamResult:
    """The answer to one row answered on its own (a streamed row, or a row of predict_each): its prediction, or
    the error for that row alone."""

    request_id: str
    prediction: Prediction | None
    error: PredmeshError | None
    raw: Any = _raw()


@dataclass(frozen=True)
class ReloadResult:
    """The version now serving after a reload, and the one it replaced ("" if none)."""

    model: ModelInfo
    previous_version: str
    raw: Any = _raw()


@dataclass(frozen=True)
class CanaryCriteria:
    """A canary's window and checks (see docs/models.md, "Canary rollouts"); None: that check is off.
    window_s 0: no automatic decision."""

    window_s: float
    min_feedback: int = 20
    min_requests: int = 20
    max_accuracy_drop: float | None = None
    max_error_rate: float | None = None
    max_p99_ratio: float | None = None
    min_agreement: float | None = None

    _CHECKS = ("max_accuracy_drop", "max_error_rate", "max_p99_ratio", "min_agreement")

    def to_proto(self) -> model_pb2.CanaryCriteria:
        out = model_pb2.CanaryCriteria(window_seconds=self.window_s, min_feedback=self.min_feedback,
                                       min_requests=self.min_requests)
        for name in self._CHECKS:
            if getattr(self, name) is not None:
                setattr(out, name, getattr(self, name))
        return out

    @classmethod
    def from_proto(cls, m: Any) -> CanaryCriteria:
        return cls(m.window_seconds, m.min_feedback, m.min_requests,
                   *(getattr(m, name) if m.HasField(name) else None for name in cls._CHECKS))


@dataclass(frozen=True)
class CanarySide:
    """One side of a canary: answered rows, calls and errors, feedback and accuracy (None: no feedback), latency."""

    version: str
    requests: int
    calls: int
    errors: int
    error_rate: float
    feedback: int
    accuracy: float | None
    p50_ms: float
    p99_ms: float

    @classmethod
    def from_proto(cls, m: Any) -> CanarySide:
        return cls(m.version, m.requests, m.calls, m.errors, m.error_rate, m.feedback,
                   m.accuracy if m.HasField("accuracy") else None, m.p50_ms, m.p99_ms)


@dataclass(frozen=True)
class CanaryRun:
    """A canary of a model: status running, promoted, rolled_back or ended; its figures now (running) or at its
    decision, and the decision's summary."""

    id: int
    baseline: str
    candidate: str
    share: float
    criteria: CanaryCriteria
    status: str
    started_at: datetime | None
    started_by: str
    decided_at: datetime | None
    decided_by: str
    summary: str
    serving: CanarySide
    candidate_side: CanarySide
    compared: int
    agreed: int
    elapsed_s: float
    raw: Any = _raw()

    @classmethod
    def from_proto(cls, m: Any) -> CanaryRun:
        return cls(m.id, m.baseline, m.candidate, m.share, CanaryCriteria.from_proto(m.criteria), m.status,
                   to_datetime(m.started_at), m.started_by, to_datetime(m.decided_at), m.decided_by, m.summary,
                   CanarySide.from_proto(m.serving), CanarySide.from_proto(m.candidate_side), m.compared, m.agreed,
                   m.elapsed_seconds, m)


@dataclass(frozen=True)
class DesiredState:
    """The version of a model every replica of the fleet serves (rollout, pin, rollback), and what the replica that
    answered serves. version "": none recorded (each replica serves its newest stored version)."""

    model: str
    version: str
    pinned: bool
    serving_version: str
    previous_version: str = ""      # the version a change replaced (changes only)
    candidate: str = ""             # a canary candidate taking candidate_share of the calls ("": none)
    candidate_share: float = 0.0
    updated_at: datetime | None = None
    updated_by: str = ""
    reason: str = ""
    raw: Any = _raw()
    canaries: tuple[CanaryRun, ...] = ()  # the newest canaries, newest first (get_desired_state only)

    @classmethod
    def from_proto(cls, m: Any) -> DesiredState:
        """From any of RolloutModelResponse, PinModelResponse, RollbackModelResponse, GetDesiredStateResponse."""
        d = m.desired
        return cls(d.model, d.version, d.pinned, m.serving_version, getattr(m, "previous_version", ""),
                   d.candidate, d.candidate_share, to_datetime(d.updated_at) if d.version else None, d.updated_by,
                   d.reason, m, tuple(CanaryRun.from_proto(c) for c in getattr(m, "canaries", ())))


@dataclass(frozen=True)
class StoredPrediction:
    """A stored prediction with its inputs, transport, time and any feedback."""

    prediction: Prediction
    features: dict[str, PlainValue]  # as sent: float, str (category), bool or None (missing)
    transport: str
    created_at: datetime | None
    feedback_label: str
    raw: Any = _raw()

    @classmethod
    def from_proto(cls, m: analytics_pb2.StoredPrediction) -> StoredPrediction:
        return cls(Prediction.from_proto(m.prediction), decode_all(m.features), transport_name(m.transport),
                   to_datetime(m.created_at), m.feedback_label, m)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results; iterate it, and pass next_page_token for the next ("" on the last page)."""

    items: tuple[T, ...]
    next_page_token: str
    raw: Any = _raw()

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class LatencySummary:
    """Server-side latency percentiles in milliseconds."""

    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class VersionQuality:
    """Quality of one model version from feedback."""

    model: str
    model_version: str
    feedback_count: int
    accuracy: float
    macro_precision: float
    macro_recall: float


def _latency(m: analytics_pb2.LatencySummary) -> LatencySummary:
    return LatencySummary(m.p50_ms, m.p95_ms, m.p99_ms)


@dataclass(frozen=True)
class StatsBucket:
    """One time bucket of a GetStats series: counts and latency percentiles of the predictions made in it."""

    start: datetime | None
    total: int
    by_label: dict[str, int]
    by_transport: dict[str, int]
    latency: LatencySummary
    latency_by_transport: dict[str, LatencySummary]
    raw: Any = _raw()

    @classmethod
    def from_proto(cls, m: analytics_pb2.StatsBucket) -> StatsBucket:
        return cls(to_datetime(m.start_time), m.total, dict(m.by_label), dict(m.by_transport), _latency(m.latency),
                   {name: _latency(lat) for name, lat in m.latency_by_transport.items()}, m)


@dataclass(frozen=True)
class Stats:
    """Aggregates of stored predictions and feedback over a window; `series` holds its buckets when get_stats was
    asked for them (bucket_seconds), and window_start/window_end the window the figures cover (whole minutes)."""

    total: int
    by_label: dict[str, int]
    by_version: dict[str, int]
    by_transport: dict[str, int]
    latency: LatencySummary
    quality: tuple[VersionQuality, ...]
    series: tuple[StatsBucket, ...] = ()
    window_start: datetime | None = None
    window_end: datetime | None = None
    raw: Any = _raw()

    @classmethod
    def from_proto(cls, m: analytics_pb2.GetStatsResponse) -> Stats:
        return cls(m.total, dict(m.by_label), dict(m.by_version), dict(m.by_transport), _latency(m.latency),
                   tuple(VersionQuality(q.model, q.model_version, q.feedback_count, q.accuracy, q.macro_precision,
                                        q.macro_recall) for q in m.quality),
                   tuple(StatsBucket.from_proto(b) for b in m.series),
                   to_datetime(m.window_start) if m.HasField("window_start") else None,
                   to_datetime(m.window_end) if m.HasField("window_end") else None, m)


@dataclass(frozen=True)
class Feedback:
    """Recorded feedback: the true label of a prediction and whether the prediction matched it."""

    prediction_id: str
    label: str
    correct: bool
    raw: Any = _raw()


@dataclass(frozen=True)
class FeedbackBatch:
    """What a batch of feedback recorded: how many labels, how many matched, and the ids not stored yet."""

    recorded: int
    correct: int
    not_found: tuple[str, ...]  # nothing recorded for these; retry them after a moment
    raw: Any = _raw()


BATCH_RUN_STATUSES = ("running", "succeeded", "failed")


def batch_run_status_value(status: str) -> analytics_pb2.BatchRunStatus:
    """"running" / "succeeded" / "failed" (any case, or BATCH_RUN_STATUS_…) as the BatchRunStatus enum."""
    value = enum_value(analytics_pb2.BatchRunStatus, "BATCH_RUN_STATUS_", "batch run status", status,
                       BATCH_RUN_STATUSES)
    return cast(analytics_pb2.BatchRunStatus, value)  # an int at run time, as in transport_value


@dataclass(frozen=True)
class BatchRun:
    """One recorded attempt of a batch pipeline run (accuracy is None when the labels were not known;
    finished_at is None while it runs; message is the summary, or the error of a failed attempt)."""

    run_key: str
    kind: str
    run_date: str
    model: str
    model_version: str
    rows: int
    rejected: int
    accuracy: float | None
    duration_seconds: float
    status: str  # "running" | "succeeded" | "failed" | "abandoned" (set by the server) ("" if unspecified)
    message: str
    started_at: datetime | None
    updated_at: datetime | None
    attempt: int = 0
    input: str = ""
    finished_at: datetime | None = None
    raw: Any = _raw()

    @classmethod
    def from_proto(cls, m: analytics_pb2.BatchRun) -> BatchRun:
        status = short_name(analytics_pb2.BatchRunStatus, "BATCH_RUN_STATUS_", m.status)
        return cls(m.run_key, m.kind, m.run_date, m.model, m.model_version, m.rows, m.rejected,
                   m.accuracy if m.HasField("accuracy") else None, m.duration_seconds, status, m.message,
                   to_datetime(m.started_at), to_datetime(m.updated_at), m.attempt, m.input,
                   to_datetime(m.finished_at), m)


@dataclass(frozen=True)
class RecordedRun:
    """An attempt as stored by record_batch_run, and whether it was new (False: it updated or finished a running
    attempt)."""

    run: BatchRun
    created: bool
    raw: Any = _raw()
