"""A fast fake OpenAI-compatible upstream: `python -m tests.support.fast_upstream --port P`.

It must cost next to nothing per request, so that the bench measures the gateway and not the fake:
a bare asyncio Protocol on uvloop with a minimal HTTP/1.1 parser (keep-alive, Content-Length or
chunked request bodies) and canned answers built once at start. The bench measures through it.
tests/support/upstream.py (aiohttp, in process, configurable behaviours, request recording) is the
one for correctness tests; it costs ~10x more CPU per request.

POST .../chat/completions answers a fixed chat completion, or with `"stream": true` in the body an
SSE stream of `--chunks` content deltas (one write each, no delay unless `--chunk-delay-ms`), a
finish chunk, a usage chunk (as with `stream_options.include_usage`) and `data: [DONE]`. Any other
path answers 200 `{}` (GET /health, /v1/models probes).

The bound port is printed as `PORT <n>` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import sys
from typing import Any

import orjson

_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_CREATED = 1_700_000_000
CONTENT = "Hello from the bench upstream."


def _completion_body() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": _CREATED,
            "model": "bench-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": CONTENT},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }
    )


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _chunked(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


def _stream_parts(chunks: int) -> list[bytes]:
    """Each element is one HTTP chunk (already framed) = one SSE event."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": _CREATED}
    base["model"] = "bench-model"
    parts: list[bytes] = []
    for i in range(chunks):
        delta: dict[str, Any] = {"content": f"tok{i} "}
        if i == 0:
            delta["role"] = "assistant"
        parts.append(
            _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        )
    parts.append(_sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    parts.append(
        _sse(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": 11,
                    "completion_tokens": chunks,
                    "total_tokens": 11 + chunks,
                },
            }
        )
    )
    parts.append(b"data: [DONE]\n\n")
    return [_chunked(p) for p in parts]


class Canned:
    def __init__(self, chunks: int, chunk_delay_s: float) -> None:
        body = _completion_body()
        self.completion = (
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n"
            b"\r\n%b" % (len(body), body)
        )
        self.stream_head = (
            b"HTTP/1.1 200 OK\r\n"
            b"Content-Type: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n"
            b"\r\n"
        )
        self.stream_parts = _stream_parts(chunks)
        self.stream_end = b"0\r\n\r\n"
        self.chunk_delay_s = chunk_delay_s
        self.other = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        )


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse requests from the buffer, answer each in order."""

    def __init__(self, canned: Canned) -> None:
        self.canned = canned
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a delayed stream is being written
        self.writer: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def _drain(self) -> None:
        while self.transport is not None and not self.busy:
            parsed = self._parse()
            if parsed is None:
                return
            path, body, close = parsed
            self._answer(path, body, close)

    def _parse(self) -> tuple[bytes, bytes, bool] | None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buf[:end]).lower()
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        path = parts[1] if len(parts) > 1 else b"/"
        length = 0
        chunked = False
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value:
                chunked = True
            elif name == b"connection" and b"close" in value:
                close = True
        start = end + 4
        if chunked:
            body = bytearray()
            pos = start
            while True:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    return None
                size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
                if size == 0:
                    fin = buf.find(b"\r\n", nl + 2)
                    if fin < 0:
                        return None
                    del buf[: fin + 2]
                    return path, bytes(body), close
                if len(buf) < nl + 2 + size + 2:
                    return None
                body += buf[nl + 2 : nl + 2 + size]
                pos = nl + 2 + size + 2
        if len(buf) < start + length:
            return None
        body_bytes = bytes(buf[start : start + length])
        del buf[: start + length]
        return path, body_bytes, close

    def _answer(self, path: bytes, body: bytes, close: bool) -> None:
        t = self.transport
        assert t is not None
        c = self.canned
        if path.endswith(b"/chat/completions"):
            if _STREAM_RE.search(body):
                if c.chunk_delay_s > 0:
                    self.busy = True
                    self.writer = asyncio.ensure_future(self._slow_stream(close))
                    return
                t.write(c.stream_head)
                for part in c.stream_parts:
                    t.write(part)
                t.write(c.stream_end)
            else:
                t.write(c.completion)
        else:
            t.write(c.other)
        if close:
            t.close()

    async def _slow_stream(self, close: bool) -> None:
        c = self.canned
        try:
            if self.transport is None:
                return
            self.transport.write(c.stream_head)
            for part in c.stream_parts:
                await asyncio.sleep(c.chunk_delay_s)
                if self.transport is None:
                    return
                self.transport.write(part)
            self.transport.write(c.stream_end)
            if close:
                self.transport.close()
        finally:
            self.busy = False
        self._drain()


async def serve(host: str, port: int, chunks: int, chunk_delay_s: float) -> None:
    canned = Canned(chunks, chunk_delay_s)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(canned), host, port, backlog=1024, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"PORT {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fast fake OpenAI-compatible upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=20, help="content deltas per stream")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    coro = serve(args.host, args.port, args.chunks, args.chunk_delay_ms / 1000.0)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
