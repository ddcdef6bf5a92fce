"""A span per provider attempt: a Provider that wraps another one (the router) when tracing is
on. Off, it is not installed at all, so the hot path pays nothing for it.

Spans follow OpenTelemetry's GenAI conventions: `chat {model}`, kind CLIENT, the model and its
provider, token usage, the finish reason; a failure sets `error.type` and the HTTP status. Never
the messages, the answer or any key.

A streamed attempt's span covers the whole stream, from the request to the last chunk (or to
the moment the stream is closed); its first chunk is an event (`gen_ai.first_token`). The span
is started in the task that opens the stream, so its parent is the RPC's span, and is never made
current (the stream is read by another task).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from service.providers.base import (
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    ModelSpec,
    Provider,
    ProviderError,
    StreamChunk,
    TokenUsage,
    provider_of,
)


def _attributes(model: ModelSpec, streamed: bool) -> dict[str, str | bool]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_of(model.model_name),
        "gen_ai.request.model": model.model_name,
        "gen_ai.request.stream": streamed,
    }


def _usage(span: trace.Span, usage: TokenUsage) -> None:
    span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)


def _failed(span: trace.Span, exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        # The caller went away (or stopped reading): not the provider's failure.
        span.add_event("cancelled")
        return
    span.set_status(Status(StatusCode.ERROR))
    span.set_attribute("error.type", type(exc).__qualname__)
    if isinstance(exc, ProviderError) and exc.status:
        span.set_attribute("http.response.status_code", exc.status)


class TracingProvider:
    """Provider protocol over `inner`, one span per complete() or stream()."""

    def __init__(self, inner: Provider, tracer: Tracer) -> None:
        self.inner = inner
        self.tracer = tracer

    async def complete(self, model: ModelSpec, request: ChatRequest, timeout: float) -> ChatResult:
        with self.tracer.start_as_current_span(
            f"chat {model.model_name}",
            kind=SpanKind.CLIENT,
            attributes=_attributes(model, False),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await self.inner.complete(model, request, timeout)
            except BaseException as exc:
                _failed(span, exc)
                raise
            _usage(span, result.usage)
            span.set_attribute("gen_ai.response.finish_reasons", (result.finish_reason,))
            return result

    async def stream(
        self, model: ModelSpec, request: ChatRequest, timeout: float
    ) -> AsyncIterator[StreamChunk]:
        span = self.tracer.start_span(
            f"chat {model.model_name}", kind=SpanKind.CLIENT, attributes=_attributes(model, True)
        )
        inner = self.inner.stream(model, request, timeout)
        first = True
        try:
            async for chunk in inner:
                if first:
                    span.add_event("gen_ai.first_token")
                    first = False
                if chunk.usage is not None:
                    _usage(span, chunk.usage)
                if chunk.finish_reason:
                    span.set_attribute("gen_ai.response.finish_reasons", (chunk.finish_reason,))
                yield chunk
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            aclose = getattr(inner, "aclose", None)
            try:
                if aclose is not None:
                    await aclose()
            finally:
                span.end()

    async def embed(
        self, model: ModelSpec, inputs: Any, params: Mapping[str, Any], timeout: float
    ) -> EmbeddingResult:
        with self.tracer.start_as_current_span(
            f"embeddings {model.model_name}",
            kind=SpanKind.CLIENT,
            attributes=_attributes(model, False),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await self.inner.embed(model, inputs, params, timeout)
            except BaseException as exc:
                _failed(span, exc)
                raise
            _usage(span, result.usage)
            return result

    async def aclose(self) -> None:
        await self.inner.aclose()
