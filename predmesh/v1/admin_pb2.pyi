from google.api import annotations_pb2 as _annotations_pb2
from predmesh.v1 import model_pb2 as _model_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReloadModelRequest(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ReloadModelResponse(_message.Message):
    __slots__ = ("model", "previous_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: _model_pb2.ModelInfo
    previous_version: str
    def __init__(self, model: _Optional[_Union[_model_pb2.ModelInfo, _Mapping]] = ..., previous_version: _Optional[str] = ...) -> None: ...

class RolloutModelRequest(_message.Message):
    __slots__ = ("model", "version", "reason", "changed_by", "candidate", "candidate_share", "canary")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SHARE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    reason: str
    changed_by: str
    candidate: str
    candidate_share: float
    canary: _model_pb2.CanaryCriteria
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., reason: _Optional[str] = ..., changed_by: _Optional[str] = ..., candidate: _Optional[str] = ..., candidate_share: _Optional[float] = ..., canary: _Optional[_Union[_model_pb2.CanaryCriteria, _Mapping]] = ...) -> None: ...

class RolloutModelResponse(_message.Message):
    __slots__ = ("desired", "serving_version", "previous_version")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    desired: _model_pb2.DesiredState
    serving_version: str
    previous_version: str
    def __init__(self, desired: _Optional[_Union[_model_pb2.DesiredState, _Mapping]] = ..., serving_version: _Optional[str] = ..., previous_version: _Optional[str] = ...) -> None: ...

class PinModelRequest(_message.Message):
    __slots__ = ("model", "version", "reason", "changed_by")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    reason: str
    changed_by: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., reason: _Optional[str] = ..., changed_by: _Optional[str] = ...) -> None: ...

class PinModelResponse(_message.Message):
    __slots__ = ("desired", "serving_version", "previous_version")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    desired: _model_pb2.DesiredState
    serving_version: str
    previous_version: str
    def __init__(self, desired: _Optional[_Union[_model_pb2.DesiredState, _Mapping]] = ..., serving_version: _Optional[str] = ..., previous_version: _Optional[str] = ...) -> None: ...

class RollbackModelRequest(_message.Message):
    __slots__ = ("model", "reason", "changed_by")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    changed_by: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ..., changed_by: _Optional[str] = ...) -> None: ...

class RollbackModelResponse(_message.Message):
    __slots__ = ("desired", "serving_version", "previous_version")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    desired: _model_pb2.DesiredState
    serving_version: str
    previous_version: str
    def __init__(self, desired: _Optional[_Union[_model_pb2.DesiredState, _Mapping]] = ..., serving_version: _Optional[str] = ..., previous_version: _Optional[str] = ...) -> None: ...

class GetDesiredStateRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetDesiredStateResponse(_message.Message):
    __slots__ = ("desired", "serving_version", "canaries")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    SERVING_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARIES_FIELD_NUMBER: _ClassVar[int]
    desired: _model_pb2.DesiredState
    serving_version: str
    canaries: _containers.RepeatedCompositeFieldContainer[_model_pb2.CanaryRun]
    def __init__(self, desired: _Optional[_Union[_model_pb2.DesiredState, _Mapping]] = ..., serving_version: _Optional[str] = ..., canaries: _Optional[_Iterable[_Union[_model_pb2.CanaryRun, _Mapping]]] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[_model_pb2.ModelInfo]
    def __init__(self, versions: _Optional[_Iterable[_Union[_model_pb2.ModelInfo, _Mapping]]] = ...) -> None: ...
