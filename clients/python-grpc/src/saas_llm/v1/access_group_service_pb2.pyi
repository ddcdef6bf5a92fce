import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelAccessGroup(_message.Message):
    __slots__ = ("group_name", "description", "model_groups", "created_at")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_GROUPS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    description: str
    model_groups: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, group_name: _Optional[str] = ..., description: _Optional[str] = ..., model_groups: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateModelAccessGroupRequest(_message.Message):
    __slots__ = ("group_name", "description", "model_groups")
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_GROUPS_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    description: str
    model_groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group_name: _Optional[str] = ..., description: _Optional[str] = ..., model_groups: _Optional[_Iterable[str]] = ...) -> None: ...

class ListModelAccessGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelAccessGroupsResponse(_message.Message):
    __slots__ = ("access_groups", "total")
    ACCESS_GROUPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    access_groups: _containers.RepeatedCompositeFieldContainer[ModelAccessGroup]
    total: int
    def __init__(self, access_groups: _Optional[_Iterable[_Union[ModelAccessGroup, _Mapping]]] = ..., total: _Optional[int] = ...) -> None: ...

class GetModelAccessGroupRequest(_message.Message):
    __slots__ = ("group_name",)
    GROUP_NAME_FIELD_NUMBER: _ClassVar[int]
    group_name: str
    def __init__(self, group_name: _Optional[str] = ...) -> None: ...
