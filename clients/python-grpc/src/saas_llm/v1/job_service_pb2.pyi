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

class CreateJobRequest(_message.Message):
    __slots__ = ("team_id", "user_id", "job_type", "metadata", "request_id")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    user_id: str
    job_type: str
    metadata: _struct_pb2.Struct
    request_id: str
    def __init__(self, team_id: _Optional[str] = ..., user_id: _Optional[str] = ..., job_type: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateJobResponse(_message.Message):
    __slots__ = ("job_id", "status", "created_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LlmCallRequest(_message.Message):
    __slots__ = ("job_id", "model_group", "messages", "purpose", "temperature", "max_tokens", "top_p", "stop", "seed", "user", "tools", "tool_choice", "response_format")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_GROUP_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    model_group: str
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatMessage]
    purpose: str
    temperature: float
    max_tokens: int
    top_p: float
    stop: _struct_pb2.Value
    seed: int
    user: str
    tools: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    tool_choice: _struct_pb2.Value
    response_format: _struct_pb2.Struct
    def __init__(self, job_id: _Optional[str] = ..., model_group: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_common_pb2.ChatMessage, _Mapping]]] = ..., purpose: _Optional[str] = ..., temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., seed: _Optional[int] = ..., user: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., tool_choice: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., response_format: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class LlmResponse(_message.Message):
    __slots__ = ("content", "finish_reason", "tool_calls")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    content: str
    finish_reason: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    def __init__(self, content: _Optional[str] = ..., finish_reason: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ...) -> None: ...

