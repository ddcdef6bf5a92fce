"""The gateway's answers as pydantic models, field for field as the REST JSON (snake_case, the
names of proto/saas_llm/v1). Fields a newer gateway adds are kept (`extra="allow"`), so an older
client still parses its answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JSONObject = dict[str, Any]
# What messages= accepts: OpenAI chat messages as dicts ({"role": "user", "content": "..."}).
Messages = Sequence[Mapping[str, Any]]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Job(_Model):
    """A created job (POST /api/jobs/create)."""

    job_id: str
    status: str
    created_at: datetime


class LLMResponse(_Model):
    """The model's answer."""

    content: str = ""
    finish_reason: str = ""
    tool_calls: list[JSONObject] = Field(default_factory=list)


class CallMetadata(_Model):
    """Tokens, latency and the model group of one call (never the model or its cost)."""

    tokens_used: int = 0
    latency_ms: int = 0
    model_group: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # True when the model group's response cache answered (no provider called).
    cached: bool = False


class LLMCallResponse(_Model):
    """The answer of llm_call."""

    call_id: str
    response: LLMResponse
    metadata: CallMetadata

    @property
    def content(self) -> str:
        return self.response.content


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    estimated: bool = False


class StreamErrorInfo(_Model):
    code: int = 0
    message: str = ""


class JobCosts(_Model):
    """The cost summary of a job."""

    total_calls: int = 0
    successful_calls: int = 0
    failed_calls: int = 0
    total_tokens: int = 0
    total_cost_usd: float = 0.0
    avg_latency_ms: int = 0
    credit_applied: bool = False
    credits_remaining: int = 0
    pricing: str = ""


class StreamChunk(_Model):
    """One streamed message: a text delta; the last one carries finish_reason, usage and
    call_id (and, for create_and_call_stream, job_id and costs)."""

    content: str = ""
    finish_reason: str = ""
    call_id: str = ""
    usage: Usage | None = None
    error: StreamErrorInfo | None = None
    job_id: str = ""
    costs: JobCosts | None = None
    tool_calls: list[JSONObject] = Field(default_factory=list)


class JobCall(_Model):
    """One call of a job."""

    call_id: str
    purpose: str = ""
    model_group: str = ""
    tokens: int = 0
    latency_ms: int = 0
    error: str | None = None
    status: str = ""
    created_at: datetime | None = None


class CompleteJobResult(_Model):
    """The answer of complete_job."""

    job_id: str
    status: str
    completed_at: datetime | None = None
    costs: JobCosts
    calls: list[JobCall] = Field(default_factory=list)

    @property
    def credits_remaining(self) -> int:
        """The team's credits still available after this completion."""
        return self.costs.credits_remaining


class JobDetails(_Model):
    """A job with its calls (get_job)."""

    job_id: str
    team_id: str
    user_id: str = ""
    job_type: str
    status: str
    metadata: JSONObject = Field(default_factory=dict)
    created_at: datetime
    completed_at: datetime | None = None
    credit_applied: bool = False
    error_message: str | None = None
    result_metadata: JSONObject = Field(default_factory=dict)
    costs: JobCosts | None = None
    calls: list[JobCall] = Field(default_factory=list)


class CreditBalance(_Model):
    """The team's credits (get_balance)."""

    team_id: str
    credits_allocated: int
    credits_used: int
    credits_reserved: int = 0
    credits_remaining: int
    credit_limit: int | None = None
    auto_refill: bool = False


class UsageSummary(_Model):
    total_jobs: int = 0
    successful_jobs: int = 0
    failed_jobs: int = 0
    total_cost_usd: float = 0.0
    total_tokens: int = 0
    avg_cost_per_job: float = 0.0


class JobTypeUsage(_Model):
    count: int = 0
    cost_usd: float = 0.0


class TeamUsage(_Model):
    """The team's usage in one UTC month (get_usage)."""

    team_id: str
    period: str
    summary: UsageSummary
    job_types: dict[str, JobTypeUsage] = Field(default_factory=dict)


class CreateAndCallResult(_Model):
    """The answer of create_and_call: the call's answer plus the job and its completion."""

    job_id: str
    call_id: str
    response: LLMResponse
    metadata: CallMetadata
    status: str
    completed_at: datetime | None = None
    costs: JobCosts

    @property
    def content(self) -> str:
        return self.response.content

    @property
    def credits_remaining(self) -> int:
        return self.costs.credits_remaining
