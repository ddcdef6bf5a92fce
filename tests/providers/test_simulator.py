"""The built-in simulator: deterministic answers, failures, timing, tools."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from service.providers.base import ChatRequest, ModelSpec, ProviderError, StreamChunk
from service.providers.simulator import SimulatorProvider

USER = [{"role": "user", "content": "What is the capital of France?"}]
TOOLS = [
    {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "unit": {"enum": ["c", "f"]},
                },
                "required": ["city", "unit"],
            },
        },
    },
]


def sim(name: str = "simulator/test", **config: Any) -> ModelSpec:
    return ModelSpec(name, 0, config)


def req(messages: list[dict[str, Any]] | None = None, **params: Any) -> ChatRequest:
    return ChatRequest(messages=messages or list(USER), params=params)


async def collect(stream: Any) -> list[StreamChunk]:
    return [chunk async for chunk in stream]


async def test_default_answer_is_deterministic() -> None:
    provider = SimulatorProvider()
    first = await provider.complete(sim(), req(), 5.0)
    second = await SimulatorProvider().complete(sim(), req(), 5.0)
    assert first == second
    assert first.content == "Simulated response to: What is the capital of France?"
    assert first.finish_reason == "stop"
    assert first.usage.prompt_tokens == 6
    assert first.usage.completion_tokens == len(first.content.split())
    assert not first.usage.estimated


async def test_echo_is_truncated() -> None:
    result = await SimulatorProvider().complete(
        sim(), req([{"role": "user", "content": "x" * 500}]), 5.0
    )
    assert result.content == "Simulated response to: " + "x" * 200


async def test_fixed_response_and_completion_tokens() -> None:
    provider = SimulatorProvider()
    fixed = await provider.complete(sim(response="one two three"), req(), 5.0)
    assert fixed.content == "one two three"
    longer = await provider.complete(sim(response="one two", completion_tokens=5), req(), 5.0)
    assert longer.content == "one two one two one"
    assert longer.usage.completion_tokens == 5
    shorter = await provider.complete(sim(response="a b c d", completion_tokens=2), req(), 5.0)
    assert shorter.content == "a b"


async def test_max_tokens_cuts_with_length() -> None:
    result = await SimulatorProvider().complete(sim(response="a b c d e"), req(max_tokens=2), 5.0)
    assert result.content == "a b"
    assert result.finish_reason == "length"
    assert result.usage.completion_tokens == 2


@pytest.mark.parametrize(
    ("fail_with", "retryable", "status"),
    [(500, True, 500), (429, True, 429), ("503", True, 503), (400, False, 400)],
)
async def test_fail_with_status(fail_with: Any, retryable: bool, status: int) -> None:
    with pytest.raises(ProviderError) as info:
        await SimulatorProvider().complete(sim(fail_with=fail_with, failure_rate=1), req(), 5.0)
    assert info.value.retryable is retryable
    assert info.value.status == status


async def test_fail_with_timeout_and_connection() -> None:
    provider = SimulatorProvider()
    with pytest.raises(ProviderError) as info:
        await provider.complete(sim(fail_with="timeout"), req(), 5.0)
    assert info.value.retryable
    assert info.value.message == "Request timed out"
    with pytest.raises(ProviderError) as info:
        await collect(provider.stream(sim(fail_with="connection"), req(), 5.0))
    assert info.value.retryable


async def test_failure_rate_is_deterministic() -> None:
    model = sim(failure_rate=0.5)

    async def pattern() -> list[int]:
        """HTTP-like outcome of 30 calls on a fresh provider."""
        provider = SimulatorProvider()
        outcomes = []
        for _ in range(30):
            try:
                await provider.complete(model, req(), 5.0)
                outcomes.append(200)
            except ProviderError as exc:
                outcomes.append(exc.status or 0)
        return outcomes

    first = await pattern()
    assert first == await pattern()
    assert set(first) == {200, 500}
    assert 5 < first.count(500) < 25
    never = sim(failure_rate=0.0, fail_with=500)
    assert (await SimulatorProvider().complete(never, req(), 5.0)).content


async def test_latency_beyond_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        await SimulatorProvider().complete(sim(latency_ms=5000), req(), 0.1)
    assert 0.09 < time.monotonic() - started < 1.0
    assert info.value.retryable
    assert info.value.message == "Request timed out"
    with pytest.raises(ProviderError):
        await collect(SimulatorProvider().stream(sim(latency_ms=5000), req(), 0.1))


async def test_complete_takes_generation_time() -> None:
    started = time.monotonic()
    await SimulatorProvider().complete(
        sim(response="a b c d e", latency_ms=50, tokens_per_second=50), req(), 5.0
    )
    assert 0.14 < time.monotonic() - started < 0.6


async def test_stream_timing_and_content() -> None:
    model = sim(response="a b c d e f", latency_ms=100, tokens_per_second=20)
    started = time.monotonic()
    times: list[float] = []
    chunks: list[StreamChunk] = []
    async for chunk in SimulatorProvider().stream(model, req(), 5.0):
        times.append(time.monotonic() - started)
        chunks.append(chunk)
    texts = [c.content for c in chunks[:-1]]
    assert "".join(texts) == "a b c d e f"
    assert len(texts) == 6
    assert 0.09 < times[0] < 0.5, "latency before the first token"
    # 6 tokens at 20/s: the last one 5 * 50 ms after the first.
    assert 0.2 < times[5] - times[0] < 0.8
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert final.usage.completion_tokens == 6


async def test_stream_matches_complete() -> None:
    provider = SimulatorProvider()
    result = await provider.complete(sim(), req(), 5.0)
    chunks = await collect(provider.stream(sim(), req(), 5.0))
    assert "".join(c.content for c in chunks) == result.content
    assert chunks[-1].usage == result.usage


async def test_stream_aclose_midway() -> None:
    stream = SimulatorProvider().stream(sim(response="a b c", tokens_per_second=5), req(), 5.0)
    assert (await anext(stream)).content == "a"
    await asyncio.wait_for(stream.aclose(), 0.5)


async def test_tool_choice_required() -> None:
    result = await SimulatorProvider().complete(
        sim(), req(tools=TOOLS, tool_choice="required"), 5.0
    )
    assert result.finish_reason == "tool_calls"
    assert len(result.tool_calls) == 1
    call = result.tool_calls[0]
    assert call["type"] == "function"
    assert call["function"] == {"name": "noop", "arguments": "{}"}
    assert call["id"].startswith("call_sim_")
    again = await SimulatorProvider().complete(sim(), req(tools=TOOLS, tool_choice="required"), 5.0)
    assert again.tool_calls == result.tool_calls


async def test_tool_choice_named_builds_arguments() -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    result = await SimulatorProvider().complete(sim(), req(tools=TOOLS, tool_choice=choice), 5.0)
    function = result.tool_calls[0]["function"]
    assert function["name"] == "get_weather"
    assert orjson.loads(function["arguments"]) == {"city": "simulated", "unit": "c"}


async def test_tool_choice_auto_answers_text() -> None:
    result = await SimulatorProvider().complete(sim(), req(tools=TOOLS, tool_choice="auto"), 5.0)
    assert result.tool_calls == []
    assert result.finish_reason == "stop"


async def test_stream_tool_call() -> None:
    chunks = await collect(
        SimulatorProvider().stream(sim(), req(tools=TOOLS, tool_choice="required"), 5.0)
    )
    assert chunks[0].tool_calls is not None
    assert chunks[0].tool_calls[0]["index"] == 0
    assert chunks[0].tool_calls[0]["function"]["name"] == "noop"
    assert chunks[-1].finish_reason == "tool_calls"


async def test_response_format_json() -> None:
    provider = SimulatorProvider()
    obj = await provider.complete(sim(), req(response_format={"type": "json_object"}), 5.0)
    assert orjson.loads(obj.content) == {}
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array"},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
        "required": ["name", "age", "address"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    result = await provider.complete(sim(), req(response_format=fmt), 5.0)
    assert orjson.loads(result.content) == {
        "name": "simulated",
        "age": 0,
        "address": {"city": "simulated"},
    }
    streamed = await collect(provider.stream(sim(), req(response_format=fmt), 5.0))
    assert "".join(c.content for c in streamed) == result.content