class LlmCallMetadata(_message.Message):
    __slots__ = ("tokens_used", "latency_ms", "model_group", "prompt_tokens", "completion_tokens")
    TOKENS_USED_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MODEL_GROUP_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens_used: int
    latency_ms: int
    model_group: str
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, tokens_used: _Optional[int] = ..., latency_ms: _Optional[int] = ..., model_group: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class LlmCallResponse(_message.Message):
    __slots__ = ("call_id", "response", "metadata")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    response: LlmResponse
    metadata: LlmCallMetadata
    def __init__(self, call_id: _Optional[str] = ..., response: _Optional[_Union[LlmResponse, _Mapping]] = ..., metadata: _Optional[_Union[LlmCallMetadata, _Mapping]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class LlmCallStreamResponse(_message.Message):
    __slots__ = ("content", "finish_reason", "call_id", "usage", "error", "job_id", "costs", "tool_calls")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    content: str
    finish_reason: str
    call_id: str
    usage: _common_pb2.Usage
    error: StreamError
    job_id: str
    costs: JobCosts
    tool_calls: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    def __init__(self, content: _Optional[str] = ..., finish_reason: _Optional[str] = ..., call_id: _Optional[str] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ..., job_id: _Optional[str] = ..., costs: _Optional[_Union[JobCosts, _Mapping]] = ..., tool_calls: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ...) -> None: ...

class CompleteJobRequest(_message.Message):
    __slots__ = ("job_id", "status", "metadata", "error_message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: str
    metadata: _struct_pb2.Struct
    error_message: str
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., error_message: _Optional[str] = ...) -> None: ...

class JobCosts(_message.Message):
    __slots__ = ("total_calls", "successful_calls", "failed_calls", "total_tokens", "total_cost_usd", "avg_latency_ms", "credit_applied", "credits_remaining", "pricing")
    TOTAL_CALLS_FIELD_NUMBER: _ClassVar[int]
    SUCCESSFUL_CALLS_FIELD_NUMBER: _ClassVar[int]
    FAILED_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_USD_FIELD_NUMBER: _ClassVar[int]
    AVG_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    CREDIT_APPLIED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    PRICING_FIELD_NUMBER: _ClassVar[int]
    total_calls: int
    successful_calls: int
    failed_calls: int
    total_tokens: int
    total_cost_usd: float
    avg_latency_ms: int
    credit_applied: bool
    credits_remaining: int
    pricing: str
    def __init__(self, total_calls: _Optional[int] = ..., successful_calls: _Optional[int] = ..., failed_calls: _Optional[int] = ..., total_tokens: _Optional[int] = ..., total_cost_usd: _Optional[float] = ..., avg_latency_ms: _Optional[int] = ..., credit_applied: _Optional[bool] = ..., credits_remaining: _Optional[int] = ..., pricing: _Optional[str] = ...) -> None: ...

class JobCall(_message.Message):
    __slots__ = ("call_id", "purpose", "model_group", "tokens", "latency_ms", "error", "status", "created_at")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    MODEL_GROUP_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    purpose: str
    model_group: str
    tokens: int
    latency_ms: int
    error: _struct_pb2.Value
    status: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, call_id: _Optional[str] = ..., purpose: _Optional[str] = ..., model_group: _Optional[str] = ..., tokens: _Optional[int] = ..., latency_ms: _Optional[int] = ..., error: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., status: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CompleteJobResponse(_message.Message):
    __slots__ = ("job_id", "status", "completed_at", "costs", "calls")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    status: str
    completed_at: _timestamp_pb2.Timestamp
    costs: JobCosts
    calls: _containers.RepeatedCompositeFieldContainer[JobCall]
    def __init__(self, job_id: _Optional[str] = ..., status: _Optional[str] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., costs: _Optional[_Union[JobCosts, _Mapping]] = ..., calls: _Optional[_Iterable[_Union[JobCall, _Mapping]]] = ...) -> None: ...

class UpdateJobMetadataRequest(_message.Message):
    __slots__ = ("job_id", "metadata")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    metadata: _struct_pb2.Struct
    def __init__(self, job_id: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "team_id", "user_id", "job_type", "status", "metadata", "created_at", "completed_at", "credit_applied", "error_message", "result_metadata", "costs", "calls")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_APPLIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_METADATA_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    team_id: str
    user_id: str
    job_type: str
    status: str
    metadata: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    credit_applied: bool
    error_message: _struct_pb2.Value
    result_metadata: _struct_pb2.Struct
    costs: JobCosts
    calls: _containers.RepeatedCompositeFieldContainer[JobCall]
    def __init__(self, job_id: _Optional[str] = ..., team_id: _Optional[str] = ..., user_id: _Optional[str] = ..., job_type: _Optional[str] = ..., status: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., credit_applied: _Optional[bool] = ..., error_message: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., result_metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., costs: _Optional[_Union[JobCosts, _Mapping]] = ..., calls: _Optional[_Iterable[_Union[JobCall, _Mapping]]] = ...) -> None: ...

class ListTeamJobsRequest(_message.Message):
    __slots__ = ("team_id", "limit", "offset", "status")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    limit: int
    offset: int
    status: str
    def __init__(self, team_id: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ..., status: _Optional[str] = ...) -> None: ...

class ListTeamJobsResponse(_message.Message):
    __slots__ = ("team_id", "total_jobs", "jobs")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_JOBS_FIELD_NUMBER: _ClassVar[int]
    JOBS_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    total_jobs: int
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, team_id: _Optional[str] = ..., total_jobs: _Optional[int] = ..., jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CreateAndCallRequest(_message.Message):
    __slots__ = ("team_id", "user_id", "job_type", "metadata", "request_id", "model_group", "messages", "purpose", "temperature", "max_tokens", "top_p", "stop", "seed", "user", "tools", "tool_choice", "response_format")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_GROUP_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    user_id: str
    job_type: str
    metadata: _struct_pb2.Struct
    request_id: str
    model_group: str
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.ChatMessage]
    purpose: str
    temperature: float
    max_tokens: int
    top_p: float
    stop: _struct_pb2.Value
    seed: int
    user: str
    tools: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    tool_choice: _struct_pb2.Value
    response_format: _struct_pb2.Struct
    def __init__(self, team_id: _Optional[str] = ..., user_id: _Optional[str] = ..., job_type: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ..., model_group: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_common_pb2.ChatMessage, _Mapping]]] = ..., purpose: _Optional[str] = ..., temperature: _Optional[float] = ..., max_tokens: _Optional[int] = ..., top_p: _Optional[float] = ..., stop: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., seed: _Optional[int] = ..., user: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., tool_choice: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., response_format: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CreateAndCallResponse(_message.Message):
    __slots__ = ("job_id", "call_id", "response", "metadata", "status", "completed_at", "costs")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    COSTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    call_id: str
    response: LlmResponse
    metadata: LlmCallMetadata
    status: str
    completed_at: _timestamp_pb2.Timestamp
    costs: JobCosts
    def __init__(self, job_id: _Optional[str] = ..., call_id: _Optional[str] = ..., response: _Optional[_Union[LlmResponse, _Mapping]] = ..., metadata: _Optional[_Union[LlmCallMetadata, _Mapping]] = ..., status: _Optional[str] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., costs: _Optional[_Union[JobCosts, _Mapping]] = ...) -> None: ...
