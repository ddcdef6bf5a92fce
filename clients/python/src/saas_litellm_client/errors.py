"""Typed errors, one class per `ErrorInfo.reason` a program can act on.

Every error of the gateway is a gRPC status with one `google.rpc.ErrorInfo` (REST:
`{"code", "message", "details": [ErrorInfo]}`); `reason` is the stable value to branch on (the
list is the ErrorReason enum of proto/saas_llm/v1/errors.proto). `error_from()` picks the class
of the reason, or of the gRPC code when the reason is unknown to this version of the client (an
error of Envoy itself has no ErrorInfo at all), so every error is at least a
`SaasLiteLLMError` with `code`, `message`, `reason` and `metadata`.
"""

from __future__ import annotations

from collections.abc import Mapping

# gRPC status codes (numbers as on the wire and in the REST error's "code").
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


class SaasLiteLLMError(Exception):
    """An error answer of the gateway (or a transport failure, `code` UNAVAILABLE)."""

    def __init__(
        self,
        message: str,
        *,
        code: int = INTERNAL,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        # The HTTP status of a REST answer; None over gRPC or without an answer.
        self.http_status = http_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code}, reason={self.reason!r})"


class InvalidRequestError(SaasLiteLLMError):
    """INVALID_ARGUMENT: a field is missing, malformed or out of bounds (`metadata["field"]`)."""


class AuthenticationError(SaasLiteLLMError):
    """UNAUTHENTICATED: missing or unknown key (MISSING_API_KEY, INVALID_API_KEY)."""


class PermissionDeniedError(SaasLiteLLMError):
    """PERMISSION_DENIED: the key may not do this (ADMIN_REQUIRED, TEAM_MISMATCH, ...)."""


class ModelGroupAccessDeniedError(PermissionDeniedError):
    """The team is not assigned the model group (MODEL_GROUP_ACCESS_DENIED)."""


class TeamSuspendedError(PermissionDeniedError):
    """The team is suspended (TEAM_SUSPENDED)."""


class NotFoundError(SaasLiteLLMError):
    """NOT_FOUND: a team, organization, model group or access group does not exist."""


class JobNotFoundError(NotFoundError):
    """No such job, or not the key's team's (JOB_NOT_FOUND)."""


class ConflictError(SaasLiteLLMError):
    """ALREADY_EXISTS: an id is taken, or a request_id was reused with another body."""


class FailedPreconditionError(SaasLiteLLMError):
    """FAILED_PRECONDITION: the request is valid but the state does not allow it."""


class InsufficientCreditsError(FailedPreconditionError):
    """No credit left to reserve for a new job (INSUFFICIENT_CREDITS: "Insufficient credits.
    Required: 1, Available: 0")."""


class JobNotOpenError(FailedPreconditionError):
    """The job is completed, failed or expired (JOB_NOT_OPEN)."""


class JobAlreadyCompletedError(FailedPreconditionError):
    """complete_job was called again with another status (JOB_ALREADY_COMPLETED)."""


class NoModelGroupError(FailedPreconditionError):
    """No model_group given and the team has none assigned (NO_MODEL_GROUP)."""


class JobLimitExceededError(FailedPreconditionError):
    """A per-job bound (calls, tokens, cost) would be passed (JOB_LIMIT_EXCEEDED)."""


class RequestInProgressError(FailedPreconditionError):
    """A retry of a create-and-call whose first request still runs (REQUEST_IN_PROGRESS)."""


class RateLimitedError(SaasLiteLLMError):
    """RESOURCE_EXHAUSTED: the team's rate limit (RATE_LIMITED). `retry_after` is the number of
    seconds the gateway asks to wait (ErrorInfo metadata `retry_after_seconds`), or None."""

    @property
    def retry_after(self) -> float | None:
        value = self.metadata.get("retry_after_seconds")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class LLMCallFailedError(SaasLiteLLMError):
    """Every model of the group failed ("LLM call failed: ..."; LLM_CALL_FAILED)."""


class RequestTimeoutError(SaasLiteLLMError, TimeoutError):
    """The request's deadline ran out: the client's timeout or the gateway's (DEADLINE_EXCEEDED)."""


class ServiceUnavailableError(SaasLiteLLMError):
    """UNAVAILABLE: the gateway is down, shutting down or unreachable."""


class StreamError(SaasLiteLLMError):
    """A stream ended on an error after its first chunk (the last message's `error`)."""


class StructuredOutputError(SaasLiteLLMError):
    """structured_call's answer is not valid JSON for the response model. `content` is the raw
    text the model produced."""

    def __init__(self, message: str, *, content: str) -> None:
        super().__init__(message, code=INTERNAL, reason="STRUCTURED_OUTPUT_INVALID")
        self.content = content


_BY_REASON: dict[str, type[SaasLiteLLMError]] = {
    "INVALID_ARGUMENT": InvalidRequestError,
    "MISSING_API_KEY": AuthenticationError,
    "INVALID_API_KEY": AuthenticationError,
    "ADMIN_REQUIRED": PermissionDeniedError,
    "TEAM_MISMATCH": PermissionDeniedError,
    "NO_ACCESS_RULE": PermissionDeniedError,
    "MODEL_GROUP_ACCESS_DENIED": ModelGroupAccessDeniedError,
    "TEAM_SUSPENDED": TeamSuspendedError,
    "ORGANIZATION_NOT_FOUND": NotFoundError,
    "TEAM_NOT_FOUND": NotFoundError,
    "MODEL_GROUP_NOT_FOUND": NotFoundError,
    "ACCESS_GROUP_NOT_FOUND": NotFoundError,
    "JOB_NOT_FOUND": JobNotFoundError,
    "ALREADY_EXISTS": ConflictError,
    "IDEMPOTENCY_KEY_REUSED": ConflictError,
    "INSUFFICIENT_CREDITS": InsufficientCreditsError,
    "JOB_NOT_OPEN": JobNotOpenError,
    "JOB_ALREADY_COMPLETED": JobAlreadyCompletedError,
    "NO_MODEL_GROUP": NoModelGroupError,
    "JOB_LIMIT_EXCEEDED": JobLimitExceededError,
    "REQUEST_IN_PROGRESS": RequestInProgressError,
    "RATE_LIMITED": RateLimitedError,
    "LLM_CALL_FAILED": LLMCallFailedError,
    "DEADLINE_EXCEEDED": RequestTimeoutError,
    "UNAVAILABLE": ServiceUnavailableError,
}

_BY_CODE: dict[int, type[SaasLiteLLMError]] = {
    INVALID_ARGUMENT: InvalidRequestError,
    DEADLINE_EXCEEDED: RequestTimeoutError,
    NOT_FOUND: NotFoundError,
    ALREADY_EXISTS: ConflictError,
    PERMISSION_DENIED: PermissionDeniedError,
    RESOURCE_EXHAUSTED: RateLimitedError,
    FAILED_PRECONDITION: FailedPreconditionError,
    UNAVAILABLE: ServiceUnavailableError,
    UNAUTHENTICATED: AuthenticationError,
}


def error_from(
    code: int,
    message: str,
    reason: str = "",
    metadata: Mapping[str, str] | None = None,
    http_status: int | None = None,
) -> SaasLiteLLMError:
    """The typed error for a gRPC code and ErrorInfo reason."""
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, SaasLiteLLMError)
    return cls(message, code=code, reason=reason, metadata=metadata, http_status=http_status)
