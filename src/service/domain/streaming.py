"""Relaying a provider stream to the client: read ahead in a task of its own, merge what piles
up, stop when told to (suspension, shutdown), and account for everything read.

The provider is read by its own task (the pump) while the previous event is being sent. Chunks
that arrive faster than the client takes them are sent merged in the next event: no chunk ever
waits for a later one (an event leaves as soon as the previous one is written), and a burst
costs one event instead of one per chunk. Tool-call chunks are never merged (their deltas are
positional).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from service.domain.admission import estimate_tokens
from service.providers.base import ChatRequest, ProviderError, StreamChunk, TokenUsage

log = logging.getLogger(__name__)

# Chunks read ahead of the client at most (then the provider's connection is not read).
STREAM_BACKLOG = 256
# Seconds between the checks of a streaming call's team (a suspension ends its streams on every
# replica within this time).
STREAM_CHECK_S = 1.0
# gRPC codes of the final error event of a stream the gateway ended.
UNAVAILABLE, PERMISSION_DENIED = 14, 7
_NOTHING = object()


class StreamStopped(Exception):
    """The gateway ended a stream before the provider did (team suspended, shutting down)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        # gRPC status code of the final error event.
        self.code = code


@dataclass(slots=True)
class Relayed:
    """What a relay saw, for the call's record."""

    parts: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: TokenUsage | None = None
    status: str = "cancelled"  # until the stream ends: a client that goes away cancels it
    error: str | None = None
    stopped: StreamStopped | None = None

    def see(self, chunk: StreamChunk) -> None:
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason

    @property
    def content(self) -> str:
        return "".join(self.parts)

    def billed_usage(self, request: ChatRequest) -> TokenUsage:
        """The usage a stream's record carries: the provider's when it sent one (it may have,
        even on a stream that failed or was cancelled after), else an estimate of the tokens
        seen so far: a client that went away pays for what it was sent."""
        if self.usage is not None:
            return self.usage
        return TokenUsage(
            estimate_tokens(request.messages), max(0, len(self.content) // 4), estimated=True
        )


async def relay(
    first: StreamChunk,
    rest: AsyncIterator[StreamChunk],
    seen: Relayed,
    stop: Callable[[], Awaitable[StreamStopped]] | None = None,
) -> AsyncGenerator[tuple[str, list[dict[str, Any]] | None], None]:
    """Yield (text, tool_calls) events from `first` and `rest` into `seen`. `stop()` is awaited
    beside the stream; when it returns, the stream ends as failed with its reason. Ends with
    seen.status "success" or "failed" (or "cancelled" when the consumer stops iterating); the
    provider's stream is closed in every case."""
    backlog: asyncio.Queue[StreamChunk | Exception | None] = asyncio.Queue(STREAM_BACKLOG)
    # The chunk the pump has read and is waiting to queue (a stop must not lose it).
    held: list[StreamChunk] = []
    pump = asyncio.create_task(_pump(rest, backlog, held))
    watch = asyncio.create_task(_watch(stop, backlog, pump, held)) if stop is not None else None
    chunk: StreamChunk | None = first
    try:
        while chunk is not None:
            seen.see(chunk)
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
                    seen.see(nxt)
                if merged is not None:
                    text = "".join(merged)
            if text or tool_calls:
                seen.parts.append(text)
                if tool_calls:
                    seen.tool_calls.extend(tool_calls)
                yield text, tool_calls
            if following is _NOTHING:
                following = await backlog.get()
            if isinstance(following, Exception):
                raise following
            assert following is None or isinstance(following, StreamChunk)
            chunk = following
        seen.status = "success"
    except StreamStopped as exc:
        seen.status = "failed"
        seen.error = exc.message
        seen.stopped = exc
    except Exception as exc:
        seen.status = "failed"
        seen.error = exc.message if isinstance(exc, ProviderError) else "stream interrupted"
    finally:
        for task in (pump, watch):
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task])
        while not backlog.empty():
            # Read from the provider but not sent (the client went away): still seen.
            left = backlog.get_nowait()
            if isinstance(left, StreamChunk):
                seen.parts.append(left.content)
                if left.usage is not None:
                    seen.usage = left.usage
        closer = getattr(rest, "aclose", None)
        if closer is not None:
            # Best effort: the upstream is gone either way.
            with contextlib.suppress(Exception):
                await asyncio.shield(closer())


def stop_when(
    draining: asyncio.Event, team_active: Callable[[], Awaitable[bool]], team_id: str = ""
) -> Callable[[], Awaitable[StreamStopped]]:
    """What ends a stream early: the process shutting down (`draining`), or its team's
    suspension (`team_active()` polled every STREAM_CHECK_S)."""

    async def stop() -> StreamStopped:
        drain = asyncio.ensure_future(draining.wait())
        try:
            while True:
                done, _ = await asyncio.wait([drain], timeout=STREAM_CHECK_S)
                if done:
                    return StreamStopped(
                        "Server shutting down; the stream was cut, retry", UNAVAILABLE
                    )
                try:
                    active = await team_active()
                except Exception:
                    # A database blip: the stream goes on, and is checked again next time.
                    log.warning("stream's team check failed; retrying", exc_info=True)
                    continue
                if not active:
                    return StreamStopped(f"Team '{team_id}' is suspended", PERMISSION_DENIED)
        finally:
            drain.cancel()

    return stop


async def _pump(
    stream: AsyncIterator[StreamChunk],
    out: asyncio.Queue[StreamChunk | Exception | None],
    held: list[StreamChunk],
) -> None:
    """Read a provider stream into `out`, ending with None or the exception. While a chunk
    waits for room in `out`, it is in `held`."""
    try:
        async for chunk in stream:
            held.append(chunk)
            await out.put(chunk)
            held.clear()
    except Exception as exc:
        await out.put(exc)
    else:
        await out.put(None)


async def _watch(
    stop: Callable[[], Awaitable[StreamStopped]],
    out: asyncio.Queue[StreamChunk | Exception | None],
    pump: asyncio.Task[None],
    held: list[StreamChunk],
) -> None:
    reason = await stop()
    # The provider is no longer read; what it already sent is relayed, then the stream ends.
    pump.cancel()
    await asyncio.wait([pump])
    for chunk in held:
        await out.put(chunk)
    held.clear()
    await out.put(reason)
