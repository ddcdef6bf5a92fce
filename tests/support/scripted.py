"""A Provider whose every call follows a script, for tests that need exact control of timing
and failures (the simulator, service/providers/simulator.py, serves the rest).

A script is a list of steps, played for every call of a model:
- `StreamChunk`: a streamed call yields it; a complete call adds it to its answer;
- `ChatResult`: a complete call returns it (a streamed call may not use it);
- a number: sleep that many seconds;
- a `Gate`: wait until the test opens it (`gate.reached` is set when a call arrives; a gate never
  opened is a provider that hangs);
- an exception: raised (a `ProviderError` for an upstream failure).

Until its answer (complete) or its first chunk (stream), a call honours `timeout` as the real
providers do: a retryable ProviderError when it runs out. Every call and every stream is logged,
so that tests can assert which models were tried, and that a stream was closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field

from service.providers.base import (
    ChatRequest,
    ChatResult,
    ModelSpec,
    Provider,
    ProviderError,
    StreamChunk,
    TokenUsage,
)
from service.providers.simulator import SIMULATOR_PREFIX


@dataclass(eq=False)
class Gate:
    """A step that waits until the test opens it."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        self.opened.set()


Step = StreamChunk | ChatResult | float | Gate | BaseException


@dataclass
class CallLog:
    kind: str  # complete | stream
    model: str
    timeout: float
    request: ChatRequest
    # complete: it was cancelled by its caller. stream: see `closed`.
    cancelled: bool = False
    # stream: the chunks it yielded, and whether its generator ended (ran out, failed, or was
    # closed or cancelled by its consumer: the upstream connection is gone).
    sent: list[StreamChunk] = field(default_factory=list)
    closed: bool = False


def timed_out() -> ProviderError:
    return ProviderError("Provider timed out (scripted)", retryable=True)


def fail(status: int) -> ProviderError:
    """An upstream HTTP error: 408, 409, 429 and 5xx are retryable, other 4xx are not."""
    retryable = status in (408, 409, 429) or status >= 500
    return ProviderError(
        f"Scripted provider error (HTTP {status})", retryable=retryable, status=status
    )


def text(*parts: str, usage: TokenUsage | None = None) -> list[StreamChunk]:
    """Chunks of `parts`, then the final chunk (finish_reason stop, `usage`)."""
    return [StreamChunk(content=p) for p in parts] + [
        StreamChunk(finish_reason="stop", usage=usage)
    ]


class ScriptedProvider:
    """Provider (service/providers/base.py) playing scripts. `simulator/...` models without a
    script go to `fallback` (the simulator) when given; any other model without one fails the
    test."""

    def __init__(self, fallback: Provider | None = None) -> None:
        self.fallback = fallback
        self.scripts: dict[str, list[Step]] = {}
        self.log: list[CallLog] = []
        self.closed = False

    def script(self, model: str, *steps: Step) -> None:
        self.scripts[model] = list(steps)

    def _fallback(self, model: ModelSpec) -> Provider:
        name = model.model_name
        assert self.fallback is not None and name.startswith(SIMULATOR_PREFIX), (
            f"no script for {name}"
        )
        return self.fallback

    def tried(self, kind: str | None = None) -> list[str]:
        """The models called, in order."""
        return [c.model for c in self.log if kind is None or c.kind == kind]

    def streams(self) -> list[CallLog]:
        return [c for c in self.log if c.kind == "stream"]

    async def complete(self, model: ModelSpec, request: ChatRequest, timeout: float) -> ChatResult:
        steps = self.scripts.get(model.model_name)
        if steps is None:
            return await self._fallback(model).complete(model, request, timeout)
        log = CallLog("complete", model.model_name, timeout, request)
        self.log.append(log)
        try:
            async with asyncio.timeout(timeout):
                return await self._answer(steps)
        except TimeoutError:
            raise timed_out() from None
        except asyncio.CancelledError:
            log.cancelled = True
            raise

    async def _answer(self, steps: list[Step]) -> ChatResult:
        chunks: list[StreamChunk] = []
        for step in steps:
            if isinstance(step, ChatResult):
                return step
            if isinstance(step, StreamChunk):
                chunks.append(step)
            else:
                await _play(step)
        usage = next((c.usage for c in reversed(chunks) if c.usage is not None), None)
        content = "".join(c.content for c in chunks)
        return ChatResult(
            content=content,
            finish_reason=next((c.finish_reason for c in chunks if c.finish_reason), "stop"),
            usage=usage or TokenUsage(1, len(content.split())),
            tool_calls=[t for c in chunks for t in c.tool_calls or ()],
        )

    def stream(
        self, model: ModelSpec, request: ChatRequest, timeout: float
    ) -> AsyncIterator[StreamChunk]:
        steps = self.scripts.get(model.model_name)
        if steps is None:
            return self._fallback(model).stream(model, request, timeout)
        log = CallLog("stream", model.model_name, timeout, request)
        self.log.append(log)
        return self._stream(steps, log, timeout)

    async def _stream(
        self, steps: list[Step], log: CallLog, timeout: float
    ) -> AsyncGenerator[StreamChunk, None]:
        loop = asyncio.get_running_loop()
        first_by = loop.time() + timeout
        try:
            for step in steps:
                if isinstance(step, StreamChunk):
                    log.sent.append(step)
                    yield step
                elif isinstance(step, ChatResult):
                    raise TypeError("a stream's script has chunks, not a ChatResult")
                elif log.sent:
                    await _play(step)
                else:
                    # Before the first chunk: the attempt's timeout applies.
                    try:
                        async with asyncio.timeout_at(first_by):
                            await _play(step)
                    except TimeoutError:
                        raise timed_out() from None
        finally:
            log.closed = True

    async def aclose(self) -> None:
        self.closed = True


async def _play(step: float | Gate | BaseException) -> None:
    if isinstance(step, BaseException):
        raise step
    if isinstance(step, Gate):
        step.reached.set()
        await step.opened.wait()
        return
    await asyncio.sleep(step)
