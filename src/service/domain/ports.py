"""What the domain needs from storage, as protocols the domain services are typed against.

storage/ implements them on SQLite and PostgreSQL (one writer per money operation per dialect);
tests/support/memory.py implements them in memory for the domain's unit tests. The domain
decides every rule and every error a client sees; a store reports facts:

- A money writer that could not apply writes nothing and says so (False / None). The domain then
  asks read-only questions (`team_state`, `job_by_request`, ...) to explain why, and raises or
  replays.
- Storage raises only the errors below, which the domain translates (AlreadyExists, NotFound,
  ...) or lets through (StorageUnavailable becomes UNAVAILABLE in the API's error mapping).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from service.domain.models import (
    AccessGroup,
    CallRecord,
    Credits,
    DirectUsageRow,
    Job,
    JobRef,
    LedgerEntry,
    ModelGroup,
    Organization,
    Team,
    TeamAuth,
    TeamLimits,
    UsageRow,
)
from service.providers.base import ModelSpec

# Errors a store raises ----------------------------------------------------------------------


class StorageError(Exception):
    """Base of the errors a store raises."""


class StorageUnavailable(StorageError):
    """The database cannot be reached, or gave up on a lock or a conflict: nothing was written
    and the request may be retried."""


class ConstraintViolation(StorageError):
    """A write broke a uniqueness or reference constraint; nothing was written."""


class UnknownReference(StorageError):
    """A write named something that does not exist (`kind`: organization, model_group,
    access_group); nothing was written."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"unknown {kind} {name!r}")
        self.kind = kind
        self.name = name


# What the stores are given ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewJob:
    job_id: str
    team_id: str
    user_id: str
    job_type: str
    metadata: dict[str, Any]
    request_id: str | None
    request_hash: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewCall:
    """A finished (or abandoned) LLM call to record."""

    job_id: str
    team_id: str
    model_group: str
    model: str
    purpose: str
    status: str
    streamed: bool
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool
    cost_usd: float | None
    latency_ms: int
    ttft_ms: int | None
    error: str | None
    attempts: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class JobClaim:
    """Ending an open job: `status` completed or failed. The store charges the job's credit
    when it is completed with no failed call recorded before the claim, else releases it."""

    job_id: str
    status: str
    result_metadata: dict[str, Any]
    error_message: str | None
    replay_response: dict[str, Any] | None
    # Only a job of this team is claimed (a team key's complete: the ownership check rides on
    # the claim instead of a read before it); None: any team's (the master key, the saga).
    team_id: str | None = None


@dataclass(frozen=True, slots=True)
class NewAddition:
    team_id: str
    amount: int
    reason: str
    metadata: dict[str, Any]
    request_id: str | None
    request_hash: str | None
    # The team's allocated total may not pass this.
    max_total: int


@dataclass(frozen=True, slots=True)
class TeamState:
    """What explains a refused reservation or addition (read-only)."""

    status: str
    credits: Credits


@dataclass(frozen=True, slots=True)
class StoredAddition:
    """A credit addition found by its request_id."""

    entry: LedgerEntry
    request_hash: str | None
    credits: Credits


@dataclass(frozen=True, slots=True)
class NewTeam:
    organization_id: str
    team_id: str
    team_alias: str
    group_names: Sequence[str]
    access_group_names: Sequence[str]
    credits_allocated: int
    metadata: dict[str, Any]
    key_hash: str
    key_prefix: str
    limits: TeamLimits = field(default_factory=TeamLimits)


# A team's budget for the OpenAI-compatible API: credits_allocated x $0.10, in nano-USD.
NANOS_PER_USD = 1_000_000_000
BUDGET_NANOS_PER_CREDIT = 100_000_000


@dataclass(frozen=True, slots=True)
class Budget:
    budget_nanos: int
    spent_nanos: int
    reserved_nanos: int

    @property
    def remaining_nanos(self) -> int:
        return self.budget_nanos - self.spent_nanos - self.reserved_nanos


