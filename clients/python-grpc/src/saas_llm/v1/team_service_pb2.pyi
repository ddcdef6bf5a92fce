import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from saas_llm.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Team(_message.Message):
    __slots__ = ("team_id", "organization_id", "team_alias", "status", "credits", "model_groups", "allowed_models", "max_budget_usd", "access_groups", "key_prefix", "metadata", "created_at", "updated_at")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ALIAS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_GROUPS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    ACCESS_GROUPS_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    organization_id: str
    team_alias: str
    status: str
    credits: _common_pb2.CreditSummary
    model_groups: _containers.RepeatedScalarFieldContainer[str]
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    max_budget_usd: float
    access_groups: _containers.RepeatedScalarFieldContainer[str]
    key_prefix: str
    metadata: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, team_id: _Optional[str] = ..., organization_id: _Optional[str] = ..., team_alias: _Optional[str] = ..., status: _Optional[str] = ..., credits: _Optional[_Union[_common_pb2.CreditSummary, _Mapping]] = ..., model_groups: _Optional[_Iterable[str]] = ..., allowed_models: _Optional[_Iterable[str]] = ..., max_budget_usd: _Optional[float] = ..., access_groups: _Optional[_Iterable[str]] = ..., key_prefix: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateTeamRequest(_message.Message):
    __slots__ = ("organization_id", "team_id", "team_alias", "model_groups", "credits_allocated", "metadata", "access_groups")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ALIAS_FIELD_NUMBER: _ClassVar[int]
    MODEL_GROUPS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ACCESS_GROUPS_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    team_id: str
    team_alias: str
    model_groups: _containers.RepeatedScalarFieldContainer[str]
    credits_allocated: int
    metadata: _struct_pb2.Struct
    access_groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, organization_id: _Optional[str] = ..., team_id: _Optional[str] = ..., team_alias: _Optional[str] = ..., model_groups: _Optional[_Iterable[str]] = ..., credits_allocated: _Optional[int] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., access_groups: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateTeamResponse(_message.Message):
    __slots__ = ("team_id", "organization_id", "team_alias", "model_groups", "allowed_models", "credits_allocated", "credits_remaining", "max_budget_usd", "virtual_key", "message", "access_groups")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ALIAS_FIELD_NUMBER: _ClassVar[int]
    MODEL_GROUPS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_MODELS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    MAX_BUDGET_USD_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_KEY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACCESS_GROUPS_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    organization_id: str
    team_alias: str
    model_groups: _containers.RepeatedScalarFieldContainer[str]
    allowed_models: _containers.RepeatedScalarFieldContainer[str]
    credits_allocated: int
    credits_remaining: int
    max_budget_usd: float
    virtual_key: str
    message: str
    access_groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, team_id: _Optional[str] = ..., organization_id: _Optional[str] = ..., team_alias: _Optional[str] = ..., model_groups: _Optional[_Iterable[str]] = ..., allowed_models: _Optional[_Iterable[str]] = ..., credits_allocated: _Optional[int] = ..., credits_remaining: _Optional[int] = ..., max_budget_usd: _Optional[float] = ..., virtual_key: _Optional[str] = ..., message: _Optional[str] = ..., access_groups: _Optional[_Iterable[str]] = ...) -> None: ...

class SuspendTeamRequest(_message.Message):
    __slots__ = ("team_id", "reason")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    reason: str
    def __init__(self, team_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeTeamRequest(_message.Message):
    __slots__ = ("team_id",)
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    def __init__(self, team_id: _Optional[str] = ...) -> None: ...

class RotateTeamKeyRequest(_message.Message):
    __slots__ = ("team_id",)
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    def __init__(self, team_id: _Optional[str] = ...) -> None: ...

class RotateTeamKeyResponse(_message.Message):
    __slots__ = ("team_id", "virtual_key", "key_prefix")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    VIRTUAL_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    virtual_key: str
    key_prefix: str
    def __init__(self, team_id: _Optional[str] = ..., virtual_key: _Optional[str] = ..., key_prefix: _Optional[str] = ...) -> None: ...

class GetTeamRequest(_message.Message):
    __slots__ = ("team_id",)
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    def __init__(self, team_id: _Optional[str] = ...) -> None: ...

class AssignModelGroupsRequest(_message.Message):
    __slots__ = ("team_id", "model_groups")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_GROUPS_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    model_groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, team_id: _Optional[str] = ..., model_groups: _Optional[_Iterable[str]] = ...) -> None: ...

class GetTeamUsageRequest(_message.Message):
    __slots__ = ("team_id", "period")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    period: str
    def __init__(self, team_id: _Optional[str] = ..., period: _Optional[str] = ...) -> None: ...

class GetTeamUsageResponse(_message.Message):
    __slots__ = ("team_id", "period", "summary", "job_types")
    class JobTypesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.JobTypeUsage
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.JobTypeUsage, _Mapping]] = ...) -> None: ...
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPES_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    period: str
    summary: _common_pb2.UsageSummary
    job_types: _containers.MessageMap[str, _common_pb2.JobTypeUsage]
    def __init__(self, team_id: _Optional[str] = ..., period: _Optional[str] = ..., summary: _Optional[_Union[_common_pb2.UsageSummary, _Mapping]] = ..., job_types: _Optional[_Mapping[str, _common_pb2.JobTypeUsage]] = ...) -> None: ...
