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

class GetCreditBalanceRequest(_message.Message):
    __slots__ = ("team_id",)
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    def __init__(self, team_id: _Optional[str] = ...) -> None: ...

class GetCreditBalanceResponse(_message.Message):
    __slots__ = ("team_id", "credits_allocated", "credits_used", "credits_reserved", "credits_remaining", "credit_limit", "auto_refill")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    CREDITS_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_USED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_RESERVED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    AUTO_REFILL_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    credits_allocated: int
    credits_used: int
    credits_reserved: int
    credits_remaining: int
    credit_limit: _struct_pb2.Value
    auto_refill: bool
    def __init__(self, team_id: _Optional[str] = ..., credits_allocated: _Optional[int] = ..., credits_used: _Optional[int] = ..., credits_reserved: _Optional[int] = ..., credits_remaining: _Optional[int] = ..., credit_limit: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., auto_refill: _Optional[bool] = ...) -> None: ...

class AddCreditsRequest(_message.Message):
    __slots__ = ("team_id", "credits_amount", "reason", "metadata", "request_id")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    CREDITS_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    credits_amount: int
    reason: str
    metadata: _struct_pb2.Struct
    request_id: str
    def __init__(self, team_id: _Optional[str] = ..., credits_amount: _Optional[int] = ..., reason: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class AddCreditsResponse(_message.Message):
    __slots__ = ("team_id", "transaction_id", "credits_added", "credits_allocated", "credits_used", "credits_reserved", "credits_remaining")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    CREDITS_ADDED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_USED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_RESERVED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    transaction_id: str
    credits_added: int
    credits_allocated: int
    credits_used: int
    credits_reserved: int
    credits_remaining: int
    def __init__(self, team_id: _Optional[str] = ..., transaction_id: _Optional[str] = ..., credits_added: _Optional[int] = ..., credits_allocated: _Optional[int] = ..., credits_used: _Optional[int] = ..., credits_reserved: _Optional[int] = ..., credits_remaining: _Optional[int] = ...) -> None: ...

class CheckCreditsRequest(_message.Message):
    __slots__ = ("team_id", "credits_required")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    CREDITS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    credits_required: int
    def __init__(self, team_id: _Optional[str] = ..., credits_required: _Optional[int] = ...) -> None: ...

class CheckCreditsResponse(_message.Message):
    __slots__ = ("available", "credits_remaining", "credits_required")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    CREDITS_REMAINING_FIELD_NUMBER: _ClassVar[int]
    CREDITS_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    available: bool
    credits_remaining: int
    credits_required: int
    def __init__(self, available: _Optional[bool] = ..., credits_remaining: _Optional[int] = ..., credits_required: _Optional[int] = ...) -> None: ...

class ListCreditTransactionsRequest(_message.Message):
    __slots__ = ("team_id", "limit", "offset")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    limit: int
    offset: int
    def __init__(self, team_id: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class CreditTransaction(_message.Message):
    __slots__ = ("transaction_id", "team_id", "transaction_type", "credits_amount", "balance_after", "reason", "job_id", "created_at")
    TRANSACTION_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    CREDITS_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    transaction_id: str
    team_id: str
    transaction_type: str
    credits_amount: int
    balance_after: int
    reason: str
    job_id: _struct_pb2.Value
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, transaction_id: _Optional[str] = ..., team_id: _Optional[str] = ..., transaction_type: _Optional[str] = ..., credits_amount: _Optional[int] = ..., balance_after: _Optional[int] = ..., reason: _Optional[str] = ..., job_id: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListCreditTransactionsResponse(_message.Message):
    __slots__ = ("team_id", "total_transactions", "transactions")
    TEAM_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    team_id: str
    total_transactions: int
    transactions: _containers.RepeatedCompositeFieldContainer[CreditTransaction]
    def __init__(self, team_id: _Optional[str] = ..., total_transactions: _Optional[int] = ..., transactions: _Optional[_Iterable[_Union[CreditTransaction, _Mapping]]] = ...) -> None: ...
