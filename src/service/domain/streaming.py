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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from service.providers.base import ProviderError, StreamChunk, TokenUsage

# Chunks read ahead of the client at most (then the provider's connection is not read).
STREAM_BACKLOG = 256
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


async def relay(
    first: StreamChunk,
    rest: AsyncIterator[StreamChunk],
    seen: Relayed,
    stop: Callable[[], Awaitable[StreamStopped]] | None = None,
) -> AsyncIterator[tuple[str, list[dict[str, Any]] | None]]:
    """Yield (text, tool_calls) events from `first` and `rest` into `seen`. `stop()` is awaited
    beside the stream; when it returns, the stream ends as failed with its reason. Ends with
    seen.status "success" or "failed" (or "cancelled" when the consumer stops iterating); the
    provider's stream is closed in every case."""
    backlog: asyncio.Queue[StreamChunk | Exception | None] = asyncio.Queue(STREAM_BACKLOG)
    pump = asyncio.create_task(_pump(rest, backlog))
    watch = asyncio.create_task(_watch(stop, backlog, pump)) if stop is not None else None
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


async def _watch(
    stop: Callable[[], Awaitable[StreamStopped]],
    out: asyncio.Queue[StreamChunk | Exception | None],
    pump: asyncio.Task[None],
) -> None:
    reason = await stop()
    # The provider is no longer read; what it already sent is relayed, then the stream ends.
    pump.cancel()
    await asyncio.wait([pump])
    await out.put(reason)
