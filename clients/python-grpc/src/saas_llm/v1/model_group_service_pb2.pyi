import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelGroupModel(_message.Message):
    __slots__ = ("model_name", "priority", "config")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    priority: int
    config: _struct_pb2.Struct
    def __init__(self, model_name: _Optional[str] = ..., priority: _Optional[int] = ..., config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ModelGroup(_message.Message):
    __slots__ = ("model_group_id", "group_name", "display_name", "description", "status", "models", "metadata", "created_at", "updated_at")
    MODEL_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    model_group_id: str
    group_name: str
    display_name: str
    description: str
    status: str
    models: _containers.RepeatedCompositeFieldContainer[ModelGroupModel]
    metadata: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, model_group_id: _Optional[str] = ..., group_name: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., status: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelGroupModel, _Mapping]]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateModelGroupRequest(_message.Message):
    __slots__ = ("group_name", "display_name", "description", "models", "metadata")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    display_name: str
    description: str
    models: _containers.RepeatedCompositeFieldContainer[ModelGroupModel]
    metadata: _struct_pb2.Struct
    def __init__(self, group_name: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelGroupModel, _Mapping]]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class UpdateModelGroupRequest(_message.Message):
    __slots__ = ("group_name", "display_name", "description", "models", "metadata")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    display_name: str
    description: str
    models: _containers.RepeatedCompositeFieldContainer[ModelGroupModel]
    metadata: _struct_pb2.Struct
    def __init__(self, group_name: _Optional[str] = ..., display_name: _Optional[str] = ..., description: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelGroupModel, _Mapping]]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DeleteModelGroupRequest(_message.Message):
    __slots__ = ("group_name",)
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    def __init__(self, group_name: _Optional[str] = ...) -> None: ...

class DeleteModelGroupResponse(_message.Message):
    __slots__ = ("group_name", "deleted")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    deleted: bool
    def __init__(self, group_name: _Optional[str] = ..., deleted: _Optional[bool] = ...) -> None: ...

class ListModelGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelGroupsResponse(_message.Message):
    __slots__ = ("model_groups", "total")
    MODEL_GROUPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    model_groups: _containers.RepeatedCompositeFieldContainer[ModelGroup]
    total: int
    def __init__(self, model_groups: _Optional[_Iterable[_Union[ModelGroup, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class GetModelGroupRequest(_message.Message):
    __slots__ = ("group_name",)
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    def __init__(self, group_name: _Optional[str] = ...) -> None: ...

class GetModelGroupModelsRequest(_message.Message):
    __slots__ = ("group_name",)
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    def __init__(self, group_name: _Optional[str] = ...) -> None: ...

class GetModelGroupModelsResponse(_message.Message):
    __slots__ = ("group_name", "models")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    models: _containers.RepeatedCompositeFieldContainer[ModelGroupModel]
    def __init__(self, group_name: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelGroupModel, _Mapping]]] = ...) -> None: ...

class ResolveModelGroupRequest(_message.Message):
    __slots__ = ("group_name", "team_id")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    team_id: str
    def __init__(self, group_name: _Optional[str] = ..., team_id: _Optional[str] = ...) -> None: ...

class ResolveModelGroupResponse(_message.Message):
    __slots__ = ("group_name", "primary_model", "fallback_models", "team_has_access")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_MODEL_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_MODELS_FIELD_NUMBER: _ClassVar[int]
    TEAM_HAS_ACCESS_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    primary_model: str
    fallback_models: _containers.RepeatedScalarFieldContainer[str]
    team_has_access: bool
    def __init__(self, group_name: _Optional[str] = ..., primary_model: _Optional[str] = ..., fallback_models: _Optional[_Iterable[str]] = ..., team_has_access: _Optional[bool] = ...) -> None: ...
