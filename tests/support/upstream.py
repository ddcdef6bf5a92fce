"""A fake OpenAI-compatible upstream over real HTTP, for any test suite.

    async with FakeUpstream() as upstream:
        upstream.set_behavior("gpt-fake", content="Hi there", usage=True)
        upstream.set_behavior("slow", stream_chunks=["a", "b", "c"], chunk_delay_s=0.3)
        upstream.set_behavior("broken", status=500, error_message="boom")
        model = ModelSpec("openai/gpt-fake", 0, {"api_base": upstream.base_url})
        ...
        assert upstream.requests[-1].body["temperature"] == 0.2
        await upstream.wait_disconnect(timeout=1.0)

It serves POST /v1/chat/completions (JSON or SSE when the body says
`stream: true`) and GET /v1/models. Behaviours are keyed by the `model` of
the request body (what the client sends, e.g. without an `openai/` prefix);
unknown models get the default behaviour (`set_default_behavior`).

Client disconnects are observed through aiohttp's handler cancellation: the
handler is cancelled as soon as the connection drops, even while it sleeps
between chunks, and the disconnect is counted (`disconnects`, `disconnected`).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Behavior:
    """How the fake answers one model. All fields optional."""

    status: int = 200
    # For status >= 400: the upstream `error.message` (None -> no message).
    error_message: str | None = None
    # Seconds before the response starts (headers), e.g. to trigger timeouts.
    delay_s: float = 0.0
    content: str = "Hello from the fake upstream."
    # Stream deltas; default: `content` split into words (spaces kept).
    stream_chunks: list[str] | None = None
    chunk_delay_s: float = 0.0
    # Report usage (non-stream body, or the include_usage chunk in streams).
    usage: bool = True
    prompt_tokens: int = 11
    # Default: number of stream chunks / words of the content.
    completion_tokens: int | None = None
    # OpenAI-style tool calls ({"id", "type", "function": {"name", "arguments"}}).
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None  # default: "tool_calls" if tool_calls else "stop"
    # Send this instead of a proper body (for invalid-response tests).
    raw_body: bytes | None = None
    # Streams: drop the connection after this many content chunks.
    drop_after_chunks: int | None = None
    # Streams: send an `error` object as an SSE event after the chunks.
    stream_error: dict[str, Any] | None = None
    # Streams: omit the `data: [DONE]` terminator.
    send_done: bool = True
    # Hostile answers (a provider is untrusted input). Non-stream: keys merged into the
    # answer's `message` as they are, e.g. {"content": [1, 2]} or {"tool_calls": "abc"}.
    message_override: dict[str, Any] | None = None
    # Streams: these raw `delta` objects, one event each, instead of the content chunks.
    stream_deltas: list[Any] | None = None
    # For status >= 400: build `error.message` from the request instead, one part per name:
    # "key" (the Authorization key as sent), "key_short" (its last character dropped),
    # "key_base64" (base64 of it), "prompt" (the last message's content as sent).
    error_echo: tuple[str, ...] = ()
    # For status >= 400: extra response headers, e.g. {"Retry-After": "2"}.
    headers: dict[str, str] | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    # (host, port) of the client socket: equal for two requests on one
    # keep-alive connection.
    peer: tuple[str, int] | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


def _words(text: str) -> list[str]:
    parts: list[str] = []
    for i, word in enumerate(text.split(" ")):
        parts.append(word if i == 0 else " " + word)
    return [p for p in parts if p]


def _echo(parts: tuple[str, ...], request: web.Request, body: dict[str, Any]) -> str:
    """An error message that quotes the request back, as a careless upstream does."""
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    messages = body.get("messages") or [{}]
    texts = {
        "key": f"Incorrect API key provided: {key}.",
        "key_short": f"Incorrect API key provided: {key[:-1]}.",
        "key_base64": f"Bad credentials {base64.b64encode(key.encode()).decode()}.",
        "prompt": f"Could not process your input '{messages[-1].get('content')}'.",
    }
    return " ".join(texts[p] for p in parts)


def closed_port() -> int:
    """A local TCP port nothing listens on (bound then released), for
    "connection refused" tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def closed_base_url() -> str:
    return f"http://127.0.0.1:{closed_port()}/v1"


