"""The OpenAI-compatible API (seed 003 "Pattern B"): a team calls real model names, or the name
of one of its model groups (which then gets the group's fallbacks), with its virtual key, and
every call is paid from the team's budget of credits_allocated x $0.10.

Budgets are exact: before a call is sent it reserves an upper bound of its cost from the budget
(one conditional update of the team row, like a job's credit), and when it ends the reservation
is replaced by its actual cost, in the same transaction as the call's record (BudgetStore). The
upper bound: every byte of the prompt as a token (a byte-level BPE token is at least one byte),
plus `max_tokens` x `n` of output at the dearest model of the fallback chain. With `max_tokens`
set, spend therefore never passes the budget, however many calls race (the charge is capped at
the reservation should a provider report more); without it the reservation assumes
DIRECT_DEFAULT_MAX_TOKENS and spend may pass the budget by the in-flight calls' excess.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from saas_llm.v1.reasons import Reason
from service.domain.admission import (
    NO_TICKET,
    Admission,
    LocalRateLimiter,
    Ticket,
    estimate_tokens,
)
from service.domain.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    LlmCallFailed,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    team_not_found,
)
from service.domain.jobs import validate_request
from service.domain.llm import Attempts, CallRunner, Outcome
from service.domain.models import ModelGroup
from service.domain.ports import (
    NANOS_PER_USD,
    BudgetStore,
    DirectSettlement,
    NewDirectCall,
    TeamDirectory,
)
from service.domain.principal import Principal
from service.domain.streaming import Relayed, relay, stop_when
from service.observe import CallObserver, LogObserver
from service.providers.base import ChatRequest, ChatResult, EmbeddingResult, ModelSpec, TokenUsage
from service.providers.costs import prices_of

# Output tokens a call without max_tokens is assumed to produce when its cost is reserved.
DEFAULT_MAX_TOKENS = 4096
MAX_N = 8
# Per message, the tokens a chat template adds around the content (role markers).
_TEMPLATE_TOKENS = 8
_ATTEMPTS = 3
_INTERNAL = 13


@dataclass(frozen=True, slots=True)
class Target:
    """What a model name of a request resolves to for a team."""

    requested: str
    group_name: str
    group: ModelGroup  # the models to try, in priority order


@dataclass(frozen=True, slots=True)
class ChatAnswer:
    call_id: str
    created: int  # unix seconds
    model: str  # as the client named it
    result: ChatResult
    # Answered by the model group's response cache: no provider called, nothing spent.
    cached: bool = False


@dataclass(frozen=True, slots=True)
class ChatDelta:
    content: str
    tool_calls: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class ChatEnd:
    finish_reason: str
    usage: TokenUsage


@dataclass(frozen=True, slots=True)
class ChatFailed:
    """A failure after the first chunk: the stream ends with this event."""

    message: str
    code: int = _INTERNAL


ChatEvent = ChatDelta | ChatEnd | ChatFailed


@dataclass(frozen=True, slots=True)
class ChatStream:
    call_id: str
    created: int
    model: str
    events: AsyncGenerator[ChatEvent, None]


@dataclass(frozen=True, slots=True)
class EmbeddingAnswer:
    model: str
    result: EmbeddingResult


@dataclass(frozen=True, slots=True)
class ListedModel:
    id: str
    created: int


def bare(name: str) -> str:
    """A model name without its provider prefix: `openai/gpt-4o` -> `gpt-4o`."""
    return name.split("/", 1)[1] if "/" in name else name


def model_not_found(name: str) -> NotFound:
    # Says nothing of whether the name exists for another team.
    return NotFound(
        f"The model '{name}' does not exist or you do not have access to it.",
        reason=Reason.MODEL_NOT_FOUND,
        metadata={"model": name},
    )


def _usd(nanos: int) -> str:
    """Dollars with cents, and up to micro-dollars when they matter: $0.10, $0.000026."""
    text = f"{nanos / NANOS_PER_USD:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def _prompt_bound(messages: Any, params: dict[str, Any]) -> int:
    """An upper bound of a request's prompt tokens (see the module docstring)."""
    size = len(orjson.dumps(messages)) + len(orjson.dumps(params.get("tools") or []))
    count = len(messages) if isinstance(messages, list) else 1
    return size + _TEMPLATE_TOKENS * (count + 1)