@dataclass(frozen=True, slots=True)
class NewDirectCall:
    """A call of the OpenAI-compatible API being admitted: it holds `reserved_nanos` of its
    team's budget until it is settled."""

    call_id: str
    team_id: str
    kind: str  # chat | embeddings
    requested_model: str
    model_group: str
    model: str
    streamed: bool
    reserved_nanos: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DirectSettlement:
    """A direct call's end: its actual cost replaces its reservation."""

    call_id: str
    status: str  # success | failed | cancelled
    model: str
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool
    cost_nanos: int
    latency_ms: int
    ttft_ms: int | None
    error: str | None
    attempts: list[dict[str, Any]]


# The ports ----------------------------------------------------------------------------------


class JobStore(Protocol):
    async def create_job(self, job: NewJob) -> bool:
        """Insert a pending job and reserve its credit, atomically. False when nothing was
        written: the team is missing, suspended or out of credits, or the request_id is taken."""
        ...

    async def job_by_request(self, team_id: str, request_id: str) -> tuple[Job, str | None] | None:
        """The job a team created with `request_id`, and the hash of that request's body."""
        ...

    async def get_job(self, job_id: str, *, with_calls: bool = True) -> Job | None: ...

    async def job_ref(self, job_id: str) -> JobRef | None:
        """Owner and status of a job: what every LLM call checks first."""
        ...

    async def record_call(self, call: NewCall) -> CallRecord:
        """Store a call, add it to its job's totals and move an open job to in_progress."""
        ...

    async def complete_job(self, claim: JobClaim) -> Job | None:
        """End an open job and settle its credit, then read it back with its calls. None when
        the job was not open (or is missing): nothing was written."""
        ...

    async def update_job_metadata(
        self, job_id: str, merge: Callable[[str, dict[str, Any]], dict[str, Any]]
    ) -> Job | None:
        """Under the job's row lock: merge(status, metadata) -> new metadata (it may raise),
        stored. None when there is no such job."""
        ...

    async def expire_stale_jobs(self, cutoff: datetime, batch: int = 100) -> int:
        """Expire open jobs not touched since `cutoff`, releasing their credit."""
        ...

    async def list_team_jobs(
        self, team_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[int, list[Job]]: ...

    async def team_remaining(self, team_id: str) -> int | None:
        """The team's credits_remaining, or None when there is no such team."""
        ...

    async def admit_call(self, job_id: str, max_calls: int) -> bool:
        """Count one more call of an open job whose count is below `max_calls`, atomically
        (one conditional UPDATE). False when nothing was written: the job reached the bound,
        is no longer open, or is missing."""
        ...


class Ledger(Protocol):
    async def balance(self, team_id: str) -> Credits | None: ...

    async def team_state(self, team_id: str) -> TeamState | None: ...

    async def add_credits(self, addition: NewAddition) -> tuple[LedgerEntry, Credits] | None:
        """Add credits with their ledger row. None when nothing was written: no such team, or
        the total would pass `max_total`. ConstraintViolation when the request_id is taken."""
        ...

    async def addition_by_request(self, team_id: str, request_id: str) -> StoredAddition | None: ...

    async def transactions(
        self, team_id: str, limit: int, offset: int
    ) -> tuple[int, list[LedgerEntry]]: ...


class BudgetStore(Protocol):
    """The budget of the OpenAI-compatible API, on the same ledger rows as the credits."""

    async def reserve_budget(self, call: NewDirectCall) -> bool:
        """Hold `reserved_nanos` of the team's budget and record the call as in flight,
        atomically. False when nothing was written: no such team, suspended, or not enough
        budget left."""
        ...

    async def settle_budget(self, settlement: DirectSettlement) -> bool:
        """Release the call's reservation and spend its actual cost, with its record, in one
        transaction. False when the call was no longer in flight (settled or expired)."""
        ...

    async def budget_state(self, team_id: str) -> tuple[str, Budget] | None:
        """(team status, budget), or None when there is no such team."""
        ...

    async def expire_direct_calls(self, cutoff: datetime) -> int:
        """Settle direct calls in flight since before `cutoff` (a crashed replica's) at no cost,
        releasing their reservations."""
        ...


class TeamDirectory(Protocol):
    async def create_team(self, team: NewTeam) -> Team:
        """The team, its groups and its allocation's ledger row, atomically. UnknownReference
        for a missing organization or group; ConstraintViolation when the id is taken."""
        ...

    async def get_team(self, team_id: str) -> Team | None: ...

    async def groups_of(self, team_id: str) -> list[ModelGroup]:
        """The team's model groups in order (direct assignments, then via access groups)."""
        ...

    async def teams_of_organization(self, organization_id: str) -> list[Team]: ...

    async def auth_by_key_hash(self, key_hash: str) -> TeamAuth | None: ...

    async def set_model_groups(self, team_id: str, group_names: Sequence[str]) -> Team | None: ...

    async def rotate_key(self, team_id: str, key_hash: str, key_prefix: str) -> bool: ...

    async def limits_of(self, team_id: str) -> TeamLimits | None:
        """The team's limits (cached like groups_of: every call of the OpenAI-compatible API
        asks), or None when there is no such team."""
        ...

    async def set_limits(self, team_id: str, changes: dict[str, int | float]) -> Team | None:
        """Set the given limit columns (LIMIT_FIELDS names) and read the team back; None when
        there is no such team."""
        ...

    async def set_status(self, team_id: str, status: str, error_message: str) -> Team | None:
        """Suspend or resume. Suspending ends the team's open jobs as failed (with
        `error_message`) and releases their credits, in the same transaction."""
        ...


class Catalog(Protocol):
    """Organizations, model groups and model access groups."""

    async def create_organization(
        self, organization_id: str, name: str, metadata: dict[str, Any]
    ) -> Organization: ...

    async def get_organization(self, organization_id: str) -> Organization | None: ...

    async def list_organizations(self, limit: int, offset: int) -> tuple[list[Organization], int]:
        """A page of organizations ordered by id, and how many there are in all."""
        ...

    async def create_model_group(
        self,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
        *,
        cache_ttl_seconds: int = 0,
    ) -> ModelGroup: ...

    async def get_model_group(self, group_name: str) -> ModelGroup | None: ...

    async def list_model_groups(self) -> list[ModelGroup]: ...

    async def update_model_group(
        self,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
        *,
        cache_ttl_seconds: int = 0,
    ) -> ModelGroup | None: ...

    async def delete_model_group(self, group_name: str) -> int | None:
        """Delete an unused group: 0. The number of teams and access groups using it when it is
        in use (nothing deleted); None when there is no such group."""
        ...

    async def create_access_group(
        self, group_name: str, description: str, model_groups: Sequence[str]
    ) -> AccessGroup: ...

    async def list_access_groups(self) -> list[AccessGroup]: ...

    async def get_access_group(self, group_name: str) -> AccessGroup | None: ...


class UsageStore(Protocol):
    async def by_team_and_type(
        self,
        start: datetime,
        end: datetime,
        *,
        team_id: str | None = None,
        org_id: str | None = None,
    ) -> dict[tuple[str, str], UsageRow]:
        """{(team_id, job_type): aggregates} of jobs created in [start, end)."""
        ...

    async def direct_calls(
        self,
        start: datetime,
        end: datetime,
        *,
        team_id: str | None = None,
        org_id: str | None = None,
    ) -> DirectUsageRow:
        """Aggregates of the direct calls made in [start, end)."""
        ...


@dataclass(frozen=True, slots=True)
class RateDecision:
    """A rate limiter's answer. Admitted: the call was counted in `window` (requests +1,
    tokens + the estimate). Refused: nothing was counted; `limit` is "rpm" or "tpm" and
    `retry_after` the seconds until the window ends."""

    allowed: bool
    window: int = 0
    limit: str = ""
    retry_after: int = 0


class RateLimiter(Protocol):
    """Per-team requests and tokens per fixed window (service/ratelimit.py: Redis across
    replicas, or in process). An implementation that cannot reach its store admits (fails
    open) and reports it itself."""

    async def acquire(self, team_id: str, rpm: int, tpm: int, tokens: int) -> RateDecision: ...

    async def adjust(self, team_id: str, window: int, requests: int, tokens: int) -> None:
        """Add to (or, negative, take from) what `window` counted: a refund or a correction."""
        ...


class HealthProbe(Protocol):
    async def ping(self) -> None:
        """Raise when the database does not answer."""
        ...
