"""The fast path: OpenAI and OpenAI-compatible servers (vLLM, Ollama's /v1,
LM Studio, llama.cpp server, ...) over pooled keep-alive connections
(`providers/http1.py`, one endpoint per api_base).

This module sits on the hot path of every LLM call, so it stays lean: no
LiteLLM, no per-call imports, one `orjson.dumps` per request and one
`orjson.loads` per SSE line, keep-alive connections reused across calls.

Timeouts (`timeout` is the seconds left for this attempt):
- `complete`: the whole request, connect to last byte.
- `stream`: the time to first byte (connect, response headers and the first
  SSE line) is bounded by `timeout`; after that every wait for data is
  bounded by `timeout` (the longest allowed silence between chunks). A long
  but live stream is therefore not cut by the attempt timeout; the request
  deadline bounds it instead (the gRPC layer cancels the consumer, which
  closes the upstream connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any, NoReturn

import orjson

from service.providers._common import (
    clean_message,
    connection_error,
    embedding_usage_estimate,
    estimate_usage,
    http_error,
    parse_retry_after,
    parse_usage,
    resolve_api_key,
    timeout_error,
    tool_call_chars,
)
from service.providers.base import (
    ChatRequest,
    ChatResult,
    Choice,
    EmbeddingResult,
    ModelSpec,
    ProviderError,
    StreamChunk,
    TokenUsage,
)
from service.providers.http1 import (
    ConnectError,
    Connection,
    ConnectionLost,
    Endpoint,
    Http1Client,
    InvalidResponse,
    header_value_ok,
)

DEFAULT_API_BASE = "https://api.openai.com/v1"
OPENAI_PREFIX = "openai/"
# Used only when the model targets api.openai.com and has no `api_key`: never
# sent to a third-party api_base.
OPENAI_KEY_ENV = "OPENAI_API_KEY"
_STREAM_OPTIONS = {"include_usage": True}
# After `[DONE]`, how long a stream waits for the end of the HTTP body before it drops the
# connection instead of pooling it (the final event waits for this).
BODY_END_WAIT_S = 0.05


def _lost_error() -> ProviderError:
    return ProviderError("Connection to the provider was lost", retryable=True)


def _invalid_error() -> ProviderError:
    return ProviderError("Provider sent an invalid response", retryable=True)


def _upstream_message(raw: bytes) -> str | None:
    """The human part of an error body: OpenAI's `error.message`, vLLM's
    `message`, FastAPI's `detail`, or a short plain-text body (not HTML)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw[:1000].decode("utf-8", "replace").strip()
        return text if text and not text.startswith("<") else None
    if not isinstance(obj, dict):
        return None
    err = obj.get("error")
    if isinstance(err, dict):
        err = err.get("message")
    for candidate in (err, obj.get("message"), obj.get("detail")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


class OpenAICompatProvider:
    """Provider for OpenAI-compatible `/chat/completions` endpoints.

    Model config keys used: `api_base` (default https://api.openai.com/v1) and
    `api_key` (`"os.environ/NAME"` or a literal key; absent means
    OPENAI_API_KEY for api.openai.com and no Authorization header elsewhere).
    """

    def __init__(
        self,
        *,
        default_api_base: str = DEFAULT_API_BASE,
        keepalive_timeout: float = 30.0,
        client: Http1Client | None = None,
    ) -> None:
        self._default_api_base = default_api_base
        self._client = client or Http1Client(
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            keepalive_timeout=keepalive_timeout,
        )
        # (api_base, path) -> its endpoint.
        self._endpoints: dict[tuple[str, str], Endpoint] = {}

    def _endpoint(self, api_base: str, path: str = "/chat/completions") -> Endpoint:
        endpoint = self._endpoints.get((api_base, path))
        if endpoint is None:
            try:
                endpoint = self._client.endpoint(api_base.rstrip("/") + path)
            except ValueError as exc:
                # The operator's configuration, not the tenant's request: the next model of the
                # group may work.
                raise ProviderError(
                    "The model's api_base is not a valid http(s) URL", retryable=True
                ) from exc
            self._endpoints[(api_base, path)] = endpoint
        return endpoint

    def _auth(self, model: ModelSpec) -> tuple[str, bytes, str | None, str]:
        """(api_base, Authorization header line, key, the model's name upstream)."""
        config = model.config
        api_base = str(config.get("api_base") or self._default_api_base)
        key = resolve_api_key(config, OPENAI_KEY_ENV if api_base == DEFAULT_API_BASE else None)
        name = model.model_name
        if name.startswith(OPENAI_PREFIX):
            name = name[len(OPENAI_PREFIX) :]
        if key:
            if not header_value_ok(key):
                raise ProviderError(
                    "The model's API key has characters not allowed in an HTTP header",
                    retryable=True,
                )
            return api_base, b"Authorization: Bearer %s\r\n" % key.encode(), key, name
        return api_base, b"", None, name

    def _prepare(
        self, model: ModelSpec, request: ChatRequest, stream: bool
    ) -> tuple[Endpoint, bytes, bytes, str | None]:
        api_base, auth, key, name = self._auth(model)
        body: dict[str, Any] = dict(request.params)
        body["model"] = name
        body["messages"] = request.messages
        if stream:
            body["stream"] = True
            body["stream_options"] = _STREAM_OPTIONS
        else:
            body.pop("stream", None)
        return self._endpoint(api_base), orjson.dumps(body), auth, key

    async def complete(
        self,
        model: ModelSpec,
        request: ChatRequest,
        timeout: float,
    ) -> ChatResult:
        if timeout <= 0:
            raise timeout_error()
        endpoint, body, auth, key = self._prepare(model, request, stream=False)
        deadline = asyncio.get_running_loop().time() + timeout
        conn: Connection | None = None
        try:
            conn = await endpoint.send(body, auth, deadline)
            status = await conn.read_head(deadline)
            raw = await conn.read_body(deadline)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            _raise_transport_error(exc)
        conn.release()
        if status >= 300:
            raise http_error(
                status, _upstream_message(raw), key, parse_retry_after(conn.retry_after)
            )
        return _parse_completion(raw, request)

    async def embed(
        self, model: ModelSpec, inputs: Any, params: Mapping[str, Any], timeout: float
    ) -> EmbeddingResult:
        if timeout <= 0:
            raise timeout_error()
        api_base, auth, key, name = self._auth(model)
        body = {**params, "model": name, "input": inputs, "encoding_format": "float"}
        endpoint = self._endpoint(api_base, "/embeddings")
        deadline = asyncio.get_running_loop().time() + timeout
        conn: Connection | None = None
        try:
            conn = await endpoint.send(orjson.dumps(body), auth, deadline)
            status = await conn.read_head(deadline)
            raw = await conn.read_body(deadline)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            _raise_transport_error(exc)
        conn.release()
        if status >= 300:
            raise http_error(
                status, _upstream_message(raw), key, parse_retry_after(conn.retry_after)
            )
        return _parse_embeddings(raw, inputs)

    async def stream(
        self,
        model: ModelSpec,
        request: ChatRequest,
        timeout: float,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Yield one chunk per upstream delta that carries content or tool
        calls, then a last chunk with finish_reason and usage.

        Leaving early (aclose, or cancellation of the consumer) closes the
        upstream connection in `finally` so the server stops generating.
        Consumers that `break` should `aclose()` the iterator (or use
        `contextlib.aclosing`) rather than leave it to garbage collection.
        """
        if timeout <= 0:
            raise timeout_error()
        endpoint, body, auth, key = self._prepare(model, request, stream=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn: Connection | None = None
        try:
            try:
                conn = await endpoint.send(body, auth, deadline)
                status = await conn.read_head(deadline)
                if status >= 300:
                    raw = await conn.read_body(deadline)
                    raise http_error(
                        status, _upstream_message(raw), key, parse_retry_after(conn.retry_after)
                    )
                lines = await conn.next_lines(deadline)
            except BaseException as exc:
                _raise_transport_error(exc)

            finish_reason: str | None = None
            usage = None
            out_chars = 0
            done = False
            try:
                while lines:
                    for line in lines:
                        # SSE: only `data:` lines matter; blank separators,
                        # `: keep-alive` comments and `event:` lines are skipped.
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            done = True
                            break
                        obj = orjson.loads(payload)
                        choices = obj.get("choices")
                        if choices:
                            choice = choices[0]
                            delta = choice.get("delta")
                            if delta:
                                text = delta.get("content")
                                tool_calls = delta.get("tool_calls")
                                if text or tool_calls:
                                    if text:
                                        out_chars += len(text)
                                    else:
                                        text = ""
                                    if tool_calls:
                                        out_chars += tool_call_chars(tool_calls)
                                    yield StreamChunk(content=text, tool_calls=tool_calls or None)
                            reason = choice.get("finish_reason")
                            if reason:
                                finish_reason = reason
                        elif "error" in obj:
                            # vLLM and OpenAI report mid-stream failures this way.
                            raise _stream_error(obj["error"], key)
                        raw_usage = obj.get("usage")
                        if raw_usage:
                            usage = parse_usage(raw_usage)
                    if done:
                        break
                    lines = await conn.next_lines(loop.time() + timeout)
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
                raise _invalid_error() from exc
            except BaseException as exc:
                _raise_transport_error(exc)

            if not done and finish_reason is None:
                raise ProviderError("Provider closed the stream early", retryable=True)
            # Give the connection back before the last yield (a consumer that stops after the
            # final chunk never resumes this generator): reusable only if the body has ended.
            if done and not conn.complete:
                # `[DONE]` came before the body's end (the terminating chunk is usually right
                # behind it): wait a moment for it rather than drop a good connection.
                with contextlib.suppress(TimeoutError, ConnectionLost, InvalidResponse):
                    await conn.read_body(loop.time() + min(timeout, BODY_END_WAIT_S))
            conn.release()
            conn = None
            yield StreamChunk(
                finish_reason=finish_reason or "stop",
                usage=usage or estimate_usage(request.messages, out_chars),
            )
        finally:
            if conn is not None:
                # Early exit, error or cancellation: drop the connection so the
                # upstream sees the disconnect and stops generating.
                conn.close()

    async def aclose(self) -> None:
        self._endpoints.clear()
        self._client.close()


def _raise_transport_error(exc: BaseException) -> NoReturn:
    """Raise the ProviderError for a failure of the HTTP exchange; anything else (cancellation,
    a ProviderError already) is raised again unchanged."""
    if isinstance(exc, TimeoutError):
        raise timeout_error() from exc
    if isinstance(exc, ConnectError):
        raise connection_error() from exc
    if isinstance(exc, ConnectionLost):
        raise _lost_error() from exc
    if isinstance(exc, InvalidResponse):
        raise _invalid_error() from exc
    raise exc


def _stream_error(err: Any, key: str | None) -> ProviderError:
    """An `{"error": ...}` event in the stream; its `code` is an HTTP status
    when numeric (vLLM), else the failure is treated as a server error."""
    message = err.get("message") if isinstance(err, Mapping) else err
    message = message if isinstance(message, str) and message else None
    code = err.get("code") if isinstance(err, Mapping) else None
    if isinstance(code, int) and 400 <= code < 600:
        return http_error(code, message, key)
    text = f"Provider error: {clean_message(message, key)}" if message else "Provider error"
    return ProviderError(text, retryable=True)


def _choice(raw: Any) -> Choice:
    message = raw.get("message") or {}
    content = message.get("content") or ""
    tool_calls = message.get("tool_calls") or []
    finish_reason = raw.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
    return Choice(content=content, finish_reason=finish_reason, tool_calls=tool_calls)


def _parse_completion(raw: bytes, request: ChatRequest) -> ChatResult:
    try:
        obj = orjson.loads(raw)
        choices = [_choice(c) for c in obj["choices"]]
        first = choices[0]
        usage = parse_usage(obj.get("usage"))
    except (orjson.JSONDecodeError, LookupError, AttributeError, TypeError) as exc:
        raise _invalid_error() from exc
    if usage is None:
        out_chars = sum(len(c.content) + tool_call_chars(c.tool_calls) for c in choices)
        usage = estimate_usage(request.messages, out_chars)
    return ChatResult(
        content=first.content,
        finish_reason=first.finish_reason,
        usage=usage,
        tool_calls=first.tool_calls,
        more_choices=tuple(choices[1:]),
    )


def _parse_embeddings(raw: bytes, inputs: Any) -> EmbeddingResult:
    try:
        obj = orjson.loads(raw)
        data = sorted(obj["data"], key=lambda d: d.get("index", 0))
        vectors = [[float(x) for x in d["embedding"]] for d in data]
        raw_usage = obj.get("usage") or {}
        prompt = raw_usage.get("prompt_tokens")
    except (orjson.JSONDecodeError, LookupError, AttributeError, TypeError, ValueError) as exc:
        raise _invalid_error() from exc
    if isinstance(prompt, int) and not isinstance(prompt, bool) and prompt >= 0:
        usage = TokenUsage(prompt_tokens=prompt, completion_tokens=0)
    else:
        usage = embedding_usage_estimate(inputs)
    return EmbeddingResult(vectors=vectors, usage=usage)
