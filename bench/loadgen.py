"""The asyncio load generator: a fixed number of requests at a fixed concurrency, bounded in time.

`run(op, concurrency, requests, time_cap)` starts `concurrency` workers that take request numbers
from a shared counter until `requests` are done or `time_cap` seconds have passed, each awaiting
`op()` (one request, or one multi-request flow) and recording its latency. An op may return a
`StreamTiming` (time to first chunk, chunks) for streams. Errors are counted, never raised; the
first few messages are kept.

The generator runs in the bench's own process (uvloop) on the same 2 cores as what it measures: its
CPU is not counted in the gateway's CPU per request, but it does compete with it, so throughput at
concurrency 32 is a lower bound of what the gateway would do with the cores to itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.providers.http1 import Connection, Http1Client


def upstream_chunks(text: str) -> int:
    """How many of the fake upstream's deltas ("tok<i> ") a piece of streamed text holds: the
    gateway may send several in one event when they arrive faster than it can send them."""
    return text.count("tok")


@dataclass(frozen=True, slots=True)
class StreamTiming:
    first_chunk_s: float  # from sending the request to the first upstream chunk received
    last_chunk_s: float  # ... to the last one
    chunks: int  # upstream chunks received

    @property
    def chunk_interval_s(self) -> float | None:
        """Mean time between two content chunks of this stream."""
        if self.chunks < 2:
            return None
        return (self.last_chunk_s - self.first_chunk_s) / (self.chunks - 1)


Op = Callable[[], Awaitable[StreamTiming | None]]


@dataclass
class LoadResult:
    concurrency: int
    requested: int
    done: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    first_chunk_s: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    chunk_intervals_s: list[float] = field(default_factory=list)
    timed_out: bool = False

    @property
    def rps(self) -> float:
        return self.done / self.wall_s if self.wall_s > 0 else 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def run(
    op: Op,
    *,
    concurrency: int,
    requests: int,
    time_cap: float,
    max_error_samples: int = 3,
) -> LoadResult:
    result = LoadResult(concurrency=concurrency, requested=requests)
    issued = 0
    start = time.perf_counter()
    deadline = start + time_cap

    async def worker() -> None:
        nonlocal issued
        while issued < requests:
            if time.perf_counter() >= deadline:
                result.timed_out = True
                return
            issued += 1
            t0 = time.perf_counter()
            try:
                timing = await op()
            except Exception as exc:  # counted, reported, never fatal
                result.errors += 1
                if len(result.error_samples) < max_error_samples:
                    result.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            result.latencies_s.append(time.perf_counter() - t0)
            result.done += 1
            if timing is not None:
                result.first_chunk_s.append(timing.first_chunk_s)
                result.chunks.append(timing.chunks)
                interval = timing.chunk_interval_s
                if interval is not None:
                    result.chunk_intervals_s.append(interval)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - start
    return result


async def warmup(op: Op, *, concurrency: int, requests: int, time_cap: float) -> LoadResult:
    return await run(op, concurrency=concurrency, requests=requests, time_cap=time_cap)


# HTTP helpers ------------------------------------------------------------------------------
#
# The generator shares the CPUs with what it measures, so it uses the gateway's own lean HTTP/1.1
# client (service/providers/http1.py: one write per request, llhttp parsing) rather than aiohttp,
# which costs ~3x more CPU per request; the CPU it saves goes to the processes under test.


class HttpError(Exception):
    pass


REQUEST_TIMEOUT_S = 60.0


class Session:
    """Keep-alive HTTP/1.1 connections, reused across requests (one per concurrent request)."""

    def __init__(self) -> None:
        self._client = Http1Client(
            headers={"Content-Type": "application/json"}, keepalive_timeout=60.0
        )

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client.close()

    async def open(
        self, url: str, body: bytes, headers: dict[str, str] | None, method: str = "POST"
    ) -> Connection:
        """Send the request; return the connection with the response head read."""
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode()
        conn = await self._client.endpoint(url, method).send(body, extra)
        try:
            await conn.read_head()
        except BaseException:
            conn.close()
            raise
        return conn


async def post_json(
    session: Session,
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> Any:
    """One request (POST unless told) with a JSON answer; anything but 200 is an HttpError."""
    conn: Connection | None = None
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            conn = await session.open(url, body, headers, method)
            status = conn.status
            raw = await conn.read_body()
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    conn.release()
    if status != 200:
        raise HttpError(f"HTTP {status}: {raw[:200]!r}")
    return orjson.loads(raw)


async def post_sse(
    session: Session,
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    openai_style: bool,
) -> StreamTiming:
    """POST and read an SSE answer to its end, counting the upstream chunks in the content of the
    events: OpenAI-style (`choices[0].delta.content`, ends with `[DONE]`) or the gateway's
    (`content`)."""
    t0 = time.perf_counter()
    first = last = 0.0
    chunks = 0
    conn: Connection | None = None
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            conn = await session.open(url, body, headers)
            if conn.status != 200:
                raw = await conn.read_body()
                raise HttpError(f"HTTP {conn.status}: {raw[:200]!r}")
            done = False
            while not done and (lines := await conn.next_lines()):
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        break
                    obj = orjson.loads(payload)
                    if openai_style:
                        choices = obj.get("choices")
                        text = (choices[0].get("delta") or {}).get("content") if choices else None
                    else:
                        if obj.get("error"):
                            raise HttpError(f"stream error: {obj['error']}")
                        text = obj.get("content")
                    if text:
                        last = time.perf_counter() - t0
                        if not chunks:
                            first = last
                        chunks += upstream_chunks(text)
            await conn.read_body()  # the rest (the end of the chunked body), so it can be reused
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    conn.release()
    if not chunks:
        raise HttpError("stream without content")
    return StreamTiming(first_chunk_s=first, last_chunk_s=last, chunks=chunks)
