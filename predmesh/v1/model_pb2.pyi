import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Transport(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSPORT_UNSPECIFIED: _ClassVar[Transport]
    TRANSPORT_GRPC: _ClassVar[Transport]
    TRANSPORT_REST: _ClassVar[Transport]
    TRANSPORT_QUEUE: _ClassVar[Transport]
    TRANSPORT_BATCH: _ClassVar[Transport]
    TRANSPORT_UI: _ClassVar[Transport]
    GRPC: _ClassVar[Transport]
    REST: _ClassVar[Transport]
    QUEUE: _ClassVar[Transport]
    BATCH: _ClassVar[Transport]
    UI: _ClassVar[Transport]

class FeatureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_KIND_UNSPECIFIED: _ClassVar[FeatureKind]
    FEATURE_KIND_NUMBER: _ClassVar[FeatureKind]
    FEATURE_KIND_CATEGORY: _ClassVar[FeatureKind]
    FEATURE_KIND_BOOLEAN: _ClassVar[FeatureKind]
TRANSPORT_UNSPECIFIED: Transport
TRANSPORT_GRPC: Transport
TRANSPORT_REST: Transport
TRANSPORT_QUEUE: Transport
TRANSPORT_BATCH: Transport
TRANSPORT_UI: Transport
GRPC: Transport
REST: Transport
QUEUE: Transport
BATCH: Transport
UI: Transport
FEATURE_KIND_UNSPECIFIED: FeatureKind
FEATURE_KIND_NUMBER: FeatureKind
FEATURE_KIND_CATEGORY: FeatureKind
FEATURE_KIND_BOOLEAN: FeatureKind

class FeatureSpec(_message.Message):
    __slots__ = ("name", "min", "max", "mean", "std", "quantiles", "kind", "categories", "missing_share", "nullable", "accepts_unknown")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARE_FIELD_NUMBER: _ClassVar[int]
    NULLABLE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    name: str
    min: float
    max: float
    mean: float
    std: float
    quantiles: _containers.RepeatedScalarFieldContainer[float]
    kind: FeatureKind
    categories: _containers.RepeatedCompositeFieldContainer[CategoryShare]
    missing_share: float
    nullable: bool
    accepts_unknown: bool
    def __init__(self, name: _Optional[str] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., quantiles: _Optional[_Iterable[float]] = ..., kind: _Optional[_Union[FeatureKind, str]] = ..., categories: _Optional[_Iterable[_Union[CategoryShare, _Mapping]]] = ..., missing_share: _Optional[float] = ..., nullable: _Optional[bool] = ..., accepts_unknown: _Optional[bool] = ...) -> None: ...

class CategoryShare(_message.Message):
    __slots__ = ("value", "share")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    value: str
    share: float
    def __init__(self, value: _Optional[str] = ..., share: _Optional[float] = ...) -> None: ...

class ClassProfile(_message.Message):
    __slots__ = ("label", "share", "mean", "std")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    label: str
    share: float
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, label: _Optional[str] = ..., share: _Optional[float] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "features", "classes", "sha256", "metrics", "created_at", "sklearn_version", "estimator", "serving", "class_profiles", "limits")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SKLEARN_VERSION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CLASS_PROFILES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureSpec]
    classes: _containers.RepeatedScalarFieldContainer[str]
    sha256: str
    metrics: _containers.ScalarMap[str, float]
    created_at: _timestamp_pb2.Timestamp
    sklearn_version: str
    estimator: str
    serving: bool
    class_profiles: _containers.RepeatedCompositeFieldContainer[ClassProfile]
    limits: CallLimits
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureSpec, _Mapping]]] = ..., classes: _Optional[_Iterable[str]] = ..., sha256: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sklearn_version: _Optional[str] = ..., estimator: _Optional[str] = ..., serving: _Optional[bool] = ..., class_profiles: _Optional[_Iterable[_Union[ClassProfile, _Mapping]]] = ..., limits: _Optional[_Union[CallLimits, _Mapping]] = ...) -> None: ...

