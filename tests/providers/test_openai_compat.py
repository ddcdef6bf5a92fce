"""The OpenAI-compatible fast path against a fake upstream over real HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from service.providers.base import ChatRequest, ModelSpec, ProviderError, StreamChunk
from service.providers.openai_compat import OpenAICompatProvider
from tests.support.upstream import FakeUpstream, closed_base_url

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the tests please"},
]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}


def spec(upstream: FakeUpstream, name: str = "openai/gpt-fake", **config: Any) -> ModelSpec:
    return ModelSpec(name, 0, {"api_base": upstream.base_url, **config})


def request(**params: Any) -> ChatRequest:
    return ChatRequest(messages=list(MESSAGES), params=params)


async def collect(stream: Any, into: list[StreamChunk] | None = None) -> list[StreamChunk]:
    """All chunks of a stream; `into` keeps those seen before an error."""
    chunks = [] if into is None else into
    async for chunk in stream:
        chunks.append(chunk)
    return chunks


# -- complete ------------------------------------------------------------------


async def test_complete_ok(upstream: FakeUpstream, provider: OpenAICompatProvider) -> None:
    upstream.set_behavior("gpt-fake", content="Hello tests!", prompt_tokens=21, completion_tokens=3)
    result = await provider.complete(spec(upstream), request(), 5.0)
    assert result.content == "Hello tests!"
    assert result.finish_reason == "stop"
    assert result.tool_calls == []
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (21, 3)
    assert not result.usage.estimated
    sent = upstream.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["model"] == "gpt-fake"  # `openai/` stripped
    assert sent.body["messages"] == MESSAGES
    assert "stream" not in sent.body
    assert sent.headers["Content-Type"] == "application/json"


async def test_unprefixed_name_is_sent_as_is(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    await provider.complete(spec(upstream, "meta-llama/Llama-3.1-8B"), request(), 5.0)
    assert upstream.requests[-1].body["model"] == "meta-llama/Llama-3.1-8B"


async def test_usage_estimated_when_absent(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", content="x" * 40, usage=False)
    result = await provider.complete(spec(upstream), request(), 5.0)
    assert result.usage.estimated
    prompt_chars = sum(len(m["content"]) for m in MESSAGES)
    assert result.usage.prompt_tokens == (prompt_chars + 3) // 4
    assert result.usage.completion_tokens == 10


async def test_params_pass_through(upstream: FakeUpstream, provider: OpenAICompatProvider) -> None:
    params = {
        "temperature": 0.2,
        "max_tokens": 64,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "seed": 7,
        "user": "team-42",
        "tools": [TOOL],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
    }
    await provider.complete(spec(upstream), request(**params), 5.0)
    body = upstream.requests[-1].body
    for key, value in params.items():
        assert body[key] == value, key


async def test_tool_calls_returned(upstream: FakeUpstream, provider: OpenAICompatProvider) -> None:
    upstream.set_behavior("gpt-fake", tool_calls=[TOOL_CALL])
    result = await provider.complete(spec(upstream), request(tools=[TOOL]), 5.0)
    assert result.tool_calls == [TOOL_CALL]
    assert result.finish_reason == "tool_calls"
    assert result.content == ""


async def test_keep_alive_connection_reused(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", stream_chunks=["a", "b"])
    await provider.complete(spec(upstream), request(), 5.0)
    await collect(provider.stream(spec(upstream), request(), 5.0))
    await provider.complete(spec(upstream), request(), 5.0)
    peers = {r.peer for r in upstream.requests}
    assert len(peers) == 1, "each call opened a new connection"


async def test_aclose_closes_pooled_connections(upstream: FakeUpstream) -> None:
    provider = OpenAICompatProvider()
    await provider.complete(spec(upstream), request(), 5.0)
    pooled = next(iter(provider._endpoints.values()))._idle
    assert len(pooled) == 1
    conn = pooled[0]
    await provider.aclose()
    assert conn.transport is not None and conn.transport.is_closing()
    # Still usable afterwards, on a new connection.
    await provider.complete(spec(upstream), request(), 5.0)
    assert len({r.peer for r in upstream.requests}) == 2


# -- errors --------------------------------------------------------------------


async def test_connection_refused_is_retryable(provider: OpenAICompatProvider) -> None:
    model = ModelSpec("gpt-fake", 0, {"api_base": closed_base_url()})
    with pytest.raises(ProviderError) as info:
        await provider.complete(model, request(), 5.0)
    assert info.value.retryable
    assert info.value.status is None


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503])
async def test_retryable_statuses(
    upstream: FakeUpstream, provider: OpenAICompatProvider, status: int
) -> None:
    upstream.set_behavior("gpt-fake", status=status, error_message="upstream says no")
    with pytest.raises(ProviderError) as info:
        await provider.complete(spec(upstream), request(), 5.0)
    assert info.value.retryable
    assert info.value.status == status
    assert "upstream says no" in info.value.message


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors_fall_back_without_provider_text(
    upstream: FakeUpstream, provider: OpenAICompatProvider, status: int
) -> None:
    # The operator's key is wrong, not the tenant's request: the next model may
    # work, and the provider's text (which may quote a masked key) is not
    # passed on.
    upstream.set_behavior("gpt-fake", status=status, error_message="Incorrect API key sk-abc***")
    with pytest.raises(ProviderError) as info:
        await provider.complete(spec(upstream), request(), 5.0)
    assert info.value.retryable
    assert info.value.status == status
    assert "sk-abc" not in info.value.message
    assert "authentication failed" in info.value.message


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_client_errors_not_retryable(
    upstream: FakeUpstream, provider: OpenAICompatProvider, status: int
) -> None:
    upstream.set_behavior("gpt-fake", status=status, error_message="bad request: x")
    with pytest.raises(ProviderError) as info:
        await provider.complete(spec(upstream), request(), 5.0)
    assert not info.value.retryable
    assert info.value.status == status
    assert "bad request: x" in info.value.message


async def test_429_without_message(upstream: FakeUpstream, provider: OpenAICompatProvider) -> None:
    upstream.set_behavior("gpt-fake", status=429)
    with pytest.raises(ProviderError) as info:
        await provider.complete(spec(upstream), request(), 5.0)
    assert info.value.message == "Rate limit exceeded"


async def test_error_message_truncated_and_key_scrubbed(
    upstream: FakeUpstream, provider: OpenAICompatProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-secret-123456")
    upstream.set_behavior(
        "gpt-fake", status=401, error_message="Incorrect key sk-secret-123456. " + "y" * 1000
    )
    model = spec(upstream, api_key="os.environ/FAKE_UPSTREAM_KEY")
    with pytest.raises(ProviderError) as info:
        await provider.complete(model, request(), 5.0)
    assert "sk-secret-123456" not in info.value.message
    assert len(info.value.message) < 400


async def test_invalid_response_is_retryable(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", raw_body=b"not json")
    with pytest.raises(ProviderError) as info:
        await provider.complete(spec(upstream), request(), 5.0)
    assert info.value.retryable


async def test_timeout_is_retryable_and_fast(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", delay_s=3.0)
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await provider.complete(spec(upstream), request(), 0.2)
    assert time.monotonic() - started < 1.0
    assert info.value.retryable
    assert info.value.message == "Request timed out"
    await upstream.wait_disconnect(1.0)


# -- api keys ------------------------------------------------------------------


async def test_env_api_key_sent_as_bearer(
    upstream: FakeUpstream, provider: OpenAICompatProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-from-env")
    await provider.complete(spec(upstream, api_key="os.environ/FAKE_UPSTREAM_KEY"), request(), 5.0)
    assert upstream.requests[-1].authorization == "Bearer sk-from-env"
    # Read at call time: a rotated key is used by the next call.
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-rotated")
    await provider.complete(spec(upstream, api_key="os.environ/FAKE_UPSTREAM_KEY"), request(), 5.0)
    assert upstream.requests[-1].authorization == "Bearer sk-rotated"


async def test_missing_env_var(
    upstream: FakeUpstream, provider: OpenAICompatProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAKE_MISSING_KEY", raising=False)
    model = spec(upstream, api_key="os.environ/FAKE_MISSING_KEY")
    with pytest.raises(ProviderError) as info:
        await provider.complete(model, request(), 5.0)
    assert not info.value.retryable
    assert info.value.message == "API key env var FAKE_MISSING_KEY is not set"
    with pytest.raises(ProviderError):
        await anext(provider.stream(model, request(), 5.0))
    assert upstream.requests == []


async def test_no_key_for_custom_api_base(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    await provider.complete(spec(upstream), request(), 5.0)
    assert upstream.requests[-1].authorization is None


async def test_openai_default_needs_openai_key(
    provider: OpenAICompatProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ProviderError) as info:
        await provider.complete(ModelSpec("gpt-4o", 0), request(), 5.0)
    assert info.value.message == "API key env var OPENAI_API_KEY is not set"


# -- streaming -----------------------------------------------------------------


async def test_stream_yields_chunks_as_they_arrive(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", stream_chunks=["Hel", "lo", " wor", "ld"], chunk_delay_s=0.3)
    received: list[tuple[float, StreamChunk]] = []
    async for chunk in provider.stream(spec(upstream), request(), 5.0):
        received.append((time.monotonic(), chunk))
    texts = [c.content for _, c in received if c.content]
    assert texts == ["Hel", "lo", " wor", "ld"]
    first_at = received[0][0]
    last_sent_at = upstream.chunk_sent_at[-1]
    assert first_at < last_sent_at - 0.6, "the first chunk waited for the others"
    final = received[-1][1]
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (11, 4)
    assert not final.usage.estimated
    assert all(c.usage is None and c.finish_reason is None for _, c in received[:-1])
    body = upstream.requests[-1].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_stream_usage_estimated_when_absent(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", stream_chunks=["abcd", "efgh"], usage=False)
    chunks = await collect(provider.stream(spec(upstream), request(temperature=0.5), 5.0))
    final = chunks[-1]
    assert final.usage is not None
    assert final.usage.estimated
    assert final.usage.completion_tokens == 2
    assert upstream.requests[-1].body["temperature"] == 0.5


async def test_stream_tool_calls(upstream: FakeUpstream, provider: OpenAICompatProvider) -> None:
    upstream.set_behavior("gpt-fake", stream_chunks=[], tool_calls=[TOOL_CALL])
    chunks = await collect(provider.stream(spec(upstream), request(tools=[TOOL]), 5.0))
    deltas = [tc for c in chunks if c.tool_calls for tc in c.tool_calls]
    assert deltas[0]["id"] == "call_1"
    assert deltas[0]["function"]["name"] == "get_weather"
    arguments = "".join(d["function"].get("arguments", "") for d in deltas)
    assert arguments == '{"city": "Paris"}'
    assert chunks[-1].finish_reason == "tool_calls"


async def test_stream_cancel_closes_upstream(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", stream_chunks=["a"] * 20, chunk_delay_s=0.3)
    first = asyncio.Event()

    async def consume() -> None:
        async for _chunk in provider.stream(spec(upstream), request(), 10.0):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    started = time.monotonic()
    await upstream.wait_disconnect(1.0)
    assert time.monotonic() - started < 1.0
    assert len(upstream.chunk_sent_at) < 20


async def test_stream_aclose_closes_upstream(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", stream_chunks=["a"] * 20, chunk_delay_s=0.3)
    stream = provider.stream(spec(upstream), request(), 10.0)
    assert (await anext(stream)).content == "a"
    await stream.aclose()
    await upstream.wait_disconnect(1.0)


async def test_stream_http_error(upstream: FakeUpstream, provider: OpenAICompatProvider) -> None:
    upstream.set_behavior("gpt-fake", status=429)
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(spec(upstream), request(), 5.0))
    assert info.value.retryable
    assert info.value.status == 429


async def test_stream_connection_refused(provider: OpenAICompatProvider) -> None:
    model = ModelSpec("gpt-fake", 0, {"api_base": closed_base_url()})
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(model, request(), 5.0))
    assert info.value.retryable


async def test_stream_time_to_first_byte_timeout(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", delay_s=3.0)
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(spec(upstream), request(), 0.2))
    assert time.monotonic() - started < 1.0
    assert info.value.retryable
    assert info.value.message == "Request timed out"


async def test_stream_silence_between_chunks_times_out(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", stream_chunks=["a", "b"], chunk_delay_s=2.0)
    chunks: list[StreamChunk] = []
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(spec(upstream), request(), 0.3), chunks)
    assert time.monotonic() - started < 1.5
    assert [c.content for c in chunks] == ["a"]
    assert info.value.message == "Request timed out"


async def test_stream_dropped_midway(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", stream_chunks=["a", "b", "c"], drop_after_chunks=2)
    chunks: list[StreamChunk] = []
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(spec(upstream), request(), 5.0), chunks)
    assert [c.content for c in chunks] == ["a", "b"]
    assert info.value.retryable


async def test_stream_error_event(upstream: FakeUpstream, provider: OpenAICompatProvider) -> None:
    upstream.set_behavior(
        "gpt-fake", stream_chunks=["a"], stream_error={"message": "overloaded", "code": 503}
    )
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(spec(upstream), request(), 5.0))
    assert info.value.retryable
    assert "overloaded" in info.value.message


async def test_stream_without_done_but_finished(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", stream_chunks=["a"], send_done=False)
    chunks = await collect(provider.stream(spec(upstream), request(), 5.0))
    assert chunks[-1].finish_reason == "stop"


async def test_stream_invalid_payload(
    upstream: FakeUpstream, provider: OpenAICompatProvider
) -> None:
    upstream.set_behavior("gpt-fake", raw_body=b"data: {not json\n\n")
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(spec(upstream), request(), 5.0))
    assert info.value.message == "Provider sent an invalid response"
