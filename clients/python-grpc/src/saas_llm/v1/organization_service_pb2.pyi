import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from saas_llm.v1 import common_pb2 as _common_pb2
from saas_llm.v1 import team_service_pb2 as _team_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Organization(_message.Message):
    __slots__ = ("organization_id", "name", "status", "metadata", "created_at", "updated_at")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    name: str
    status: str
    metadata: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, organization_id: _Optional[str] = ..., name: _Optional[str] = ..., status: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateOrganizationRequest(_message.Message):
    __slots__ = ("organization_id", "name", "metadata")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    name: str
    metadata: _struct_pb2.Struct
    def __init__(self, organization_id: _Optional[str] = ..., name: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListOrganizationsRequest(_message.Message):
    __slots__ = ("limit", "offset")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    limit: int
    offset: int
    def __init__(self, limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class ListOrganizationsResponse(_message.Message):
    __slots__ = ("organizations", "total_organizations")
    ORGANIZATIONS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ORGANIZATIONS_FIELD_NUMBER: _ClassVar[int]
    organizations: _containers.RepeatedCompositeFieldContainer[Organization]
    total_organizations: int
    def __init__(self, organizations: _Optional[_Iterable[_Union[Organization, _Mapping]]] = ..., total_organizations: _Optional[int] = ...) -> None: ...

class GetOrganizationRequest(_message.Message):
    __slots__ = ("organization_id",)
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    def __init__(self, organization_id: _Optional[str] = ...) -> None: ...

class ListOrganizationTeamsRequest(_message.Message):
    __slots__ = ("organization_id",)
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    def __init__(self, organization_id: _Optional[str] = ...) -> None: ...

class ListOrganizationTeamsResponse(_message.Message):
    __slots__ = ("organization_id", "teams", "total_teams")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TEAMS_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    teams: _containers.RepeatedCompositeFieldContainer[_team_service_pb2.Team]
    total_teams: int
    def __init__(self, organization_id: _Optional[str] = ..., teams: _Optional[_Iterable[_Union[_team_service_pb2.Team, _Mapping]]] = ..., total_teams: _Optional[int] = ...) -> None: ...

class GetOrganizationUsageRequest(_message.Message):
    __slots__ = ("organization_id", "period")
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    period: str
    def __init__(self, organization_id: _Optional[str] = ..., period: _Optional[str] = ...) -> None: ...

class GetOrganizationUsageResponse(_message.Message):
    __slots__ = ("organization_id", "period", "summary", "job_types", "teams")
    class JobTypesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.JobTypeUsage
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.JobTypeUsage, _Mapping]] = ...) -> None: ...
    class TeamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.UsageSummary
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.UsageSummary, _Mapping]] = ...) -> None: ...
    ORGANIZATION_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPES_FIELD_NUMBER: _ClassVar[int]
    TEAMS_FIELD_NUMBER: _ClassVar[int]
    organization_id: str
    period: str
    summary: _common_pb2.UsageSummary
    job_types: _containers.MessageMap[str, _common_pb2.JobTypeUsage]
    teams: _containers.MessageMap[str, _common_pb2.UsageSummary]
    def __init__(self, organization_id: _Optional[str] = ..., period: _Optional[str] = ..., summary: _Optional[_Union[_common_pb2.UsageSummary, _Mapping]] = ..., job_types: _Optional[_Mapping[str, _common_pb2.JobTypeUsage]] = ..., teams: _Optional[_Mapping[str, _common_pb2.UsageSummary]] = ...) -> None: ...