class CallLimits(_message.Message):
    __slots__ = ("max_batch_rows", "max_request_bytes", "max_request_id_length")
    MAX_BATCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_ID_LENGTH_FIELD_NUMBER: _ClassVar[int]
    max_batch_rows: int
    max_request_bytes: int
    max_request_id_length: int
    def __init__(self, max_batch_rows: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., max_request_id_length: _Optional[int] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("prediction_id", "request_id", "model", "model_version", "label", "probabilities", "latency_ms")
    class ProbabilitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    request_id: str
    model: str
    model_version: str
    label: str
    probabilities: _containers.ScalarMap[str, float]
    latency_ms: float
    def __init__(self, prediction_id: _Optional[str] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., label: _Optional[str] = ..., probabilities: _Optional[_Mapping[str, float]] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class DesiredState(_message.Message):
    __slots__ = ("model", "version", "pinned", "candidate", "candidate_share", "updated_at", "updated_by", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SHARE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    pinned: bool
    candidate: str
    candidate_share: float
    updated_at: _timestamp_pb2.Timestamp
    updated_by: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., pinned: _Optional[bool] = ..., candidate: _Optional[str] = ..., candidate_share: _Optional[float] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_by: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CanaryCriteria(_message.Message):
    __slots__ = ("window_seconds", "min_feedback", "min_requests", "max_accuracy_drop", "max_error_rate", "max_p99_ratio", "min_agreement")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ACCURACY_DROP_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    window_seconds: float
    min_feedback: int
    min_requests: int
    max_accuracy_drop: float
    max_error_rate: float
    max_p99_ratio: float
    min_agreement: float
    def __init__(self, window_seconds: _Optional[float] = ..., min_feedback: _Optional[int] = ..., min_requests: _Optional[int] = ..., max_accuracy_drop: _Optional[float] = ..., max_error_rate: _Optional[float] = ..., max_p99_ratio: _Optional[float] = ..., min_agreement: _Optional[float] = ...) -> None: ...

class CanarySide(_message.Message):
    __slots__ = ("version", "requests", "calls", "errors", "error_rate", "feedback", "accuracy", "p50_ms", "p99_ms")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    version: str
    requests: int
    calls: int
    errors: int
    error_rate: float
    feedback: int
    accuracy: float
    p50_ms: float
    p99_ms: float
    def __init__(self, version: _Optional[str] = ..., requests: _Optional[int] = ..., calls: _Optional[int] = ..., errors: _Optional[int] = ..., error_rate: _Optional[float] = ..., feedback: _Optional[int] = ..., accuracy: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class CanaryRun(_message.Message):
    __slots__ = ("id", "baseline", "candidate", "share", "criteria", "started_at", "started_by", "status", "decided_at", "decided_by", "summary", "serving", "candidate_side", "compared", "agreed", "elapsed_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    CRITERIA_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_BY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SIDE_FIELD_NUMBER: _ClassVar[int]
    COMPARED_FIELD_NUMBER: _ClassVar[int]
    AGREED_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: int
    baseline: str
    candidate: str
    share: float
    criteria: CanaryCriteria
    started_at: _timestamp_pb2.Timestamp
    started_by: str
    status: str
    decided_at: _timestamp_pb2.Timestamp
    decided_by: str
    summary: str
    serving: CanarySide
    candidate_side: CanarySide
    compared: int
    agreed: int
    elapsed_seconds: float
    def __init__(self, id: _Optional[int] = ..., baseline: _Optional[str] = ..., candidate: _Optional[str] = ..., share: _Optional[float] = ..., criteria: _Optional[_Union[CanaryCriteria, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_by: _Optional[str] = ..., status: _Optional[str] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decided_by: _Optional[str] = ..., summary: _Optional[str] = ..., serving: _Optional[_Union[CanarySide, _Mapping]] = ..., candidate_side: _Optional[_Union[CanarySide, _Mapping]] = ..., compared: _Optional[int] = ..., agreed: _Optional[int] = ..., elapsed_seconds: _Optional[float] = ...) -> None: ...
