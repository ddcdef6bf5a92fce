"""Running one LLM call against a model group: models in priority order,
fallback on retryable failures, every attempt recorded, time bounded by the
request deadline. Every answer passes domain/answers.py's checks: one that
fails them is a failed attempt like a provider error."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service.domain.answers import check_embeddings, check_result, checked_stream, safe_error
from service.domain.breaker import ALLOW, SKIP, TRIAL, Breakers, breaker_key
from service.domain.errors import DeadlineExceeded, Unavailable
from service.domain.models import ModelGroup
from service.domain.response_cache import CachedAnswer, Lookup, ResponseCache
from service.observe import CallObserver, LogObserver
from service.providers.base import (
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    ModelSpec,
    Provider,
    ProviderError,
    StreamChunk,
)

# Time kept back from the request deadline so that the call can still be
# recorded and answered before the client gives up.
DEADLINE_MARGIN_S = 0.05
# The error of a model its circuit breaker kept out of a call (domain/breaker.py).
SKIPPED = "skipped: the model is cooling down after failures"

T = TypeVar("T")


@dataclass(slots=True)
class Attempts:
    """Every model tried for one call, for the job record and error details."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, model: ModelSpec, error: str | None, started: float) -> None:
        self.items.append(
            {
                "model": model.model_name,
                "error": error,
                "latency_ms": int((time.perf_counter() - started) * 1000),
            }
        )

    def skip(self, model: ModelSpec) -> None:
        """A model its circuit breaker kept out of the call (no request was sent)."""
        self.items.append(
            {"model": model.model_name, "error": SKIPPED, "latency_ms": 0, "skipped": True}
        )

    @property
    def last_error(self) -> str:
        """The last provider error (a skipped model's only when no model was tried)."""
        for a in reversed(self.items):
            if a["error"] and not a.get("skipped"):
                return str(a["error"])
        for a in reversed(self.items):
            if a["error"]:
                return str(a["error"])
        return "no model available"


@dataclass(slots=True)
class Outcome:
    model: ModelSpec
    result: ChatResult | None
    attempts: Attempts
    error: str | None
    # Answered by the group's response cache (domain/response_cache.py): no provider called.
    cached: bool = False


def attempt_timeout(model: ModelSpec, deadline: float | None, default: float) -> float:
    """Seconds for one attempt: the model's `timeout` config (or the default),
    never past the request deadline."""
    return _attempt_timeout(model, deadline, default)[0]


def _attempt_timeout(
    model: ModelSpec, deadline: float | None, default: float
) -> tuple[float, bool]:
    """(seconds for one attempt, whether the request deadline cut them short)."""
    configured = model.config.get("timeout")
    timeout = (
        float(configured) if isinstance(configured, int | float) and configured > 0 else default
    )
    if deadline is not None:
        left = deadline - time.monotonic() - DEADLINE_MARGIN_S
        if left <= 0:
            raise DeadlineExceeded("Deadline exceeded before the LLM call could finish")
        if left < timeout:
            return left, True
    return timeout, False


def _all_cooling_down(group: ModelGroup, breakers: Breakers) -> Unavailable:
    wait = min(breakers.retry_in(breaker_key(m)) for m in group.models)
    seconds = max(1, math.ceil(wait))
    return Unavailable(
        f"Every model of group '{group.group_name}' is cooling down after failures; "
        f"retry in {seconds}s",
        metadata={"retry_after_seconds": str(seconds), "model_group": group.group_name},
    )