class FakeUpstream:
    """The server. Use as `async with FakeUpstream() as upstream:` or call
    `start()` / `close()` yourself (e.g. from a session-scoped fixture)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self.disconnected = asyncio.Event()
        # monotonic() time each stream content chunk was written, per request.
        self.chunk_sent_at: list[float] = []
        self.default_behavior = Behavior()
        self._behaviors: dict[str, Behavior] = {}
        self._runner: web.AppRunner | None = None
        # Bumped by reset(): a handler of an earlier test that is cancelled
        # late must not count as a disconnect of the current one.
        self._generation = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- programming ------------------------------------------------------

    def set_behavior(self, model: str, **fields: Any) -> Behavior:
        """Set how `model` is answered; fields are those of `Behavior`."""
        behavior = replace(Behavior(), **fields)
        self._behaviors[model] = behavior
        return behavior

    def set_default_behavior(self, **fields: Any) -> Behavior:
        self.default_behavior = replace(Behavior(), **fields)
        return self.default_behavior

    def behavior_for(self, model: str) -> Behavior:
        return self._behaviors.get(model, self.default_behavior)

    def reset(self) -> None:
        """Forget behaviours, requests and disconnects (between tests)."""
        self._behaviors.clear()
        self.default_behavior = Behavior()
        self.requests.clear()
        self.chunk_sent_at.clear()
        self.disconnects = 0
        self.disconnected = asyncio.Event()
        self._generation += 1

    async def wait_disconnect(self, timeout: float = 2.0) -> None:
        """Wait until a client dropped a connection mid-response."""
        await asyncio.wait_for(self.disconnected.wait(), timeout)

    async def wait_requests(self, count: int, timeout: float = 2.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                await asyncio.sleep(0.005)

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/embeddings", self._embeddings)
        # handler_cancellation: a dropped client cancels the handler at once,
        # which is how disconnects are observed.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- handlers ---------------------------------------------------------

    def _note_disconnect(self, generation: int) -> None:
        if generation != self._generation:
            return
        self.disconnects += 1
        self.disconnected.set()

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model"} for name in self._behaviors]
        return web.json_response({"object": "list", "data": data})

    async def _embeddings(self, request: web.Request) -> web.Response:
        """OpenAI's /embeddings: a 3-number vector per input ([index, length, 0.5]); `usage`
        reports Behavior.prompt_tokens."""
        body = orjson.loads(await request.read())
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.headers), body)
        )
        behavior = self.behavior_for(str(body.get("model", "")))
        if behavior.status >= 400:
            error = {"type": "fake_error", "message": behavior.error_message or "error"}
            return web.json_response({"error": error}, status=behavior.status)
        inputs = body.get("input")
        items = (
            inputs
            if isinstance(inputs, list) and inputs and isinstance(inputs[0], str)
            else [inputs]
        )
        data = [
            {"object": "embedding", "index": i, "embedding": [float(i), float(len(str(x))), 0.5]}
            for i, x in enumerate(items)
        ]
        usage = {"prompt_tokens": behavior.prompt_tokens, "total_tokens": behavior.prompt_tokens}
        return web.json_response(
            {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        generation = self._generation
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return web.json_response({"error": {"message": "invalid JSON body"}}, status=400)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                dict(request.headers),
                body,
                tuple(peer[:2]) if peer else None,
            )
        )
        behavior = self.behavior_for(str(body.get("model", "")))
        try:
            if behavior.delay_s:
                await asyncio.sleep(behavior.delay_s)
            if behavior.status >= 400:
                error: dict[str, Any] = {"type": "fake_error", "code": behavior.status}
                if behavior.error_message is not None:
                    error["message"] = behavior.error_message
                if behavior.error_echo:
                    error["message"] = _echo(behavior.error_echo, request, body)
                payload = behavior.raw_body or orjson.dumps({"error": error})
                return web.Response(
                    body=payload,
                    status=behavior.status,
                    content_type="application/json",
                    headers=behavior.headers,
                )
            if body.get("stream"):
                return await self._stream(request, body, behavior)
            return self._complete(body, behavior)
        except (asyncio.CancelledError, ConnectionResetError):
            self._note_disconnect(generation)
            raise

    def _complete(self, body: dict[str, Any], behavior: Behavior) -> web.Response:
        if behavior.raw_body is not None:
            return web.Response(body=behavior.raw_body, content_type="application/json")
        message: dict[str, Any] = {"role": "assistant", "content": behavior.content}
        if behavior.tool_calls:
            message["tool_calls"] = behavior.tool_calls
            message["content"] = None
        if behavior.message_override:
            message.update(behavior.message_override)
        n = body.get("n") if isinstance(body.get("n"), int) else 1
        answer: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [
                {
                    "index": i,
                    "message": message,
                    "finish_reason": behavior.finish_reason
                    or ("tool_calls" if behavior.tool_calls else "stop"),
                }
                for i in range(n)
            ],
        }
        if behavior.usage:
            completion = behavior.completion_tokens
            if completion is None:
                completion = len(_words(behavior.content))
            answer["usage"] = {
                "prompt_tokens": behavior.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": behavior.prompt_tokens + completion,
            }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def _stream(
        self, request: web.Request, body: dict[str, Any], behavior: Behavior
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": body["model"]}

        async def send(obj: dict[str, Any]) -> None:
            await response.write(b"data: " + orjson.dumps({**base, **obj}) + b"\n\n")

        if behavior.raw_body is not None:
            await response.write(behavior.raw_body)
            return response
        # Like OpenAI: a role-only first delta.
        await send({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        chunks = behavior.stream_chunks
        if chunks is None:
            chunks = _words(behavior.content)
        if behavior.stream_deltas is not None:
            chunks = []
            for delta in behavior.stream_deltas:
                await send({"choices": [{"index": 0, "delta": delta}]})
        for i, chunk in enumerate(chunks):
            if behavior.drop_after_chunks is not None and i >= behavior.drop_after_chunks:
                # Abrupt close mid-stream, as a crashing upstream would.
                assert request.transport is not None
                request.transport.close()
                return response
            if i and behavior.chunk_delay_s:
                await asyncio.sleep(behavior.chunk_delay_s)
            await send({"choices": [{"index": 0, "delta": {"content": chunk}}]})
            self.chunk_sent_at.append(time.monotonic())
        if behavior.tool_calls:
            for index, call in enumerate(behavior.tool_calls):
                function = call.get("function", {})
                head = {
                    "index": index,
                    "id": call.get("id"),
                    "type": "function",
                    "function": {"name": function.get("name"), "arguments": ""},
                }
                await send({"choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})
                args = {"index": index, "function": {"arguments": function.get("arguments", "")}}
                await send({"choices": [{"index": 0, "delta": {"tool_calls": [args]}}]})
        if behavior.stream_error is not None:
            await response.write(
                b"data: " + orjson.dumps({"error": behavior.stream_error}) + b"\n\n"
            )
            return response
        finish = behavior.finish_reason or ("tool_calls" if behavior.tool_calls else "stop")
        await send({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        options = body.get("stream_options") or {}
        if behavior.usage and options.get("include_usage"):
            completion = behavior.completion_tokens
            if completion is None:
                completion = len(chunks)
            usage = {
                "prompt_tokens": behavior.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": behavior.prompt_tokens + completion,
            }
            await send({"choices": [], "usage": usage})
        if behavior.send_done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
