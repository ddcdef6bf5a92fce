"""Plain records passed between storage, domain and API. No SQL or gRPC types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service.providers.base import ModelSpec

JOB_STATUSES = ("pending", "in_progress", "completed", "failed", "expired")
OPEN_STATUSES = ("pending", "in_progress")
FINAL_STATUSES = ("completed", "failed")


@dataclass(frozen=True, slots=True)
class Organization:
    organization_id: str
    name: str
    status: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ModelGroup:
    model_group_id: str
    group_name: str
    display_name: str
    description: str
    status: str
    models: list[ModelSpec]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    # Response cache (issue 16): seconds an answer is served again to an identical call; 0 off.
    cache_ttl_seconds: int = 0


@dataclass(frozen=True, slots=True)
class AccessGroup:
    """A named bundle of model groups (seed 004 "model access groups")."""

    group_name: str
    description: str
    model_groups: list[str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Credits:
    allocated: int
    used: int
    reserved: int

    @property
    def remaining(self) -> int:
        return self.allocated - self.used - self.reserved


@dataclass(frozen=True, slots=True)
class TeamLimits:
    """A team's rate limits (per minute) and per-job bounds; 0 = none (DESIGN.md
    "Operations")."""

    rpm_limit: int = 0
    tpm_limit: int = 0
    max_calls_per_job: int = 100
    max_tokens_per_job: int = 0
    max_job_cost_usd: float = 0.0

    @property
    def rate_limited(self) -> bool:
        return bool(self.rpm_limit or self.tpm_limit)


LIMIT_FIELDS = (
    "rpm_limit",
    "tpm_limit",
    "max_calls_per_job",
    "max_tokens_per_job",
    "max_job_cost_usd",
)


@dataclass(frozen=True, slots=True)
class Team:
    team_id: str
    organization_id: str
    team_alias: str
    status: str
    metadata: dict[str, Any]
    key_prefix: str
    credits: Credits
    model_groups: list[str]
    allowed_models: list[str]
    created_at: datetime
    updated_at: datetime
    access_groups: list[str] = field(default_factory=list)
    limits: TeamLimits = field(default_factory=TeamLimits)


@dataclass(frozen=True, slots=True)
class TeamAuth:
    """What authentication needs to know about a key's team."""

    team_id: str
    status: str


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    transaction_id: str
    team_id: str
    transaction_type: str
    credits_amount: int
    balance_after: int
    reason: str
    job_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CallRecord:
    call_id: str
    job_id: str
    model_group: str
    model: str
    purpose: str
    status: str  # success | failed | cancelled
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    latency_ms: int
    error: str | None
    created_at: datetime

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class JobRef:
    """What an LLM call needs to know about its job."""

    job_id: str
    team_id: str
    status: str
    # What the per-job bounds are checked against, read with the job (one statement): the
    # calls admitted so far, the recorded totals, and the team's limits.
    calls_admitted: int = 0
    total_tokens: int = 0
    total_cost_usd: float = 0.0
    limits: TeamLimits | None = None


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    team_id: str
    user_id: str
    job_type: str
    status: str
    metadata: dict[str, Any]
    result_metadata: dict[str, Any] | None
    error_message: str | None
    credit_applied: bool
    credits_remaining_after: int | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    calls: list[CallRecord] = field(default_factory=list)
    replay_response: dict[str, Any] | None = None

    @property
    def billed_calls(self) -> list[CallRecord]:
        """The calls the job's summary and its credit decision cover: for an
        ended job, those recorded before it ended. A call still running when
        the client completed the job is recorded afterwards (its tokens count
        in usage) but cannot change a final summary or charge."""
        if self.completed_at is None:
            return self.calls
        return [c for c in self.calls if c.created_at <= self.completed_at]


@dataclass(frozen=True, slots=True)
class JobCosts:
    total_calls: int
    successful_calls: int
    failed_calls: int
    total_tokens: int
    total_cost_usd: float
    avg_latency_ms: int
    credit_applied: bool
    credits_remaining: int
    pricing: str  # priced | partial | unpriced

    @staticmethod
    def of(calls: list[CallRecord], *, credit_applied: bool, credits_remaining: int) -> JobCosts:
        total = len(calls)
        failed = sum(1 for c in calls if c.status == "failed")
        ok = sum(1 for c in calls if c.status == "success")
        priced = [c.cost_usd for c in calls if c.cost_usd is not None]
        if not calls or len(priced) == total:
            pricing = "priced"
        elif priced:
            pricing = "partial"
        else:
            pricing = "unpriced"
        return JobCosts(
            total_calls=total,
            successful_calls=ok,
            failed_calls=failed,
            total_tokens=sum(c.tokens for c in calls),
            total_cost_usd=round(sum(priced), 10),
            avg_latency_ms=round(sum(c.latency_ms for c in calls) / total) if total else 0,
            credit_applied=credit_applied,
            credits_remaining=credits_remaining,
            pricing=pricing,
        )


@dataclass(frozen=True, slots=True)
class DirectUsageRow:
    """Calls of the OpenAI-compatible API within a period."""

    total_calls: int = 0
    successful_calls: int = 0
    total_tokens: int = 0
    total_cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Aggregates of one slice (a team, a job type) of a period."""

    total_jobs: int
    successful_jobs: int
    failed_jobs: int
    total_cost_usd: float
    total_tokens: int