class CallRunner:
    def __init__(
        self,
        provider: Provider,
        default_timeout: float,
        observer: CallObserver | None = None,
        *,
        breakers: Breakers | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.provider = provider
        self.default_timeout = default_timeout
        self.observer = observer or LogObserver()
        # Without one, a process-local breaker with the defaults (5 failures, 30 s).
        self.breakers = breakers or Breakers(observer=self.observer)
        self.cache = cache

    async def _fallback(
        self,
        group: ModelGroup,
        request: ChatRequest,
        deadline: float | None,
        attempt: Callable[[ModelSpec, float], Awaitable[T]],
    ) -> tuple[ModelSpec, T, Attempts] | Outcome:
        """`attempt(model, timeout)` on each model in priority order until one succeeds: its
        (model, value, attempts). A retryable ProviderError moves on to the next model, any
        other stops; when none succeeded, an Outcome with the last error. A deadline that runs
        out before the first attempt is DeadlineExceeded; after one, the last error stands."""
        attempts = Attempts()
        breakers = self.breakers
        last = group.models[0]
        tried = 0
        for model in group.models:
            name = breaker_key(model)
            verdict = breakers.check(name)
            if verdict != ALLOW and (verdict == SKIP or not await breakers.try_trial(name)):
                # Its circuit is open: no request is sent.
                attempts.skip(model)
                continue
            last = model
            try:
                timeout, cut = _attempt_timeout(model, deadline, self.default_timeout)
            except DeadlineExceeded:
                if verdict == TRIAL:
                    breakers.abandon(name)
                if not tried:
                    raise
                break
            tried += 1
            started = time.perf_counter()
            try:
                value = await attempt(model, timeout)
            except ProviderError as exc:
                attempts.add(model, safe_error(exc, request).message, started)
                self.observer.attempt(group.group_name, model.model_name, started, exc)
                if not exc.retryable:
                    # The provider answered (a client error fails the same way everywhere).
                    if breakers.tracked(name):
                        await breakers.success(name)
                    break
                if cut and exc.status is None:
                    # A transport failure (a timeout) within a deadline the caller cut short
                    # says nothing of the model: not counted.
                    if verdict == TRIAL:
                        breakers.abandon(name)
                else:
                    await breakers.failure(name, exc.retry_after)
                continue
            except BaseException:
                if verdict == TRIAL:
                    breakers.abandon(name)
                raise
            attempts.add(model, None, started)
            self.observer.attempt(group.group_name, model.model_name, started, None)
            if breakers.tracked(name):
                await breakers.success(name)
            return model, value, attempts
        if not tried:
            raise _all_cooling_down(group, breakers)
        return Outcome(model=last, result=None, attempts=attempts, error=attempts.last_error)

    async def complete(
        self,
        group: ModelGroup,
        request: ChatRequest,
        deadline: float | None,
        *,
        team_id: str | None = None,
    ) -> Outcome:
        """The call's answer from the group's models in priority order. With `team_id` and a
        group that caches (cache_ttl_seconds), the response cache is asked first and keeps the
        answer (scoped to the team's organization)."""
        miss: Lookup | None = None
        if team_id is not None and self.cache is not None and group.cache_ttl_seconds > 0:
            found = await self.cache.lookup(team_id, group, request)
            if isinstance(found, CachedAnswer):
                model = next(
                    (m for m in group.models if m.model_name == found.model), group.models[0]
                )
                return Outcome(
                    model=model, result=found.result, attempts=Attempts(), error=None, cached=True
                )
            miss = found

        async def attempt(model: ModelSpec, timeout: float) -> ChatResult:
            return check_result(await self.provider.complete(model, request, timeout))

        done = await self._fallback(group, request, deadline, attempt)
        if isinstance(done, Outcome):
            return done
        model, result, attempts = done
        if miss is not None and self.cache is not None:
            await self.cache.store_answer(miss, model.model_name, result)
        return Outcome(model=model, result=result, attempts=attempts, error=None)

    async def embed(
        self,
        group: ModelGroup,
        inputs: Any,
        params: Mapping[str, Any],
        deadline: float | None,
    ) -> tuple[ModelSpec, EmbeddingResult, Attempts] | Outcome:
        """Embeddings from the group's models in priority order (same fallback rules as
        `complete`); an Outcome with the error when none succeeded."""

        count = len(inputs) if isinstance(inputs, list) and not _token_array(inputs) else 1

        async def attempt(model: ModelSpec, timeout: float) -> EmbeddingResult:
            return check_embeddings(
                await self.provider.embed(model, inputs, params, timeout), count
            )

        # The inputs stand for the prompt when an error message is scrubbed of echoes.
        echo = ChatRequest(messages=[{"role": "user", "content": str(inputs)[:4096]}])
        return await self._fallback(group, echo, deadline, attempt)

    async def open_stream(
        self, group: ModelGroup, request: ChatRequest, deadline: float | None
    ) -> tuple[ModelSpec, StreamChunk, AsyncIterator[StreamChunk], Attempts] | Outcome:
        """Start a stream: fall back to the next model until one produces its
        first chunk. Returns (model, first chunk, rest, attempts), or an
        Outcome with the error when every model failed before its first
        chunk."""

        async def attempt(
            model: ModelSpec, timeout: float
        ) -> tuple[StreamChunk, AsyncIterator[StreamChunk]]:
            stream = checked_stream(self.provider.stream(model, request, timeout), request)
            try:
                first = await anext(stream)
            except StopAsyncIteration:
                first = StreamChunk(finish_reason="stop")
            except BaseException:
                # A failed attempt (or a cancelled call) closes its stream.
                await _close(stream)
                raise
            return first, stream

        done = await self._fallback(group, request, deadline, attempt)
        if isinstance(done, Outcome):
            return done
        model, (first, stream), attempts = done
        return model, first, stream, attempts


def _token_array(inputs: list[Any]) -> bool:
    return bool(inputs) and all(type(t) is int for t in inputs)


async def _close(stream: AsyncIterator[StreamChunk]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        # Best effort: the attempt already failed.
        with contextlib.suppress(Exception):
            await asyncio.shield(aclose())
