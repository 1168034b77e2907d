import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from predmesh.v1 import model_pb2 as _model_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BatchRunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BATCH_RUN_STATUS_UNSPECIFIED: _ClassVar[BatchRunStatus]
    BATCH_RUN_STATUS_RUNNING: _ClassVar[BatchRunStatus]
    BATCH_RUN_STATUS_SUCCEEDED: _ClassVar[BatchRunStatus]
    BATCH_RUN_STATUS_FAILED: _ClassVar[BatchRunStatus]
BATCH_RUN_STATUS_UNSPECIFIED: BatchRunStatus
BATCH_RUN_STATUS_RUNNING: BatchRunStatus
BATCH_RUN_STATUS_SUCCEEDED: BatchRunStatus
BATCH_RUN_STATUS_FAILED: BatchRunStatus

class ListPredictionsRequest(_message.Message):
    __slots__ = ("model", "model_version", "label", "transport", "start_time", "end_time", "page_size", "page_token", "request_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    label: str
    transport: _model_pb2.Transport
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    request_id: str
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., label: _Optional[str] = ..., transport: _Optional[_Union[_model_pb2.Transport, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class StoredPrediction(_message.Message):
    __slots__ = ("prediction", "features", "transport", "created_at", "feedback_label")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_LABEL_FIELD_NUMBER: _ClassVar[int]
    prediction: _model_pb2.Prediction
    features: _containers.MessageMap[str, _struct_pb2.Value]
    transport: _model_pb2.Transport
    created_at: _timestamp_pb2.Timestamp
    feedback_label: str
    def __init__(self, prediction: _Optional[_Union[_model_pb2.Prediction, _Mapping]] = ..., features: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., transport: _Optional[_Union[_model_pb2.Transport, str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., feedback_label: _Optional[str] = ...) -> None: ...

class ListPredictionsResponse(_message.Message):
    __slots__ = ("predictions", "next_page_token")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[StoredPrediction]
    next_page_token: str
    def __init__(self, predictions: _Optional[_Iterable[_Union[StoredPrediction, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("model", "start_time", "end_time", "bucket_seconds")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    bucket_seconds: int
    def __init__(self, model: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket_seconds: _Optional[int] = ...) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("p50_ms", "p95_ms", "p99_ms")
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    def __init__(self, p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ...) -> None: ...

class VersionQuality(_message.Message):
    __slots__ = ("model", "model_version", "feedback_count", "accuracy", "macro_precision", "macro_recall")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MACRO_PRECISION_FIELD_NUMBER: _ClassVar[int]
    MACRO_RECALL_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    feedback_count: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., feedback_count: _Optional[int] = ..., accuracy: _Optional[float] = ..., macro_precision: _Optional[float] = ..., macro_recall: _Optional[float] = ...) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("total", "by_label", "by_version", "by_transport", "latency", "quality", "series", "window_start", "window_end")
    class ByLabelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByVersionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByTransportEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BY_LABEL_FIELD_NUMBER: _ClassVar[int]
    BY_VERSION_FIELD_NUMBER: _ClassVar[int]
    BY_TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    total: int
    by_label: _containers.ScalarMap[str, int]
    by_version: _containers.ScalarMap[str, int]
    by_transport: _containers.ScalarMap[str, int]
    latency: LatencySummary
    quality: _containers.RepeatedCompositeFieldContainer[VersionQuality]
    series: _containers.RepeatedCompositeFieldContainer[StatsBucket]
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    def __init__(self, total: _Optional[int] = ..., by_label: _Optional[_Mapping[str, int]] = ..., by_version: _Optional[_Mapping[str, int]] = ..., by_transport: _Optional[_Mapping[str, int]] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., quality: _Optional[_Iterable[_Union[VersionQuality, _Mapping]]] = ..., series: _Optional[_Iterable[_Union[StatsBucket, _Mapping]]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StatsBucket(_message.Message):
    __slots__ = ("start_time", "total", "by_label", "by_transport", "latency", "latency_by_transport")
    class ByLabelEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ByTransportEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LatencyByTransportEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: LatencySummary
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[LatencySummary, _Mapping]] = ...) -> None: ...
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BY_LABEL_FIELD_NUMBER: _ClassVar[int]
    BY_TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BY_TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    total: int
    by_label: _containers.ScalarMap[str, int]
    by_transport: _containers.ScalarMap[str, int]
    latency: LatencySummary
    latency_by_transport: _containers.MessageMap[str, LatencySummary]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., total: _Optional[int] = ..., by_label: _Optional[_Mapping[str, int]] = ..., by_transport: _Optional[_Mapping[str, int]] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., latency_by_transport: _Optional[_Mapping[str, LatencySummary]] = ...) -> None: ...

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("prediction_id", "label")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    label: str
    def __init__(self, prediction_id: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ("prediction_id", "label", "correct")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    label: str
    correct: bool
    def __init__(self, prediction_id: _Optional[str] = ..., label: _Optional[str] = ..., correct: _Optional[bool] = ...) -> None: ...

class FeedbackItem(_message.Message):
    __slots__ = ("prediction_id", "label")
    PREDICTION_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    prediction_id: str
    label: str
    def __init__(self, prediction_id: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class SubmitFeedbackBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[FeedbackItem]
    def __init__(self, items: _Optional[_Iterable[_Union[FeedbackItem, _Mapping]]] = ...) -> None: ...

class SubmitFeedbackBatchResponse(_message.Message):
    __slots__ = ("recorded", "correct", "not_found")
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    recorded: int
    correct: int
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, recorded: _Optional[int] = ..., correct: _Optional[int] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchRun(_message.Message):
    __slots__ = ("run_key", "kind", "run_date", "model", "model_version", "rows", "rejected", "accuracy", "duration_seconds", "status", "message", "started_at", "updated_at", "attempt", "input", "finished_at")
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RUN_DATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    run_key: str
    kind: str
    run_date: str
    model: str
    model_version: str
    rows: int
    rejected: int
    accuracy: float
    duration_seconds: float
    status: BatchRunStatus
    message: str
    started_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    attempt: int
    input: str
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, run_key: _Optional[str] = ..., kind: _Optional[str] = ..., run_date: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., rows: _Optional[int] = ..., rejected: _Optional[int] = ..., accuracy: _Optional[float] = ..., duration_seconds: _Optional[float] = ..., status: _Optional[_Union[BatchRunStatus, str]] = ..., message: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt: _Optional[int] = ..., input: _Optional[str] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordBatchRunRequest(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: BatchRun
    def __init__(self, run: _Optional[_Union[BatchRun, _Mapping]] = ...) -> None: ...

class RecordBatchRunResponse(_message.Message):
    __slots__ = ("run", "created")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    run: BatchRun
    created: bool
    def __init__(self, run: _Optional[_Union[BatchRun, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListBatchRunsRequest(_message.Message):
    __slots__ = ("model", "kind", "page_size", "page_token", "run_key")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RUN_KEY_FIELD_NUMBER: _ClassVar[int]
    model: str
    kind: str
    page_size: int
    page_token: str
    run_key: str
    def __init__(self, model: _Optional[str] = ..., kind: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., run_key: _Optional[str] = ...) -> None: ...

class ListBatchRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[BatchRun]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[BatchRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
