"""Domain errors. Each carries the gRPC code it maps to, an ErrorInfo reason
(see proto/saas_llm/v1/errors.proto) and a human message in the seeds' words.
The API layer's single error interceptor turns them into statuses."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

from saas_llm.v1.reasons import Reason
from service.domain.ports import StorageUnavailable


class Code(IntEnum):
    """gRPC status codes (numbers as in grpc.StatusCode)."""

    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class DomainError(Exception):
    code: Code = Code.INTERNAL
    reason: Reason = Reason.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: Reason | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(DomainError):
    code = Code.INVALID_ARGUMENT
    reason = Reason.INVALID_ARGUMENT

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, metadata={"field": field} if field else None)


class _Specific(DomainError):
    """A code whose reason always says which case it is: `reason` is required."""

    def __init__(
        self, message: str, *, reason: Reason, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)


class NotFound(_Specific):
    code = Code.NOT_FOUND


class AlreadyExists(DomainError):
    code = Code.ALREADY_EXISTS
    reason = Reason.ALREADY_EXISTS


class PermissionDenied(_Specific):
    code = Code.PERMISSION_DENIED


class Unauthenticated(_Specific):
    code = Code.UNAUTHENTICATED


class FailedPrecondition(_Specific):
    code = Code.FAILED_PRECONDITION


class InsufficientCredits(FailedPrecondition):
    def __init__(self, required: int, available: int) -> None:
        super().__init__(
            f"Insufficient credits. Required: {required}, Available: {available}",
            reason=Reason.INSUFFICIENT_CREDITS,
            metadata={"required": str(required), "available": str(available)},
        )


class LlmCallFailed(DomainError):
    code = Code.INTERNAL
    reason = Reason.LLM_CALL_FAILED


class DeadlineExceeded(DomainError):
    code = Code.DEADLINE_EXCEEDED
    reason = Reason.DEADLINE_EXCEEDED


class Unavailable(DomainError):
    code = Code.UNAVAILABLE
    reason = Reason.UNAVAILABLE


class ConcurrencyLimitExceeded(DomainError):
    """Too many requests of one key (or unauthenticated streams) at once: RESOURCE_EXHAUSTED."""

    code = Code.RESOURCE_EXHAUSTED
    reason = Reason.CONCURRENCY_LIMIT_EXCEEDED


class RateLimited(DomainError):
    """RESOURCE_EXHAUSTED (HTTP 429): a team's rpm or tpm limit is reached for this window
    (domain/admission.py); `retry_after` seconds until it ends."""

    code = Code.RESOURCE_EXHAUSTED
    reason = Reason.RATE_LIMITED

    def __init__(self, team_id: str, limit: str, value: int, retry_after: int) -> None:
        what = "requests" if limit == "rpm" else "tokens"
        super().__init__(
            f"Rate limit exceeded: team '{team_id}' reached its {limit}_limit of {value} "
            f"{what} per minute; retry after {retry_after} s",
            metadata={"limit": limit, "retry_after_seconds": str(retry_after)},
        )
        self.retry_after = retry_after


class NotImplementedYet(DomainError):
    code = Code.UNIMPLEMENTED
    reason = Reason.NOT_IMPLEMENTED


def team_not_found(team_id: str) -> NotFound:
    return NotFound(
        f"Team '{team_id}' not found", reason=Reason.TEAM_NOT_FOUND, metadata={"team_id": team_id}
    )


def job_not_found(job_id: str) -> NotFound:
    return NotFound(
        f"Job '{job_id}' not found", reason=Reason.JOB_NOT_FOUND, metadata={"job_id": job_id}
    )


def organization_not_found(organization_id: str) -> NotFound:
    return NotFound(
        f"Organization '{organization_id}' not found", reason=Reason.ORGANIZATION_NOT_FOUND
    )


def model_group_not_found(group_name: str) -> NotFound:
    return NotFound(
        f"Model group '{group_name}' not found",
        reason=Reason.MODEL_GROUP_NOT_FOUND,
        metadata={"group_name": group_name},
    )


def model_group_access_denied(team_id: str, group_name: str) -> PermissionDenied:
    return PermissionDenied(
        f"Team '{team_id}' does not have access to model group '{group_name}'",
        reason=Reason.MODEL_GROUP_ACCESS_DENIED,
        metadata={"team_id": team_id, "group_name": group_name},
    )


def access_group_not_found(name: str) -> NotFound:
    return NotFound(f"Model access group '{name}' not found", reason=Reason.ACCESS_GROUP_NOT_FOUND)


def from_storage(exc: Exception) -> Exception:
    """The client-facing error of a store error that reached the API untranslated: a database
    that cannot be reached is UNAVAILABLE (the client may retry); others are left as they are
    (an unexpected error: INTERNAL)."""
    if isinstance(exc, StorageUnavailable):
        return Unavailable(str(exc) or "Database unavailable, retry later")
    return exc


def job_limit_exceeded(job_id: str, limit: str, value: float, detail: str) -> FailedPrecondition:
    which = f"job '{job_id}'" if job_id else "a new job"
    return FailedPrecondition(
        f"Job limit exceeded: {which} reached {limit} ({value}){detail}; "
        "create a new job or raise the team's limits",
        reason=Reason.JOB_LIMIT_EXCEEDED,
        metadata={"limit": limit, "value": str(value), **({"job_id": job_id} if job_id else {})},
    )
