from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.rpc import status_pb2 as _status_pb2
from predmesh.v1 import model_pb2 as _model_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("model", "features", "request_id")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    features: _containers.MessageMap[str, _struct_pb2.Value]
    request_id: str
    def __init__(self, model: _Optional[str] = ..., features: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., request_id: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("prediction",)
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    prediction: _model_pb2.Prediction
    def __init__(self, prediction: _Optional[_Union[_model_pb2.Prediction, _Mapping]] = ...) -> None: ...

class FeatureRow(_message.Message):
    __slots__ = ("features", "request_id")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    features: _containers.MessageMap[str, _struct_pb2.Value]
    request_id: str
    def __init__(self, features: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., request_id: _Optional[str] = ...) -> None: ...

class FeatureMatrix(_message.Message):
    __slots__ = ("feature_names", "values", "request_id_prefix", "row_numbers", "string_columns", "new_keys")
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    ROW_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    STRING_COLUMNS_FIELD_NUMBER: _ClassVar[int]
    NEW_KEYS_FIELD_NUMBER: _ClassVar[int]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    request_id_prefix: str
    row_numbers: _containers.RepeatedScalarFieldContainer[int]
    string_columns: _containers.RepeatedCompositeFieldContainer[StringColumn]
    new_keys: bool
    def __init__(self, feature_names: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ..., request_id_prefix: _Optional[str] = ..., row_numbers: _Optional[_Iterable[int]] = ..., string_columns: _Optional[_Iterable[_Union[StringColumn, _Mapping]]] = ..., new_keys: _Optional[bool] = ...) -> None: ...

class StringColumn(_message.Message):
    __slots__ = ("name", "values", "missing_rows")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MISSING_ROWS_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[str]
    missing_rows: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ..., missing_rows: _Optional[_Iterable[int]] = ...) -> None: ...

class PredictBatchRequest(_message.Message):
    __slots__ = ("model", "rows", "matrix", "partial_success")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MATRIX_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    model: str
    rows: _containers.RepeatedCompositeFieldContainer[FeatureRow]
    matrix: FeatureMatrix
    partial_success: bool
    def __init__(self, model: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[FeatureRow, _Mapping]]] = ..., matrix: _Optional[_Union[FeatureMatrix, _Mapping]] = ..., partial_success: _Optional[bool] = ...) -> None: ...

class RowError(_message.Message):
    __slots__ = ("row", "request_id", "error")
    ROW_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    row: int
    request_id: str
    error: _status_pb2.Status
    def __init__(self, row: _Optional[int] = ..., request_id: _Optional[str] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class PredictionMatrix(_message.Message):
    __slots__ = ("model", "model_version", "classes", "labels", "probabilities", "prediction_ids", "latency_ms", "row_errors")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_IDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ROW_ERRORS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.RepeatedScalarFieldContainer[int]
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    prediction_ids: _containers.RepeatedScalarFieldContainer[str]
    latency_ms: float
    row_errors: _containers.RepeatedCompositeFieldContainer[RowError]
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., labels: _Optional[_Iterable[int]] = ..., probabilities: _Optional[_Iterable[float]] = ..., prediction_ids: _Optional[_Iterable[str]] = ..., latency_ms: _Optional[float] = ..., row_errors: _Optional[_Iterable[_Union[RowError, _Mapping]]] = ...) -> None: ...

class BatchRowResult(_message.Message):
    __slots__ = ("request_id", "prediction", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prediction: _model_pb2.Prediction
    error: _status_pb2.Status
    def __init__(self, request_id: _Optional[str] = ..., prediction: _Optional[_Union[_model_pb2.Prediction, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class PredictBatchResponse(_message.Message):
    __slots__ = ("predictions", "matrix", "results")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    MATRIX_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[_model_pb2.Prediction]
    matrix: PredictionMatrix
    results: _containers.RepeatedCompositeFieldContainer[BatchRowResult]
    def __init__(self, predictions: _Optional[_Iterable[_Union[_model_pb2.Prediction, _Mapping]]] = ..., matrix: _Optional[_Union[PredictionMatrix, _Mapping]] = ..., results: _Optional[_Iterable[_Union[BatchRowResult, _Mapping]]] = ...) -> None: ...

class PredictStreamRequest(_message.Message):
    __slots__ = ("model", "features", "request_id")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _struct_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    features: _containers.MessageMap[str, _struct_pb2.Value]
    request_id: str
    def __init__(self, model: _Optional[str] = ..., features: _Optional[_Mapping[str, _struct_pb2.Value]] = ..., request_id: _Optional[str] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("request_id", "prediction", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prediction: _model_pb2.Prediction
    error: _status_pb2.Status
    def __init__(self, request_id: _Optional[str] = ..., prediction: _Optional[_Union[_model_pb2.Prediction, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_model_pb2.ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[_model_pb2.ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetModelResponse(_message.Message):
    __slots__ = ("model", "desired")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    model: _model_pb2.ModelInfo
    desired: _model_pb2.DesiredState
    def __init__(self, model: _Optional[_Union[_model_pb2.ModelInfo, _Mapping]] = ..., desired: _Optional[_Union[_model_pb2.DesiredState, _Mapping]] = ...) -> None: ...
