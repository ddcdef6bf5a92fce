"""Jobs: create (reserve a credit), LLM calls, complete (settle the credit),
reads, and create-and-call. The rules of seed 003 "Credit Deduction Logic"
live in storage/jobs.py's single transaction; this module decides who may do
what, runs the calls, and records them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from service.domain import validation as v
from service.domain.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    LlmCallFailed,
    job_not_found,
    model_group_access_denied,
    model_group_not_found,
    team_not_found,
)
from service.domain.llm import Attempts, CallRunner, Outcome
from service.domain.models import CallRecord, Job, JobCosts, JobRef, ModelGroup
from service.domain.principal import Principal
from service.observe import CallObserver, CallStatus, LogObserver
from service.providers.base import (
    ChatRequest,
    ChatResult,
    ModelSpec,
    ProviderError,
    StreamChunk,
    TokenUsage,
)
from service.providers.costs import cost_of
from service.storage.jobs import JobRepository, NewCall
from service.storage.ledger import body_hash
from service.storage.model_groups import ModelGroupRepository
from service.storage.teams import TeamRepository

# Chunks read ahead of the client at most (then the provider's connection is not read).
STREAM_BACKLOG = 256
_NOTHING = object()
VALID_ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})
FINAL_STATUSES = ("completed", "failed")


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


@dataclass(frozen=True, slots=True)
class StreamDelta:
    content: str
    tool_calls: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class StreamDone:
    call: CallRecord
    finish_reason: str
    usage: TokenUsage


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """A failure after the first chunk: the stream ends with this event."""

    message: str
    call: CallRecord


StreamEvent = StreamDelta | StreamDone | StreamFailed


def validate_call(call: CallInput) -> None:
    if call.model_group:
        v.require_id(call.model_group, "model_group")
    v.text(call.purpose, "purpose", max_len=128)
    msgs = call.request.messages
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
    p = call.request.params
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


def _estimate_prompt_tokens(request: ChatRequest) -> int:
    return max(1, len(orjson.dumps(request.messages)) // 4)


class JobsService:
    def __init__(
        self,
        jobs: JobRepository,
        teams: TeamRepository,
        groups: ModelGroupRepository,
        runner: CallRunner,
        observer: CallObserver | None = None,
    ) -> None:
        self.jobs = jobs
        self.teams = teams
        self.groups = groups
        self.runner = runner
        self.observer = observer or LogObserver()

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
        v.require_id(team_id, "team_id")
        who.require_team(team_id)
        v.text(user_id, "user_id", max_len=256)
        v.text(job_type, "job_type", max_len=128, required=True)
        metadata = v.metadata(metadata)
        rid = v.optional_id(request_id, "request_id")
        rhash = None
        if rid:
            body = {"u": user_id, "t": job_type, "m": metadata, **(fingerprint_extra or {})}
            rhash = body_hash(body)
        return await self.jobs.create(
            team_id=team_id,
            user_id=user_id,
            job_type=job_type,
            metadata=metadata,
            request_id=rid,
            request_hash=rhash,
        )

    # Reads -------------------------------------------------------------------

    async def _owned(self, who: Principal, job_id: str, *, with_calls: bool) -> Job:
        v.require_id(job_id, "job_id")
        job = await self.jobs.get(job_id, with_calls=with_calls)
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
        if status and status not in v.JOB_STATUSES:
            raise InvalidArgument(
                "status must be one of " + ", ".join(v.JOB_STATUSES), field="status"
            )
        # One read answers both "does the team exist" and its credits_remaining.
        remaining = await self.jobs.team_remaining(team_id)
        if remaining is None:
            raise team_not_found(team_id)
        limit, offset = v.page(limit, offset, default_limit=100)
        total, jobs = await self.jobs.list_for_team(team_id, status or None, limit, offset)
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
        job = await self.jobs.update_metadata(job_id, patch, v.MAX_METADATA_BYTES)
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
        await self._target(who, job_id)
        job, _replayed = await self.jobs.complete(job_id, status, metadata, error_message or None)
        return job, await self._costs(job)

    async def _target(self, who: Principal, job_id: str) -> JobRef:
        """The job's owner and status (one primary-key read), for calls and completes."""
        v.require_id(job_id, "job_id")
        job = await self.jobs.call_target(job_id)
        # Another team's job is indistinguishable from a missing one.
        if job is None or not who.owns(job.team_id):
            raise job_not_found(job_id)
        return job

    # LLM calls -----------------------------------------------------------------

    async def _prepare(
        self, who: Principal, job_id: str, call: CallInput
    ) -> tuple[JobRef, ModelGroup]:
        validate_call(call)
        job = await self._target(who, job_id)
        if job.status not in v.OPEN_STATUSES:
            raise FailedPrecondition(
                f"Job '{job_id}' is {job.status}; create a new job for more calls",
                reason="JOB_NOT_OPEN",
            )
        return job, await self._group_for(job.team_id, call.model_group)

    async def _group_for(self, team_id: str, name: str) -> ModelGroup:
        groups = await self.teams.groups_of(team_id)
        if not name:
            if not groups:
                raise FailedPrecondition(
                    f"Team '{team_id}' has no model group assigned; pass model_group",
                    reason="NO_MODEL_GROUP",
                )
            return groups[0]
        for g in groups:
            if g.group_name == name:
                return g
        if await self.groups.get(name) is None:
            raise model_group_not_found(name)
        raise model_group_access_denied(team_id, name)

    async def _record(
        self,
        job: JobRef,
        group: ModelGroup,
        call: CallInput,
        *,
        model: ModelSpec,
        status: CallStatus,
        usage: TokenUsage,
        started: float,
        ttft_ms: int | None,
        error: str | None,
        attempts: Attempts,
        streamed: bool,
        chunks: int = 0,
    ) -> CallRecord:
        cost = (
            cost_of(model, usage) if usage.total_tokens else (0.0 if status != "success" else None)
        )
        seconds = time.perf_counter() - started
        self.observer.call(
            group.group_name,
            model.model_name,
            status,
            failed_attempts=len(attempts.items) - 1 if status == "success" else 0,
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
        # Shielded: a client that goes away must not lose the record of a call
        # the provider already served.
        return await asyncio.shield(self.jobs.record_call(record))

    async def llm_call(
        self, who: Principal, job_id: str, call: CallInput, deadline: float | None
    ) -> CallAnswer:
        job, group = await self._prepare(who, job_id, call)
        started = time.perf_counter()
        try:
            outcome = await self.runner.complete(group, call.request, deadline)
        except DeadlineExceeded:
            await self._record_failure(job, group, call, started, "Deadline exceeded", Attempts())
            raise
        return await self._finish(job, group, call, outcome, started, deadline)

    async def _record_failure(
        self,
        job: JobRef,
        group: ModelGroup,
        call: CallInput,
        started: float,
        error: str,
        attempts: Attempts,
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
            attempts=attempts,
            streamed=False,
        )

    async def _finish(
        self,
        job: JobRef,
        group: ModelGroup,
        call: CallInput,
        outcome: Outcome,
        started: float,
        deadline: float | None,
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
        )
        return CallAnswer(call=record, result=outcome.result)

    async def llm_call_stream(
        self, who: Principal, job_id: str, call: CallInput, deadline: float | None
    ) -> AsyncIterator[StreamEvent]:
        """Validate and pick the group first (errors before the first event
        are ordinary RPC errors), then stream."""
        job, group = await self._prepare(who, job_id, call)
        return self._stream(job, group, call, deadline)

    async def _stream(
        self, job: JobRef, group: ModelGroup, call: CallInput, deadline: float | None
    ) -> AsyncIterator[StreamEvent]:
        started = time.perf_counter()
        opened = await self.runner.open_stream(group, call.request, deadline)
        if isinstance(opened, Outcome):
            # Every model failed before its first chunk: a normal error.
            await self._finish(job, group, call, opened, started, deadline)
            raise AssertionError("unreachable")  # _finish raises on failure
        model, first, rest, attempts = opened
        ttft_ms = int((time.perf_counter() - started) * 1000)
        parts: list[str] = []
        finish_reason = "stop"
        usage: TokenUsage | None = None
        status: CallStatus = "cancelled"
        error: str | None = None
        sent = 0
        # The provider is read by its own task while the previous event is being sent. Chunks
        # that arrive faster than the client takes them are sent merged in the next event: no
        # chunk ever waits for a later one (an event leaves as soon as the previous one is
        # written), and a burst costs one event instead of one per chunk.
        backlog: asyncio.Queue[StreamChunk | Exception | None] = asyncio.Queue(STREAM_BACKLOG)
        pump = asyncio.create_task(_pump(rest, backlog))
        chunk: StreamChunk | None = first
        try:
            while chunk is not None:
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.finish_reason:
                    finish_reason = chunk.finish_reason
                text = chunk.content
                tool_calls = chunk.tool_calls
                following: object = _NOTHING
                if not tool_calls:
                    merged: list[str] | None = None
                    while not backlog.empty():
                        nxt = backlog.get_nowait()
                        if not isinstance(nxt, StreamChunk) or nxt.tool_calls:
                            following = nxt
                            break
                        if nxt.content:
                            if merged is None:
                                merged = [text]
                            merged.append(nxt.content)
                        if nxt.usage is not None:
                            usage = nxt.usage
                        if nxt.finish_reason:
                            finish_reason = nxt.finish_reason
                    if merged is not None:
                        text = "".join(merged)
                if text or tool_calls:
                    parts.append(text)
                    sent += 1
                    yield StreamDelta(text, tool_calls)
                if following is _NOTHING:
                    following = await backlog.get()
                if isinstance(following, Exception):
                    raise following
                assert following is None or isinstance(following, StreamChunk)
                chunk = following
            status = "success"
        except Exception as exc:
            status = "failed"
            error = exc.message if isinstance(exc, ProviderError) else "stream interrupted"
        finally:
            if not pump.done():
                pump.cancel()
                await asyncio.wait([pump])
            while not backlog.empty():
                # Read from the provider but not sent (the client went away): still seen.
                left = backlog.get_nowait()
                if isinstance(left, StreamChunk):
                    parts.append(left.content)
                    if left.usage is not None:
                        usage = left.usage
            closer = getattr(rest, "aclose", None)
            if closer is not None:
                # Best effort: the upstream is gone either way.
                with contextlib.suppress(Exception):
                    await asyncio.shield(closer())
            if usage is None or status != "success":
                usage = TokenUsage(
                    prompt_tokens=usage.prompt_tokens
                    if usage
                    else _estimate_prompt_tokens(call.request),
                    completion_tokens=usage.completion_tokens
                    if usage
                    else max(0, len("".join(parts)) // 4),
                    estimated=True if usage is None else usage.estimated,
                )
            record = await self._record(
                job,
                group,
                call,
                model=model,
                status=status,
                usage=usage,
                started=started,
                ttft_ms=ttft_ms,
                error=error,
                attempts=attempts,
                streamed=True,
                chunks=sent,
            )
        if status == "failed":
            yield StreamFailed(message=f"LLM call failed: {error}", call=record)
        else:
            yield StreamDone(call=record, finish_reason=finish_reason, usage=usage)

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
    ) -> tuple[Job, JobCosts, CallAnswer | None, Exception | None]:
        """Create, call, complete. On a call failure the job is completed as
        failed and the error is returned with it, for the API to raise."""
        validate_call(call)
        job, replayed = await self.create(
            who,
            team_id=team_id,
            user_id=user_id,
            job_type=job_type,
            metadata=metadata,
            request_id=request_id,
            fingerprint_extra={
                "call": orjson.dumps(call.request.messages).decode(),
                "g": call.model_group,
            },
        )
        if replayed:
            return await self._replay(job, request_id)
        answer: CallAnswer | None = None
        failure: Exception | None = None
        try:
            answer = await self.llm_call(who, job.job_id, call, deadline)
        except (LlmCallFailed, DeadlineExceeded, FailedPrecondition, InvalidArgument) as exc:
            failure = exc
        except BaseException:
            await asyncio.shield(
                self.jobs.complete(job.job_id, "failed", {}, "create-and-call interrupted")
            )
            raise
        status = "completed" if failure is None else "failed"
        error = None if failure is None else str(failure)
        replay = None
        if request_id and answer is not None:
            r = answer.result
            replay = {
                "content": r.content,
                "finish_reason": r.finish_reason,
                "tool_calls": r.tool_calls,
            }
        done, _ = await asyncio.shield(
            self.jobs.complete(job.job_id, status, {}, error, replay_response=replay)
        )
        return done, await self._costs(done), answer, failure

    async def _replay(
        self, job: Job, request_id: str
    ) -> tuple[Job, JobCosts, CallAnswer | None, Exception | None]:
        """The first result of a create-and-call retried with its request_id."""
        full = await self.jobs.get(job.job_id)
        if full is None or full.status in v.OPEN_STATUSES:
            raise FailedPrecondition(
                f"request_id '{request_id}' is still being processed (job '{job.job_id}')",
                reason="REQUEST_IN_PROGRESS",
                metadata={"job_id": job.job_id},
            )
        costs = await self._costs(full)
        ok = [c for c in full.calls if c.status == "success"]
        if full.status != "completed" or not ok or full.replay_response is None:
            failed = LlmCallFailed(f"LLM call failed: {full.error_message or 'job failed'}")
            return full, costs, None, failed
        r = full.replay_response
        c = ok[-1]
        result = ChatResult(
            content=str(r.get("content") or ""),
            finish_reason=str(r.get("finish_reason") or "stop"),
            usage=TokenUsage(c.prompt_tokens, c.completion_tokens),
            tool_calls=list(r.get("tool_calls") or []),
        )
        return full, costs, CallAnswer(call=c, result=result), None


async def _pump(
    stream: AsyncIterator[StreamChunk], out: asyncio.Queue[StreamChunk | Exception | None]
) -> None:
    """Read a provider stream into `out`, ending with None or the exception."""
    try:
        async for chunk in stream:
            await out.put(chunk)
    except Exception as exc:
        await out.put(exc)
    else:
        await out.put(None)


def _public_attempts(attempts: Attempts) -> list[dict[str, Any]]:
    """Attempts as a client may see them: no model names (seed 003)."""
    return [
        {"attempt": i + 1, "error": a["error"], "latency_ms": a["latency_ms"]}
        for i, a in enumerate(attempts.items)
    ]
