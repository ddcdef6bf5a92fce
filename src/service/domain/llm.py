"""Running one LLM call against a model group: models in priority order,
fallback on retryable failures, every attempt recorded, time bounded by the
request deadline. Every answer passes domain/answers.py's checks: one that
fails them is a failed attempt like a provider error."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service.domain.answers import check_embeddings, check_result, checked_stream, safe_error
from service.domain.errors import DeadlineExceeded
from service.domain.models import ModelGroup
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

    @property
    def last_error(self) -> str:
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


def attempt_timeout(model: ModelSpec, deadline: float | None, default: float) -> float:
    """Seconds for one attempt: the model's `timeout` config (or the default),
    never past the request deadline."""
    configured = model.config.get("timeout")
    timeout = (
        float(configured) if isinstance(configured, int | float) and configured > 0 else default
    )
    if deadline is not None:
        left = deadline - time.monotonic() - DEADLINE_MARGIN_S
        if left <= 0:
            raise DeadlineExceeded("Deadline exceeded before the LLM call could finish")
        timeout = min(timeout, left)
    return timeout


class CallRunner:
    def __init__(
        self, provider: Provider, default_timeout: float, observer: CallObserver | None = None
    ) -> None:
        self.provider = provider
        self.default_timeout = default_timeout
        self.observer = observer or LogObserver()

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
        last = group.models[0]
        for model in group.models:
            last = model
            try:
                timeout = attempt_timeout(model, deadline, self.default_timeout)
            except DeadlineExceeded:
                if not attempts.items:
                    raise
                break
            started = time.perf_counter()
            try:
                value = await attempt(model, timeout)
            except ProviderError as exc:
                attempts.add(model, safe_error(exc, request).message, started)
                self.observer.attempt(group.group_name, model.model_name, started, exc)
                if not exc.retryable:
                    break
                continue
            attempts.add(model, None, started)
            self.observer.attempt(group.group_name, model.model_name, started, None)
            return model, value, attempts
        return Outcome(model=last, result=None, attempts=attempts, error=attempts.last_error)

    async def complete(
        self, group: ModelGroup, request: ChatRequest, deadline: float | None
    ) -> Outcome:
        async def attempt(model: ModelSpec, timeout: float) -> ChatResult:
            return check_result(await self.provider.complete(model, request, timeout))

        done = await self._fallback(group, request, deadline, attempt)
        if isinstance(done, Outcome):
            return done
        model, result, attempts = done
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