class DirectService:
    def __init__(
        self,
        teams: TeamDirectory,
        budget: BudgetStore,
        runner: CallRunner,
        draining: asyncio.Event,
        *,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        observer: CallObserver | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.teams = teams
        self.budget = budget
        self.runner = runner
        self.draining = draining
        self.default_max_tokens = default_max_tokens
        self.observer = observer or LogObserver()
        # The team's rate limits (domain/admission.py), counted before the budget is reserved.
        self.admission = admission or Admission(teams, None, LocalRateLimiter())
        # The rate-limit tickets of the calls in flight, settled with their budget.
        self._tickets: dict[str, Ticket] = {}

    async def _rate(self, team_id: str, prompt: Any, params: Mapping[str, Any]) -> Ticket:
        limits = await self.admission.limits(team_id)
        return await self.admission.rate(team_id, limits, prompt, params)

    async def _reserve_counted(self, call: NewDirectCall, ticket: Ticket) -> None:
        """Reserve the call's budget; a refusal gives the rate limiter its count back."""
        try:
            await self._reserve(call)
        except BaseException:
            await ticket.refund()
            raise
        if ticket is not NO_TICKET:
            self._tickets[call.call_id] = ticket

    # Who and what ------------------------------------------------------------------------

    @staticmethod
    def team_of(who: Principal) -> str:
        if who.team_id is None:
            raise Unauthenticated(
                "The master key has no team and no budget: call the OpenAI-compatible API "
                "with a team's virtual key",
                reason=Reason.TEAM_KEY_REQUIRED,
            )
        return who.team_id

    async def models(self, who: Principal) -> list[ListedModel]:
        """What the key may call: its groups' models as configured, then the group names."""
        groups = await self.teams.groups_of(self.team_of(who))
        seen: dict[str, int] = {}
        for g in groups:
            created = int(g.created_at.timestamp())
            for m in g.models:
                seen.setdefault(m.model_name, created)
        for g in groups:
            seen.setdefault(g.group_name, int(g.created_at.timestamp()))
        return [ListedModel(id=k, created=v) for k, v in seen.items()]

    async def resolve(self, team_id: str, name: str) -> Target:
        """A model group the team has (its fallbacks), else an actual model of one of its
        groups (as configured or bare), called with that model's config alone."""
        if not name or len(name) > 256:
            raise InvalidArgument("model is required", field="model")
        groups = await self.teams.groups_of(team_id)
        for g in groups:
            if g.group_name == name:
                return Target(requested=name, group_name=g.group_name, group=g)
        for matches in (lambda m: m.model_name == name, lambda m: bare(m.model_name) == name):
            for g in groups:
                for m in g.models:
                    if matches(m):
                        one = dataclasses.replace(g, models=[m])
                        return Target(requested=name, group_name=g.group_name, group=one)
        raise model_not_found(name)

    # Budget -------------------------------------------------------------------------------

    def _reservation(self, target: Target, prompt_tokens: int, output_tokens: int) -> int:
        worst = 0.0
        for m in target.group.models:
            prices = prices_of(m, simulator_default=True)
            if prices is None:
                raise FailedPrecondition(
                    f"The model '{target.requested}' has no price, so its cost cannot be held "
                    "against the team's budget; the operator must give it "
                    "input_cost_per_token and output_cost_per_token",
                    reason=Reason.MODEL_UNPRICED,
                )
            worst = max(worst, prompt_tokens * prices[0] + output_tokens * prices[1])
        return math.ceil(worst * NANOS_PER_USD)

    async def _reserve(self, call: NewDirectCall) -> None:
        for _ in range(_ATTEMPTS):
            if await self.budget.reserve_budget(call):
                return
            # Nothing was written: say why.
            found = await self.budget.budget_state(call.team_id)
            if found is None:
                raise team_not_found(call.team_id)
            status, budget = found
            if status != "active":
                raise PermissionDenied(
                    f"Team '{call.team_id}' is suspended", reason=Reason.TEAM_SUSPENDED
                )
            if budget.remaining_nanos < call.reserved_nanos:
                raise FailedPrecondition(
                    f"Budget exceeded: spent {_usd(budget.spent_nanos)} of "
                    f"{_usd(budget.budget_nanos)} (calls in flight hold "
                    f"{_usd(budget.reserved_nanos)}); this call may cost up to "
                    f"{_usd(call.reserved_nanos)}",
                    reason=Reason.BUDGET_EXCEEDED,
                    metadata={
                        "budget_usd": str(budget.budget_nanos / NANOS_PER_USD),
                        "spend_usd": str(budget.spent_nanos / NANOS_PER_USD),
                        "reserved_usd": str(budget.reserved_nanos / NANOS_PER_USD),
                        "required_usd": str(call.reserved_nanos / NANOS_PER_USD),
                    },
                )
            # The budget allows it now (credits added, or a call settled meanwhile). Again.
        raise Unavailable("The budget changed while the call was admitted; retry")

    async def _settle(
        self,
        call: NewDirectCall,
        *,
        status: str,
        model: ModelSpec,
        usage: TokenUsage,
        started: float,
        error: str | None,
        attempts: Attempts,
        ttft_ms: int | None = None,
        capped: bool,
        chunks: int = 0,
        cached: bool = False,
    ) -> None:
        cost = 0
        if status != "failed" and not cached:
            prices = prices_of(model, simulator_default=True) or (0.0, 0.0)
            usd = usage.prompt_tokens * prices[0] + usage.completion_tokens * prices[1]
            cost = max(0, math.ceil(usd * NANOS_PER_USD))
            if capped:
                # max_tokens bounds the output: a provider reporting more is not charged past
                # the reservation, so that spend never passes the budget.
                cost = min(cost, call.reserved_nanos)
        seconds = time.perf_counter() - started
        self.observer.call(
            call.model_group,
            model.model_name,
            "cached" if cached else status,
            failed_attempts=len(attempts.items) - 1 if status == "success" and not cached else 0,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=cost / NANOS_PER_USD,
            seconds=seconds,
            ttft_seconds=None if ttft_ms is None else ttft_ms / 1000,
            chunks=chunks,
        )
        settlement = DirectSettlement(
            call_id=call.call_id,
            status=status,
            model=model.model_name,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            usage_estimated=usage.estimated,
            cost_nanos=cost,
            latency_ms=int(seconds * 1000),
            ttft_ms=ttft_ms,
            error=error,
            attempts=attempts.items,
        )
        # Shielded: a client that goes away must not leave its reservation held.
        await asyncio.shield(self.budget.settle_budget(settlement))
        ticket = self._tickets.pop(call.call_id, None)
        if ticket is not None:
            await ticket.settle(usage.total_tokens)

    def _new_call(
        self, team_id: str, target: Target, kind: str, streamed: bool, reserved: int
    ) -> NewDirectCall:
        return NewDirectCall(
            call_id=str(uuid.uuid4()),
            team_id=team_id,
            kind=kind,
            requested_model=target.requested,
            model_group=target.group_name,
            model=target.group.models[0].model_name,
            streamed=streamed,
            reserved_nanos=reserved,
            created_at=datetime.now(UTC),
        )

    # Chat ---------------------------------------------------------------------------------

    def _check(self, request: ChatRequest, stream: bool) -> tuple[int, bool]:
        """Validate; (output tokens to reserve for, whether max_tokens bounds the output)."""
        validate_request(request)
        p = request.params
        n = p.get("n")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N):
            raise InvalidArgument(f"n must be between 1 and {MAX_N}", field="n")
        if stream and (n or 1) > 1:
            raise InvalidArgument("n > 1 is not supported with stream", field="n")
        limit = p.get("max_completion_tokens", p.get("max_tokens"))
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000_000
        ):
            raise InvalidArgument(
                "max_completion_tokens must be between 1 and 1000000", field="max_tokens"
            )
        output = (limit or self.default_max_tokens) * (n or 1)
        return output, limit is not None

    async def _admit(
        self, who: Principal, model: str, request: ChatRequest, kind: str, stream: bool
    ) -> tuple[Target, NewDirectCall, bool]:
        team_id = self.team_of(who)
        output, capped = self._check(request, stream)
        target = await self.resolve(team_id, model)
        reserved = self._reservation(
            target, _prompt_bound(request.messages, request.params), output
        )
        call = self._new_call(team_id, target, kind, stream, reserved)
        ticket = await self._rate(team_id, request.messages, request.params)
        await self._reserve_counted(call, ticket)
        return target, call, capped

    async def chat(
        self, who: Principal, model: str, request: ChatRequest, deadline: float | None
    ) -> ChatAnswer:
        target, call, capped = await self._admit(who, model, request, "chat", stream=False)
        started = time.perf_counter()
        first = target.group.models[0]
        try:
            outcome = await self.runner.complete(
                target.group, request, deadline, team_id=call.team_id
            )
        except BaseException as exc:
            # Cancelled (the client went away) or out of time before any answer: the prompt
            # was sent, so its estimate is what the call may have cost.
            status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            usage = TokenUsage(estimate_tokens(request.messages), 0, True)
            await self._settle(
                call,
                status=status,
                model=first,
                usage=usage,
                started=started,
                error="client cancelled the call" if status == "cancelled" else str(exc),
                attempts=Attempts(),
                capped=capped,
            )
            raise
        return await self._finish(call, target, outcome, started, deadline, capped)

    async def _finish(
        self,
        call: NewDirectCall,
        target: Target,
        outcome: Outcome,
        started: float,
        deadline: float | None,
        capped: bool,
    ) -> ChatAnswer:
        if outcome.result is None:
            error = outcome.error or "unknown error"
            await self._settle(
                call,
                status="failed",
                model=outcome.model,
                usage=TokenUsage(0, 0),
                started=started,
                error=error,
                attempts=outcome.attempts,
                capped=capped,
            )
            if deadline is not None and time.monotonic() >= deadline - 0.06:
                raise DeadlineExceeded(f"Deadline exceeded: {error}")
            raise LlmCallFailed(f"LLM call failed: {error}")
        await self._settle(
            call,
            status="success",
            model=outcome.model,
            usage=outcome.result.usage,
            started=started,
            error=None,
            attempts=outcome.attempts,
            capped=capped,
            cached=outcome.cached,
        )
        return ChatAnswer(
            call_id=call.call_id,
            created=int(call.created_at.timestamp()),
            model=target.requested,
            result=outcome.result,
            cached=outcome.cached,
        )

    async def chat_stream(
        self, who: Principal, model: str, request: ChatRequest, deadline: float | None
    ) -> ChatStream:
        """Admitted and opened before the first event: errors until then are ordinary."""
        target, call, capped = await self._admit(who, model, request, "chat", stream=True)
        started = time.perf_counter()
        try:
            opened = await self.runner.open_stream(target.group, request, deadline)
        except BaseException as exc:
            await self._settle(
                call,
                status="cancelled" if isinstance(exc, asyncio.CancelledError) else "failed",
                model=target.group.models[0],
                usage=TokenUsage(0, 0),
                started=started,
                error=str(exc) or "stream not opened",
                attempts=Attempts(),
                capped=capped,
            )
            raise
        if isinstance(opened, Outcome):
            # Every model failed before its first chunk: a normal error.
            await self._finish(call, target, opened, started, deadline, capped)
            raise AssertionError("unreachable")  # _finish raises on failure
        events = self._relay(call, opened, request, started, capped)
        return ChatStream(
            call_id=call.call_id,
            created=int(call.created_at.timestamp()),
            model=target.requested,
            events=events,
        )

    async def _relay(
        self,
        call: NewDirectCall,
        opened: tuple[ModelSpec, Any, Any, Attempts],
        request: ChatRequest,
        started: float,
        capped: bool,
    ) -> AsyncGenerator[ChatEvent, None]:
        model, first, rest, attempts = opened
        ttft_ms = int((time.perf_counter() - started) * 1000)
        seen = Relayed()
        stop = stop_when(self.draining, self._team_active(call.team_id), call.team_id)
        sent = 0
        try:
            # Closed before the settlement below (its clean-up counts what was read ahead).
            async with contextlib.aclosing(relay(first, rest, seen, stop)) as events:
                async for text, tool_calls in events:
                    sent += 1
                    yield ChatDelta(text, tool_calls)
        finally:
            usage = seen.billed_usage(request)
            await self._settle(
                call,
                status=seen.status,
                model=model,
                usage=usage,
                started=started,
                error=seen.error,
                attempts=attempts,
                ttft_ms=ttft_ms,
                capped=capped,
                chunks=sent,
            )
        if seen.status == "failed":
            stopped = seen.stopped
            if stopped is not None:
                yield ChatFailed(stopped.message, stopped.code)
            else:
                yield ChatFailed(f"LLM call failed: {seen.error}")
        else:
            yield ChatEnd(seen.finish_reason, usage)

    def _team_active(self, team_id: str) -> Callable[[], Awaitable[bool]]:
        async def active() -> bool:
            found = await self.budget.budget_state(team_id)
            return found is None or found[0] == "active"

        return active

    # Embeddings ---------------------------------------------------------------------------

    async def embed(
        self,
        who: Principal,
        model: str,
        inputs: Any,
        params: dict[str, Any],
        deadline: float | None,
    ) -> EmbeddingAnswer:
        team_id = self.team_of(who)
        _check_embedding_input(inputs)
        target = await self.resolve(team_id, model)
        reserved = self._reservation(target, _prompt_bound(inputs, {}), 0)
        call = self._new_call(team_id, target, "embeddings", False, reserved)
        await self._reserve_counted(call, await self._rate(team_id, inputs, {}))
        started = time.perf_counter()
        try:
            done = await self.runner.embed(target.group, inputs, params, deadline)
        except BaseException as exc:
            await self._settle(
                call,
                status="cancelled" if isinstance(exc, asyncio.CancelledError) else "failed",
                model=target.group.models[0],
                usage=TokenUsage(0, 0),
                started=started,
                error=str(exc) or "cancelled",
                attempts=Attempts(),
                capped=True,
            )
            raise
        if isinstance(done, Outcome):
            error = done.error or "unknown error"
            await self._settle(
                call,
                status="failed",
                model=done.model,
                usage=TokenUsage(0, 0),
                started=started,
                error=error,
                attempts=done.attempts,
                capped=True,
            )
            raise LlmCallFailed(f"Embeddings failed: {error}")
        used, result, attempts = done
        await self._settle(
            call,
            status="success",
            model=used,
            usage=result.usage,
            started=started,
            error=None,
            attempts=attempts,
            capped=True,
        )
        return EmbeddingAnswer(model=target.requested, result=result)


# Embeddings: at most this many inputs per request (OpenAI's own limit is 2048).
MAX_EMBEDDING_INPUTS = 2048


def _check_embedding_input(inputs: Any) -> None:
    def text_or_tokens(item: Any) -> bool:
        if isinstance(item, str):
            return bool(item)
        return (
            isinstance(item, list)
            and bool(item)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        )

    if (
        isinstance(inputs, list)
        and inputs
        and all(isinstance(t, int) and not isinstance(t, bool) for t in inputs)
    ):
        return  # one token array
    items = inputs if isinstance(inputs, list) else [inputs]
    if not items or not all(text_or_tokens(i) for i in items):
        raise InvalidArgument(
            "input must be a non-empty string, a list of strings, or token arrays",
            field="input",
        )
    if len(items) > MAX_EMBEDDING_INPUTS:
        raise InvalidArgument(f"input has more than {MAX_EMBEDDING_INPUTS} entries", field="input")
