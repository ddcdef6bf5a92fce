"""Every provider that is not OpenAI-compatible (Anthropic, Gemini, Bedrock,
Vertex, Azure, Cohere, ...) through `litellm.acompletion`.

LiteLLM costs ~2 s to import and a few ms of CPU per call, so it is kept off
the fast path: it is imported on the first call that needs it (in a worker
thread, so the event loop keeps serving other requests meanwhile), with
`LITELLM_LOCAL_MODEL_COST_MAP=True` so the import never fetches the cost map
over the network.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from service.providers._common import (
    ENV_PREFIX,
    embedding_usage_estimate,
    estimate_usage,
    http_error,
    parse_retry_after,
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
from service.providers.credentials import read_env_reference

# Model config keys forwarded to litellm.acompletion as they are (values of
# the form "os.environ/NAME" are resolved first). Our own keys (prices,
# timeout, priority, rpm...) are not forwarded: LiteLLM would send unknown
# keys to the provider.
_FORWARDED_CONFIG = frozenset(
    {
        "api_base",
        "api_version",
        "organization",
        "extra_headers",
        "azure_ad_token",
        "drop_params",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region_name",
        "aws_profile_name",
        "aws_role_name",
        "aws_bedrock_runtime_endpoint",
        "vertex_project",
        "vertex_location",
        "vertex_credentials",
        "region_name",
        "custom_llm_provider",
    }
)
# "litellm.RateLimitError: RateLimitError: OpenAIException - ..." -> the tail.
_PREFIX_RE = re.compile(r"^(?:litellm\.\w+:\s*)?(?:\w+(?:Error|Exception)\s*[:-]\s*)*")

_litellm: Any = None
_import_lock: asyncio.Lock | None = None


def _import_litellm() -> Any:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    module: Any = importlib.import_module("litellm")
    # No telemetry, no "Give Feedback / Get Help" banners in our logs.
    module.telemetry = False
    module.suppress_debug_info = True
    return module


async def load_litellm() -> Any:
    """Import LiteLLM once, off the event loop thread."""
    global _litellm, _import_lock
    if _litellm is None:
        if _import_lock is None:
            _import_lock = asyncio.Lock()
        async with _import_lock:
            if _litellm is None:
                _litellm = await asyncio.to_thread(_import_litellm)
    return _litellm


def _resolve(value: Any) -> Any:
    if isinstance(value, dict):
        # extra_headers: {"x-api-key": "os.environ/NAME"}
        return {k: _resolve(v) for k, v in value.items()}
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        return read_env_reference(value[len(ENV_PREFIX) :])
    return value


def _dump(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    dumped = obj.model_dump(exclude_none=True)
    return dumped if isinstance(dumped, dict) else {}


def _dump_all(items: Any) -> list[dict[str, Any]]:
    return [_dump(i) for i in items]


def _choice(raw: Any) -> Choice:
    message = raw.message
    content = message.content or ""
    tool_calls = [_dump(tc) for tc in (getattr(message, "tool_calls", None) or [])]
    finish_reason = raw.finish_reason or ("tool_calls" if tool_calls else "stop")
    return Choice(content=content, finish_reason=finish_reason, tool_calls=tool_calls)


def _usage(raw: Any) -> TokenUsage | None:
    if raw is None:
        return None
    prompt = getattr(raw, "prompt_tokens", None)
    completion = getattr(raw, "completion_tokens", None)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return TokenUsage(prompt_tokens=prompt, completion_tokens=completion)


class LiteLLMProvider:
    """Provider for every model the fast path does not serve. The model name
    is given to LiteLLM as configured (`anthropic/claude-3-5-sonnet`, ...)."""

    def _kwargs(self, model: ModelSpec, request: ChatRequest, timeout: float) -> dict[str, Any]:
        config = model.config
        kwargs: dict[str, Any] = dict(request.params)
        for name, value in config.items():
            if name in _FORWARDED_CONFIG and value is not None:
                kwargs[name] = _resolve(value)
        key = resolve_api_key(config)
        if key:
            kwargs["api_key"] = key
        kwargs["model"] = model.model_name
        kwargs["messages"] = request.messages
        kwargs["timeout"] = timeout
        # The model group does the fallbacks; hidden retries would spend the
        # attempt's time budget on a failing model.
        kwargs["max_retries"] = 0
        return kwargs

    def _error(self, exc: BaseException, key: str | None) -> ProviderError:
        if isinstance(exc, ProviderError):
            return exc
        if isinstance(exc, TimeoutError):
            return timeout_error()
        lib = _litellm
        if lib is not None:
            if isinstance(exc, lib.Timeout):
                return timeout_error()
            if isinstance(exc, lib.APIConnectionError):
                return ProviderError("Could not connect to the provider", retryable=True)
        message = _PREFIX_RE.sub("", str(getattr(exc, "message", None) or exc), count=1)
        status = getattr(exc, "status_code", None)
        if isinstance(status, int) and 400 <= status < 600:
            return http_error(status, message or None, key, _retry_after(exc))
        # Anything else (unexpected library error): let the next model try.
        return ProviderError(f"Provider error: {type(exc).__name__}", retryable=True, status=None)

    async def complete(
        self,
        model: ModelSpec,
        request: ChatRequest,
        timeout: float,
    ) -> ChatResult:
        if timeout <= 0:
            raise timeout_error()
        lib = await load_litellm()
        kwargs = self._kwargs(model, request, timeout)
        key = kwargs.get("api_key")
        try:
            async with asyncio.timeout(timeout):
                response = await lib.acompletion(**kwargs)
            choices = [_choice(c) for c in response.choices]
            first = choices[0]
            usage = _usage(getattr(response, "usage", None))
        except Exception as exc:
            raise self._error(exc, key) from exc
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            out = sum(len(c.content) + tool_call_chars(c.tool_calls) for c in choices)
            usage = estimate_usage(request.messages, out)
        return ChatResult(
            content=first.content,
            finish_reason=first.finish_reason,
            usage=usage,
            tool_calls=first.tool_calls,
            more_choices=tuple(choices[1:]),
        )

    async def embed(
        self, model: ModelSpec, inputs: Any, params: Mapping[str, Any], timeout: float
    ) -> EmbeddingResult:
        if timeout <= 0:
            raise timeout_error()
        lib = await load_litellm()
        kwargs = self._kwargs(model, ChatRequest(messages=[], params=dict(params)), timeout)
        kwargs.pop("messages", None)
        kwargs["input"] = inputs
        key = kwargs.get("api_key")
        try:
            async with asyncio.timeout(timeout):
                response = await lib.aembedding(**kwargs)
            data = sorted(_dump_all(response.data), key=lambda d: d.get("index", 0))
            vectors = [[float(x) for x in d["embedding"]] for d in data]
            prompt = getattr(getattr(response, "usage", None), "prompt_tokens", None)
        except Exception as exc:
            raise self._error(exc, key) from exc
        if isinstance(prompt, int) and prompt > 0:
            usage = TokenUsage(prompt_tokens=prompt, completion_tokens=0)
        else:
            usage = embedding_usage_estimate(inputs)
        return EmbeddingResult(vectors=vectors, usage=usage)

    async def stream(
        self,
        model: ModelSpec,
        request: ChatRequest,
        timeout: float,
    ) -> AsyncGenerator[StreamChunk, None]:
        """Same contract as the fast path: the first chunk must come within
        `timeout`; afterwards LiteLLM's read timeout (also `timeout`) bounds
        the silence between chunks."""
        if timeout <= 0:
            raise timeout_error()
        lib = await load_litellm()
        kwargs = self._kwargs(model, request, timeout)
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
        key = kwargs.get("api_key")
        wrapper: Any = None
        finish_reason: str | None = None
        usage: TokenUsage | None = None
        out_chars = 0
        try:
            try:
                async with asyncio.timeout(timeout):
                    wrapper = await lib.acompletion(**kwargs)
                    iterator = wrapper.__aiter__()
                    first: Any = await iterator.__anext__()
            except StopAsyncIteration:
                first = None
            except Exception as exc:
                raise self._error(exc, key) from exc
            chunk = first
            while chunk is not None:
                try:
                    raw_usage = getattr(chunk, "usage", None)
                    if raw_usage is not None:
                        usage = _usage(raw_usage) or usage
                    choices = chunk.choices
                    if choices:
                        choice = choices[0]
                        delta = choice.delta
                        text = getattr(delta, "content", None) or ""
                        raw_calls = getattr(delta, "tool_calls", None)
                        tool_calls = [_dump(tc) for tc in raw_calls] if raw_calls else None
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
                except Exception as exc:
                    raise self._error(exc, key) from exc
                if choices and (text or tool_calls):
                    out_chars += len(text)
                    if tool_calls:
                        out_chars += tool_call_chars(tool_calls)
                    yield StreamChunk(content=text, tool_calls=tool_calls)
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    chunk = None
                except Exception as exc:
                    raise self._error(exc, key) from exc
            await _close_stream(wrapper)
            wrapper = None
            if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
                usage = estimate_usage(request.messages, out_chars)
            yield StreamChunk(finish_reason=finish_reason or "stop", usage=usage)
        finally:
            if wrapper is not None:
                await _close_stream(wrapper)

    async def aclose(self) -> None:
        """Close LiteLLM's cached HTTP clients, if LiteLLM was ever loaded."""
        lib = _litellm
        if lib is not None:
            closer = getattr(lib, "close_litellm_async_clients", None)
            if closer is not None:
                await closer()


async def _close_stream(wrapper: Any) -> None:
    """Close the HTTP response under LiteLLM's stream wrapper, which has no
    close of its own (the OpenAI SDK stream has `close()`, httpx-based
    handlers an async generator with `aclose()`)."""
    stream = getattr(wrapper, "completion_stream", None)
    for name in ("aclose", "close"):
        method = getattr(stream, name, None)
        if method is not None:
            try:
                result = method()
                if inspect.isawaitable(result):
                    await result
            except Exception:  # noqa: S110 - closing is best effort
                pass
            return


def _retry_after(exc: BaseException) -> float | None:
    """The Retry-After of the HTTP answer behind a LiteLLM exception, when it kept one."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    get = getattr(headers, "get", None)
    if get is None:
        return None
    try:
        value = get("retry-after")
    except Exception:
        return None
    return parse_retry_after(value) if isinstance(value, str | bytes) else None
