"""Domain errors. Each carries the gRPC code it maps to, an ErrorInfo reason
(see proto/saas_llm/v1/errors.proto) and a human message in the seeds' words.
The API layer's single error interceptor turns them into statuses."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum


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
    reason: str = "INTERNAL"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(DomainError):
    code = Code.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, metadata={"field": field} if field else None)


class NotFound(DomainError):
    code = Code.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = Code.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class PermissionDenied(DomainError):
    code = Code.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unauthenticated(DomainError):
    code = Code.UNAUTHENTICATED
    reason = "INVALID_API_KEY"


class FailedPrecondition(DomainError):
    code = Code.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class InsufficientCredits(FailedPrecondition):
    reason = "INSUFFICIENT_CREDITS"

    def __init__(self, required: int, available: int) -> None:
        super().__init__(
            f"Insufficient credits. Required: {required}, Available: {available}",
            metadata={"required": str(required), "available": str(available)},
        )


class LlmCallFailed(DomainError):
    code = Code.INTERNAL
    reason = "LLM_CALL_FAILED"


class DeadlineExceeded(DomainError):
    code = Code.DEADLINE_EXCEEDED
    reason = "DEADLINE_EXCEEDED"


class Unavailable(DomainError):
    code = Code.UNAVAILABLE
    reason = "UNAVAILABLE"


class ConcurrencyLimitExceeded(DomainError):
    """Too many requests of one key (or unauthenticated streams) at once: RESOURCE_EXHAUSTED."""

    code = Code.RESOURCE_EXHAUSTED
    reason = "CONCURRENCY_LIMIT_EXCEEDED"


class NotImplementedYet(DomainError):
    code = Code.UNIMPLEMENTED
    reason = "NOT_IMPLEMENTED"


def team_not_found(team_id: str) -> NotFound:
    return NotFound(
        f"Team '{team_id}' not found", reason="TEAM_NOT_FOUND", metadata={"team_id": team_id}
    )


def job_not_found(job_id: str) -> NotFound:
    return NotFound(
        f"Job '{job_id}' not found", reason="JOB_NOT_FOUND", metadata={"job_id": job_id}
    )


def organization_not_found(organization_id: str) -> NotFound:
    return NotFound(f"Organization '{organization_id}' not found", reason="ORGANIZATION_NOT_FOUND")


def model_group_not_found(group_name: str) -> NotFound:
    return NotFound(
        f"Model group '{group_name}' not found",
        reason="MODEL_GROUP_NOT_FOUND",
        metadata={"group_name": group_name},
    )


def model_group_access_denied(team_id: str, group_name: str) -> PermissionDenied:
    return PermissionDenied(
        f"Team '{team_id}' does not have access to model group '{group_name}'",
        reason="MODEL_GROUP_ACCESS_DENIED",
        metadata={"team_id": team_id, "group_name": group_name},
    )
