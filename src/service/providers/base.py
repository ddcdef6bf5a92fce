"""The one protocol every LLM backend implements, and the types it speaks.

The domain layer only sees these types: a `ModelSpec` (one model of a group,
with its LiteLLM-style config), a `ChatRequest`, and either a `ChatResult` or
an async iterator of `StreamChunk`. Failures are `ProviderError`, whose
`retryable` flag decides whether the next model of the group is tried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model of a model group, as configured by the admin."""

    model_name: str  # "gpt-4o", "openai/gpt-4o", "anthropic/claude-3-5-sonnet", "simulator/fast"
    priority: int
    config: Mapping[str, Any] = field(default_factory=dict)


def provider_of(model_name: str) -> str:
    """The provider a model name designates, for metrics and spans: its prefix
    (`anthropic/claude-3-5-sonnet` -> anthropic), `openai` for a bare name."""
    slash = model_name.find("/")
    return model_name[:slash] if slash > 0 else "openai"


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What the client asked for, in OpenAI chat-completions terms."""

    messages: list[dict[str, Any]]
    # Only the parameters the client set: temperature, max_tokens, top_p, stop,
    # seed, user, tools, tool_choice, response_format.
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    prompt_tokens: int
    completion_tokens: int
    # True when the provider reported none and the numbers were estimated.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Choice:
    """One more answer of a request with `n` > 1."""

    content: str
    finish_reason: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChatResult:
    content: str
    finish_reason: str
    usage: TokenUsage
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    # The answers after the first when the request asked for `n` > 1 (usage covers them all).
    more_choices: tuple[Choice, ...] = ()


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    """One vector per input, in input order."""

    vectors: list[list[float]]
    usage: TokenUsage


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One piece of a streamed answer. The last chunk of a stream has
    `finish_reason` set and, when the provider reports it, `usage`."""

    content: str = ""
    finish_reason: str | None = None
    usage: TokenUsage | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ProviderError(Exception):
    """A failed upstream call.

    retryable: connection errors, timeouts, 408/409/429 and 5xx; the next model
    of the group is then tried (and the failure counts toward the model's
    circuit breaker, domain/breaker.py). Not retryable: other 4xx (a bad request fails
    the same way everywhere).
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        # Seconds the provider asked us to wait (its Retry-After header, on a 429 or 503): the
        # circuit breaker keeps the model out of its groups at least that long.
        self.retry_after = retry_after


class Provider(Protocol):
    """An LLM backend. `timeout` is the seconds left for this attempt (already
    bounded by the request deadline and the model's `timeout` config)."""

    async def complete(
        self,
        model: ModelSpec,
        request: ChatRequest,
        timeout: float,
    ) -> ChatResult: ...

    def stream(
        self, model: ModelSpec, request: ChatRequest, timeout: float
    ) -> AsyncIterator[StreamChunk]:
        """Yield chunks as the upstream produces them. Closing the iterator
        (aclose, or cancellation of the consuming task) must close the upstream
        connection promptly."""
        ...

    async def embed(
        self, model: ModelSpec, inputs: Any, params: Mapping[str, Any], timeout: float
    ) -> EmbeddingResult:
        """Embeddings of `inputs` (a string, a list of strings, or token arrays, as OpenAI's
        `input`); `params` are the request's other fields (dimensions, user, ...)."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...
