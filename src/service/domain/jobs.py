"""Jobs: create (reserve a credit), LLM calls, complete (settle the credit), reads, and
create-and-call (unary and streamed). The rules of seed 003 "Credit Deduction Logic" are
written here and applied by the store's single writer of each money operation (domain/ports.py
JobStore); when a writer writes nothing, this module reads why and raises or replays."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from saas_llm.v1.reasons import Reason
from service.domain import validation as v
from service.domain.admission import (
    NO_TICKET,
    Admission,
    LocalRateLimiter,
    Ticket,
    estimate_tokens,
)
from service.domain.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InsufficientCredits,
    InvalidArgument,
    LlmCallFailed,
    job_not_found,
    model_group_access_denied,
    model_group_not_found,
    team_not_found,
)
from service.domain.idempotency import body_hash
from service.domain.llm import Attempts, CallRunner, Outcome
from service.domain.models import (
    FINAL_STATUSES,
    JOB_STATUSES,
    OPEN_STATUSES,
    CallRecord,
    Job,
    JobCosts,
    JobRef,
    ModelGroup,
)
from service.domain.ports import Catalog, JobClaim, JobStore, Ledger, NewCall, NewJob, TeamDirectory
from service.domain.principal import ADMIN, Principal
from service.domain.streaming import Relayed, relay, stop_when
from service.observe import CallObserver, LogObserver
from service.providers.base import ChatRequest, ChatResult, ModelSpec, TokenUsage
from service.providers.costs import cost_of

VALID_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
# gRPC code of a stream's final error event when the provider failed.
_INTERNAL = 13
# Attempts to create a job when the reservation and the read that explains its refusal disagree
# (credits added or a suspension lifted in between).
_CREATE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class CallInput:
    """One LLM call as the client asked for it."""

    model_group: str
    purpose: str
    request: ChatRequest


@dataclass(frozen=True, slots=True)
class CallAnswer:
    call: CallRecord
    result: ChatResult
    # Answered by the model group's response cache: no provider was called.
    cached: bool = False


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """create-and-call-stream: the job exists (first event)."""

    job_id: str


@dataclass(frozen=True, slots=True)
class StreamDelta:
    content: str
    tool_calls: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class StreamDone:
    call: CallRecord
    finish_reason: str
    usage: TokenUsage
    # create-and-call-stream: the completed job.
    job: Job | None = None
    costs: JobCosts | None = None


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """A failure after the first chunk: the stream ends with this event."""

    message: str
    call: CallRecord
    code: int = _INTERNAL


StreamEvent = StreamStarted | StreamDelta | StreamDone | StreamFailed


@dataclass(frozen=True, slots=True)
class CreateAndCallResult:
    job: Job
    costs: JobCosts
    answer: CallAnswer


def validate_call(call: CallInput) -> None:
    if call.model_group:
        v.require_id(call.model_group, "model_group")
    v.text(call.purpose, "purpose", max_len=128)
    validate_request(call.request)


def validate_request(request: ChatRequest) -> None:
    """The bounds of a chat request, whichever API it came through."""
    msgs = request.messages
    if not msgs:
        raise InvalidArgument("messages must contain at least one message", field="messages")
    if len(msgs) > v.MAX_MESSAGES:
        raise InvalidArgument(f"messages has more than {v.MAX_MESSAGES} entries", field="messages")
    for m in msgs:
        if m.get("role") not in VALID_ROLES:
            raise InvalidArgument(
                "messages.role must be one of system, user, assistant, tool, developer",
                field="messages.role",
            )
        content = m.get("content")
        if len(m) == 2 and type(content) is str:
            # The common message, {role, content: "text"} (the role was just checked): one scan.
            v.json_value(content, "messages")
        else:
            v.json_value(m, "messages")
    p = request.params
    # Every parameter (the OpenAI-compatible API passes any OpenAI field through): no NUL, no
    # deeper nesting than the limit.
    for key, value in p.items():
        if type(value) is not int and type(value) is not float:
            v.json_value(value, key)
    t = p.get("temperature")
    if t is not None and not 0 <= t <= 2:
        raise InvalidArgument("temperature must be between 0 and 2", field="temperature")
    tp = p.get("top_p")
    if tp is not None and not 0 <= tp <= 1:
        raise InvalidArgument("top_p must be between 0 and 1", field="top_p")
    mt = p.get("max_tokens")
    if mt is not None and not 1 <= mt <= 1_000_000:
        raise InvalidArgument("max_tokens must be between 1 and 1000000", field="max_tokens")
    if len(p.get("tools") or ()) > 128:
        raise InvalidArgument("tools has more than 128 entries", field="tools")


def _fingerprint(call: CallInput) -> dict[str, Any]:
    """What makes two create-and-call requests the same call (with the job's own fields)."""
    return {
        "call": orjson.dumps(call.request.messages).decode(),
        "g": call.model_group,
        "p": orjson.dumps(call.request.params, option=orjson.OPT_SORT_KEYS).decode(),
        "purpose": call.purpose,
    }


def _public_attempts(attempts: Attempts) -> list[dict[str, Any]]:
    """Attempts as a client may see them: no model names (seed 003)."""
    return [
        {"attempt": i + 1, "error": a["error"], "latency_ms": a["latency_ms"]}
        for i, a in enumerate(attempts.items)
    ]


class JobsService:
    def __init__(
        self,
        jobs: JobStore,
        teams: TeamDirectory,
        catalog: Catalog,
        ledger: Ledger,
        runner: CallRunner,
        observer: CallObserver | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.jobs = jobs
        # Every call passes it before its provider is contacted (rate limits, job bounds).
        self.admission = admission or Admission(teams, jobs, LocalRateLimiter())
        self.teams = teams
        self.catalog = catalog
        self.ledger = ledger
        self.runner = runner
        # Told of every recorded call (service/observe.py: metrics, when they are on).
        self.observer = observer or LogObserver()
        # Set when the process shuts down: streams still open end with a final error event.
        self.draining = asyncio.Event()

    # Create ------------------------------------------------------------------

    async def create(
        self,
        who: Principal,
        *,
        team_id: str,
        user_id: str,
        job_type: str,
        metadata: dict[str, Any],
        request_id: str,
        fingerprint_extra: dict[str, Any] | None = None,
    ) -> tuple[Job, bool]:
        """A new pending job holding 1 reserved credit: (job, replayed)."""
        v.require_id(team_id, "team_id")
        who.require_team(team_id)
        v.text(user_id, "user_id", max_len=256)
        v.text(job_type, "job_type", max_len=128, required=True)
        metadata = v.metadata(metadata)
        rid = v.optional_id(request_id, "request_id")
        rhash = None
        if rid:
            rhash = body_hash(
                {"u": user_id, "t": job_type, "m": metadata, **(fingerprint_extra or {})}
            )
            found = await self._by_request(team_id, rid, rhash)
            if found is not None:
                return found, True
        new = NewJob(
            job_id=_new_id(),
            team_id=team_id,
            user_id=user_id,
            job_type=job_type,
            metadata=metadata,
            request_id=rid,
            request_hash=rhash,
            created_at=_utcnow(),
        )
        for _ in range(_CREATE_ATTEMPTS):
            if await self.jobs.create_job(new):
                return _created(new), False
            # Nothing was written: say why.
            if rid:
                # A concurrent retry with the same request_id won the race.
                found = await self._by_request(team_id, rid, rhash)
                if found is not None:
                    return found, True
            state = await self.ledger.team_state(team_id)
            if state is None:
                raise team_not_found(team_id)
            if state.status != "active":
                raise FailedPrecondition(
                    f"Team '{team_id}' is suspended", reason=Reason.TEAM_SUSPENDED
                )
            if state.credits.remaining < 1:
                raise InsufficientCredits(required=1, available=max(state.credits.remaining, 0))
            # The team could pay now: credits were added (or a job ended) meanwhile. Again.
        # Every write was refused while the team existed: at each write its credit was held
        # (or it was suspended) and freed again before the diagnosis. Churn on the team's last
        # credit is not an outage: the client gets CreateJob's documented answer as of the
        # refused writes, not a 503 that the clients would retry into the same churn.
        raise InsufficientCredits(required=1, available=0)

    async def _by_request(self, team_id: str, request_id: str, rhash: str | None) -> Job | None:
        found = await self.jobs.job_by_request(team_id, request_id)
        if found is None:
            return None
        job, stored_hash = found
        if stored_hash != rhash:
            raise AlreadyExists(
                f"request_id '{request_id}' was already used with a different body",
                reason=Reason.IDEMPOTENCY_KEY_REUSED,
            )
        return job

    # Reads -------------------------------------------------------------------

    async def _owned(self, who: Principal, job_id: str, *, with_calls: bool) -> Job:
        v.require_id(job_id, "job_id")
        job = await self.jobs.get_job(job_id, with_calls=with_calls)
        # Another team's job is indistinguishable from a missing one.
        if job is None or not who.owns(job.team_id):
            raise job_not_found(job_id)
        return job

    async def get(self, who: Principal, job_id: str) -> tuple[Job, JobCosts]:
        job = await self._owned(who, job_id, with_calls=True)
        return job, await self._costs(job)

    async def _costs(self, job: Job) -> JobCosts:
        remaining = job.credits_remaining_after
        if remaining is None:
            # A job's team always exists (foreign key).
            remaining = await self.jobs.team_remaining(job.team_id) or 0
        return JobCosts.of(
            job.billed_calls, credit_applied=job.credit_applied, credits_remaining=remaining
        )

    async def list_for_team(
        self, who: Principal, team_id: str, status: str, limit: int, offset: int
    ) -> tuple[int, list[tuple[Job, JobCosts]]]:
        v.require_id(team_id, "team_id")
        who.require_team(team_id)
        if status and status not in JOB_STATUSES:
            raise InvalidArgument(
                "status must be one of " + ", ".join(JOB_STATUSES), field="status"
            )
        # One read answers both "does the team exist" and its credits_remaining.
        remaining = await self.jobs.team_remaining(team_id)
        if remaining is None:
            raise team_not_found(team_id)
        limit, offset = v.page(limit, offset, default_limit=100)
        total, jobs = await self.jobs.list_team_jobs(team_id, status or None, limit, offset)
        return total, [
            (
                j,
                JobCosts.of(
                    j.billed_calls,
                    credit_applied=j.credit_applied,
                    credits_remaining=j.credits_remaining_after
                    if j.credits_remaining_after is not None
                    else remaining,
                ),
            )
            for j in jobs
        ]

    async def update_metadata(
        self, who: Principal, job_id: str, patch: dict[str, Any]
    ) -> tuple[Job, JobCosts]:
        v.metadata(patch)
        await self._owned(who, job_id, with_calls=False)

        def merge(status: str, current: dict[str, Any]) -> dict[str, Any]:
            if status not in OPEN_STATUSES:
                raise FailedPrecondition(
                    f"Job '{job_id}' is {status}; its metadata can no longer change",
                    reason=Reason.JOB_NOT_OPEN,
                )
            for key, value in patch.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
            if len(orjson.dumps(current)) > v.MAX_METADATA_BYTES:
                raise InvalidArgument(
                    f"metadata would exceed {v.MAX_METADATA_BYTES} bytes", field="metadata"
                )
            return current

        job = await self.jobs.update_job_metadata(job_id, merge)
        if job is None:
            raise job_not_found(job_id)
        return job, await self._costs(job)

    # Complete ----------------------------------------------------------------

    async def complete(
        self,
        who: Principal,
        job_id: str,
        status: str,
        metadata: dict[str, Any],
        error_message: str,
    ) -> tuple[Job, JobCosts]:
        if status not in FINAL_STATUSES:
            raise InvalidArgument('status must be "completed" or "failed"', field="status")
        v.text(error_message, "error_message", max_len=4096)
        metadata = v.metadata(metadata)
        v.require_id(job_id, "job_id")
        job, _replayed = await self.settle(job_id, status, metadata, error_message or None, who=who)
        return job, await self._costs(job)

    async def settle(
        self,
        job_id: str,
        status: str,
        metadata: dict[str, Any],
        error_message: str | None,
        replay_response: dict[str, Any] | None = None,
        *,
        who: Principal = ADMIN,
    ) -> tuple[Job, bool]:
        """End an open job: a deduction when `status` is completed and no call failed, else a
        release. A repeat with the same status returns the stored job (replayed) and moves no
        credit; another status is refused. A job `who` does not own is not found: a team key
        claims only its own team's jobs, so the ownership check rides on the claim and the way
        that succeeds reads nothing before it."""
        claim = JobClaim(
            job_id=job_id,
            status=status,
            result_metadata=metadata,
            error_message=error_message,
            replay_response=replay_response,
            team_id=None if who.is_admin else (who.team_id or ""),
        )
        done = await self.jobs.complete_job(claim)
        if done is not None:
            return done, False
        job = await self.jobs.get_job(job_id)
        # Another team's job is indistinguishable from a missing one.
        if job is None or not who.owns(job.team_id):
            raise job_not_found(job_id)
        if job.status == status:
            return job, True
        raise FailedPrecondition(
            f"Job '{job_id}' is already {job.status}",
            reason=Reason.JOB_ALREADY_COMPLETED if job.status != "expired" else Reason.JOB_NOT_OPEN,
        )

    async def _target(self, who: Principal, job_id: str) -> JobRef:
        """The job's owner and status (one primary-key read), for calls and completes."""
        v.require_id(job_id, "job_id")
        job = await self.jobs.job_ref(job_id)
        # Another team's job is indistinguishable from a missing one.
        if job is None or not who.owns(job.team_id):
            raise job_not_found(job_id)
        return job

    # LLM calls -----------------------------------------------------------------

    async def _prepare(
        self, who: Principal, job_id: str, call: CallInput, ticket: Ticket | None = None
    ) -> tuple[JobRef, ModelGroup, CallInput, Ticket]:
        """Validate, check the job and its group, then admit the call (domain/admission.py):
        the call to send (max_tokens capped by the job's bound) and its rate-limit ticket."""
        validate_call(call)
        job = await self._target(who, job_id)
        if job.status not in OPEN_STATUSES:
            raise FailedPrecondition(
                f"Job '{job_id}' is {job.status}; create a new job for more calls",
                reason=Reason.JOB_NOT_OPEN,
            )
        group = await self._group_for(job.team_id, call.model_group)
        request, ticket = await self.admission.admit_job_call(job, call.request, ticket)
        if request is not call.request:
            call = CallInput(model_group=call.model_group, purpose=call.purpose, request=request)
        return job, group, call, ticket

    async def _group_for(self, team_id: str, name: str) -> ModelGroup:
        groups = await self.teams.groups_of(team_id)
        if not name:
            if not groups:
                raise FailedPrecondition(
                    f"Team '{team_id}' has no model group assigned; pass model_group",
                    reason=Reason.NO_MODEL_GROUP,
                )
            return groups[0]
        for g in groups:
            if g.group_name == name:
                return g
        if await self.catalog.get_model_group(name) is None:
            raise model_group_not_found(name)
        raise model_group_access_denied(team_id, name)

    async def _record(
        self,
        job: JobRef,
        group: ModelGroup,
        call: CallInput,
        *,
        model: ModelSpec,
        status: str,
        usage: TokenUsage,
        started: float,
        ttft_ms: int | None,
        error: str | None,
        attempts: Attempts,
        streamed: bool,
        chunks: int = 0,
        cached: bool = False,
        ticket: Ticket = NO_TICKET,
    ) -> CallRecord:
        if cached:
            # A cache hit costs the provider nothing (its tokens are the answer's).
            cost: float | None = 0.0
        else:
            cost = (
                cost_of(model, usage)
                if usage.total_tokens
                else (0.0 if status != "success" else None)
            )
        seconds = time.perf_counter() - started
        self.observer.call(
            group.group_name,
            model.model_name,
            "cached" if cached else status,
            failed_attempts=len(attempts.items) - 1 if status == "success" and not cached else 0,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=cost,
            seconds=seconds,
            ttft_seconds=None if ttft_ms is None else ttft_ms / 1000,
            chunks=chunks,
        )
        record = NewCall(
            job_id=job.job_id,
            team_id=job.team_id,
            model_group=group.group_name,
            model=model.model_name,
            purpose=call.purpose,
            status=status,
            streamed=streamed,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            usage_estimated=usage.estimated,
            cost_usd=cost,
            latency_ms=int(seconds * 1000),
            ttft_ms=ttft_ms,
            error=error,
            attempts=attempts.items,
        )
        # Shielded: a client that goes away must not lose the record of a call the provider
        # already served (or was serving).
        stored = await asyncio.shield(self.jobs.record_call(record))
        # The rate limiter's tokens: the admission's estimate becomes the actual usage.
        await ticket.settle(usage.total_tokens)
        return stored

    async def llm_call(
        self,
        who: Principal,
        job_id: str,
        call: CallInput,
        deadline: float | None,
        *,
        ticket: Ticket | None = None,
    ) -> CallAnswer:
        """`ticket`: the rate limits were counted already (create-and-call)."""
        job, group, call, ticket = await self._prepare(who, job_id, call, ticket)
        started = time.perf_counter()
        try:
            outcome = await self.runner.complete(group, call.request, deadline, team_id=job.team_id)
        except (DeadlineExceeded, asyncio.CancelledError) as exc:
            await self._record_interrupted(job, group, call, started, exc, False, ticket)
            raise
        return await self._finish(job, group, call, outcome, started, deadline, ticket)

    async def _record_interrupted(
        self,
        job: JobRef,
        group: ModelGroup,
        call: CallInput,
        started: float,
        exc: BaseException,
        streamed: bool,
        ticket: Ticket,
    ) -> None:
        """Record a call that ended before any answer: out of time (failed, nothing charged by
        the provider), or cancelled because the client went away, with an estimate of the
        prompt it was sent."""
        if isinstance(exc, DeadlineExceeded):
            await self._record_failure(job, group, call, started, "Deadline exceeded", ticket)
            return
        usage = TokenUsage(estimate_tokens(call.request.messages), 0, estimated=True)
        await self._record(
            job,
            group,
            call,
            model=group.models[0],
            status="cancelled",
            usage=usage,
            started=started,
            ttft_ms=None,
            error="client cancelled the call",
            attempts=Attempts(),
            streamed=streamed,
            ticket=ticket,
        )

    async def _record_failure(
        self,
        job: JobRef,
        group: ModelGroup,
        call: CallInput,
        started: float,
        error: str,
        ticket: Ticket,
    ) -> CallRecord:
        return await self._record(
            job,
            group,
            call,
            model=group.models[0],
            status="failed",
            usage=TokenUsage(0, 0),
            started=started,
            ttft_ms=None,
            error=error,
            attempts=Attempts(),
            streamed=False,
            ticket=ticket,
        )

    async def _finish(
        self,
        job: JobRef,
        group: ModelGroup,
        call: CallInput,
        outcome: Outcome,
        started: float,
        deadline: float | None,
        ticket: Ticket,
    ) -> CallAnswer:
        if outcome.result is None:
            error = outcome.error or "unknown error"
            await self._record(
                job,
                group,
                call,
                model=outcome.model,
                status="failed",
                usage=TokenUsage(0, 0),
                started=started,
                ttft_ms=None,
                error=error,
                attempts=outcome.attempts,
                streamed=False,
                ticket=ticket,
            )
            if deadline is not None and time.monotonic() >= deadline - 0.06:
                raise DeadlineExceeded(f"Deadline exceeded: {error}")
            raise LlmCallFailed(
                f"LLM call failed: {error}",
                metadata={"attempts": orjson.dumps(_public_attempts(outcome.attempts)).decode()},
            )
        record = await self._record(
            job,
            group,
            call,
            model=outcome.model,
            status="success",
            usage=outcome.result.usage,
            started=started,
            ttft_ms=None,
            error=None,
            attempts=outcome.attempts,
            streamed=False,
            cached=outcome.cached,
            ticket=ticket,
        )
        return CallAnswer(call=record, result=outcome.result, cached=outcome.cached)

    async def llm_call_stream(
        self,
        who: Principal,
        job_id: str,
        call: CallInput,
        deadline: float | None,
        *,
        ticket: Ticket | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Validate, pick the group and admit the call first (errors before the first event
        are ordinary RPC errors), then stream."""
        job, group, call, ticket = await self._prepare(who, job_id, call, ticket)
        return self._stream(job, group, call, deadline, ticket)

    async def _stream(
        self,
        job: JobRef,
        group: ModelGroup,
        call: CallInput,
        deadline: float | None,
        ticket: Ticket,
    ) -> AsyncGenerator[StreamEvent, None]:
        started = time.perf_counter()
        try:
            opened = await self.runner.open_stream(group, call.request, deadline)
        except (DeadlineExceeded, asyncio.CancelledError) as exc:
            await self._record_interrupted(job, group, call, started, exc, True, ticket)
            raise
        if isinstance(opened, Outcome):
            # Every model failed before its first chunk: a normal error.
            await self._finish(job, group, call, opened, started, deadline, ticket)
            raise AssertionError("unreachable")  # _finish raises on failure
        model, first, rest, attempts = opened
        ttft_ms = int((time.perf_counter() - started) * 1000)
        seen = Relayed()
        stop = stop_when(self.draining, self._team_active(job.team_id), job.team_id)
        sent = 0
        try:
            # Closed before the record below, whichever way the stream ends: its clean-up reads
            # what the provider sent ahead of the client into `seen`.
            async with contextlib.aclosing(relay(first, rest, seen, stop)) as events:
                async for text, tool_calls in events:
                    sent += 1
                    yield StreamDelta(text, tool_calls)
        finally:
            usage = seen.billed_usage(call.request)
            record = await self._record(
                job,
                group,
                call,
                model=model,
                status=seen.status,
                usage=usage,
                started=started,
                ttft_ms=ttft_ms,
                error=seen.error,
                attempts=attempts,
                streamed=True,
                chunks=sent,
                ticket=ticket,
            )
        if seen.status == "failed":
            stopped = seen.stopped
            if stopped is not None:
                yield StreamFailed(message=stopped.message, call=record, code=stopped.code)
            else:
                yield StreamFailed(message=f"LLM call failed: {seen.error}", call=record)
        else:
            yield StreamDone(call=record, finish_reason=seen.finish_reason, usage=usage)

    def _team_active(self, team_id: str) -> Callable[[], Awaitable[bool]]:
        async def active() -> bool:
            state = await self.ledger.team_state(team_id)
            return state is None or state.status == "active"

        return active

    # Create and call -----------------------------------------------------------------

    async def create_and_call(
        self,
        who: Principal,
        *,
        team_id: str,
        user_id: str,
        job_type: str,
        metadata: dict[str, Any],
        request_id: str,
        call: CallInput,
        deadline: float | None,
    ) -> CreateAndCallResult:
        """Create, call, complete (`completed` on success, `failed` on failure) in one
        request. A failed call completes the job as failed, then raises its error."""
        job, replayed, ticket = await self._saga_job(
            who, team_id, user_id, job_type, metadata, request_id, call, _fingerprint(call)
        )
        if replayed:
            full, answer = await self._replay(job, request_id)
            return CreateAndCallResult(full, await self._costs(full), answer)
        try:
            answer = await self.llm_call(who, job.job_id, call, deadline, ticket=ticket)
        except (LlmCallFailed, DeadlineExceeded, FailedPrecondition, InvalidArgument) as exc:
            await self._end_saga(job.job_id, "failed", str(exc))
            raise
        except BaseException:
            await self._end_saga(job.job_id, "failed", "create-and-call interrupted")
            raise
        replay = None
        if request_id:
            r = answer.result
            replay = {
                "content": r.content,
                "finish_reason": r.finish_reason,
                "tool_calls": r.tool_calls,
            }
        done = await self._end_saga(job.job_id, "completed", None, replay)
        return CreateAndCallResult(done, await self._costs(done), answer)

    async def create_and_call_stream(
        self,
        who: Principal,
        *,
        team_id: str,
        user_id: str,
        job_type: str,
        metadata: dict[str, Any],
        request_id: str,
        call: CallInput,
        deadline: float | None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """create-and-call, streamed: StreamStarted(job_id), the deltas, then StreamDone with
        the completed job (or StreamFailed, the job completed as failed). Errors before the
        first event are ordinary errors. A retry with the request_id of a finished stream
        replays its answer as one delta; one still running is REQUEST_IN_PROGRESS."""
        fingerprint = {**_fingerprint(call), "stream": True}
        job, replayed, ticket = await self._saga_job(
            who, team_id, user_id, job_type, metadata, request_id, call, fingerprint
        )
        if replayed:
            full, answer = await self._replay(job, request_id)
            return self._replayed_stream(full, answer)
        try:
            events = await self.llm_call_stream(who, job.job_id, call, deadline, ticket=ticket)
        except BaseException as exc:
            await self._end_saga(job.job_id, "failed", str(exc) or "create-and-call interrupted")
            raise
        return self._saga_stream(job.job_id, events, bool(request_id))

    async def _saga_job(
        self,
        who: Principal,
        team_id: str,
        user_id: str,
        job_type: str,
        metadata: dict[str, Any],
        request_id: str,
        call: CallInput,
        fingerprint: dict[str, Any],
    ) -> tuple[Job, bool, Ticket]:
        """The first step of both sagas: the call checked and admitted, then its job created
        (or the first one, replayed: its rate-limit ticket is refunded, nothing will be called)."""
        validate_call(call)
        ticket = await self._admit_saga(who, team_id, call)
        try:
            job, replayed = await self.create(
                who,
                team_id=team_id,
                user_id=user_id,
                job_type=job_type,
                metadata=metadata,
                request_id=request_id,
                fingerprint_extra=fingerprint,
            )
        except BaseException:
            await ticket.refund()
            raise
        if replayed:
            await ticket.refund()
        return job, replayed, ticket

    async def _admit_saga(self, who: Principal, team_id: str, call: CallInput) -> Ticket:
        """create-and-call: the team's rate limits and a new job's bounds are checked before
        the job is created, so that a refusal writes nothing (no job, no reservation). The
        ticket is handed to the call, which takes the job's calls count as any call does."""
        v.require_id(team_id, "team_id")
        who.require_team(team_id)
        limits = await self.admission.limits(team_id)
        fresh = JobRef(job_id="", team_id=team_id, status="pending", limits=limits)
        request = self.admission.check_job(fresh, limits, call.request)
        return await self.admission.rate(team_id, limits, request.messages, request.params)

    async def _saga_stream(
        self,
        job_id: str,
        events: AsyncGenerator[StreamEvent, None],
        keep_replay: bool,
    ) -> AsyncGenerator[StreamEvent, None]:
        ended = False
        parts: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        try:
            yield StreamStarted(job_id)
            # Closed before the job is completed in the finally below: the call's record (written
            # when the inner stream closes) must be part of the job it completes.
            async with contextlib.aclosing(events) as inner:
                async for event in inner:
                    if isinstance(event, StreamDelta):
                        parts.append(event.content)
                        tool_calls.extend(event.tool_calls or ())
                    elif isinstance(event, StreamDone):
                        replay = None
                        if keep_replay:
                            replay = {
                                "content": "".join(parts),
                                "finish_reason": event.finish_reason,
                                "tool_calls": tool_calls,
                            }
                        done = await self._end_saga(job_id, "completed", None, replay)
                        ended = True
                        event = StreamDone(
                            call=event.call,
                            finish_reason=event.finish_reason,
                            usage=event.usage,
                            job=done,
                            costs=await self._costs(done),
                        )
                    elif isinstance(event, StreamFailed):
                        await self._end_saga(job_id, "failed", event.message)
                        ended = True
                    yield event
        finally:
            if not ended:
                # The client went away mid-stream (the record of the call is shielded too).
                await self._end_saga(job_id, "failed", "stream did not finish")

    async def _replayed_stream(
        self, job: Job, answer: CallAnswer
    ) -> AsyncGenerator[StreamEvent, None]:
        r = answer.result
        yield StreamStarted(job.job_id)
        yield StreamDelta(r.content, r.tool_calls or None)
        yield StreamDone(
            call=answer.call,
            finish_reason=r.finish_reason,
            usage=r.usage,
            job=job,
            costs=await self._costs(job),
        )

    async def _end_saga(
        self,
        job_id: str,
        status: str,
        error: str | None,
        replay: dict[str, Any] | None = None,
    ) -> Job:
        """Complete a create-and-call's job, shielded from the request's cancellation. If
        completing as `completed` fails (the database), the job is released as failed instead:
        never left open holding its credit until the sweeper."""
        try:
            job, _ = await asyncio.shield(self.settle(job_id, status, {}, error, replay))
            return job
        except Exception:
            if status == "failed":
                raise
            job, _ = await asyncio.shield(
                self.settle(job_id, "failed", {}, "create-and-call could not be completed")
            )
            return job

    async def _replay(self, job: Job, request_id: str) -> tuple[Job, CallAnswer]:
        """The first result of a create-and-call retried with its request_id."""
        full = await self.jobs.get_job(job.job_id)
        if full is None or full.status in OPEN_STATUSES:
            raise FailedPrecondition(
                f"request_id '{request_id}' is still being processed (job '{job.job_id}')",
                reason=Reason.REQUEST_IN_PROGRESS,
                metadata={"job_id": job.job_id},
            )
        ok = [c for c in full.calls if c.status == "success"]
        if full.status != "completed" or not ok or full.replay_response is None:
            # The first request's error, as it was raised (create_and_call stores its text).
            message = full.error_message or "job failed"
            if message.startswith("Deadline exceeded"):
                raise DeadlineExceeded(message)
            if not message.startswith("LLM call failed"):
                message = f"LLM call failed: {message}"
            raise LlmCallFailed(message)
        r = full.replay_response
        c = ok[-1]
        result = ChatResult(
            content=str(r.get("content") or ""),
            finish_reason=str(r.get("finish_reason") or "stop"),
            usage=TokenUsage(c.prompt_tokens, c.completion_tokens),
            tool_calls=list(r.get("tool_calls") or []),
        )
        return full, CallAnswer(call=c, result=result)


def _created(new: NewJob) -> Job:
    return Job(
        job_id=new.job_id,
        team_id=new.team_id,
        user_id=new.user_id,
        job_type=new.job_type,
        status="pending",
        metadata=new.metadata,
        result_metadata=None,
        error_message=None,
        credit_applied=False,
        credits_remaining_after=None,
        created_at=new.created_at,
        updated_at=new.created_at,
        completed_at=None,
    )


def _new_id() -> str:
    return str(uuid.uuid4())


def _utcnow() -> datetime:
    return datetime.now(UTC)
