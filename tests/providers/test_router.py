"""Dispatch of models to backends."""

from __future__ import annotations

from typing import Any

import pytest

from service.providers.base import ChatRequest, ModelSpec
from service.providers.litellm_provider import LiteLLMProvider
from service.providers.openai_compat import OpenAICompatProvider
from service.providers.router import ProviderRouter
from service.providers.simulator import SimulatorProvider
from tests.support.upstream import FakeUpstream

REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}])


@pytest.fixture
async def router() -> Any:
    r = ProviderRouter()
    yield r
    await r.aclose()


@pytest.mark.parametrize(
    ("name", "config", "backend"),
    [
        ("simulator/fast", {}, SimulatorProvider),
        ("gpt-4o", {}, OpenAICompatProvider),
        ("openai/gpt-4o", {}, OpenAICompatProvider),
        ("my-model", {"api_base": "http://vllm:8000/v1"}, OpenAICompatProvider),
        ("meta-llama/Llama-3.1-8B", {"api_base": "http://vllm:8000/v1"}, OpenAICompatProvider),
        ("anthropic/claude-3-5-sonnet", {}, LiteLLMProvider),
        ("gemini/gemini-1.5-pro", {}, LiteLLMProvider),
        ("bedrock/anthropic.claude-v2", {}, LiteLLMProvider),
        ("azure/my-deployment", {"api_base": "https://x.openai.azure.com"}, LiteLLMProvider),
        ("ollama/llama3", {"api_base": "http://localhost:11434"}, LiteLLMProvider),
        ("somevendor/model", {}, LiteLLMProvider),
    ],
)
def test_route(name: str, config: dict[str, Any], backend: type) -> None:
    router = ProviderRouter()
    assert isinstance(router.route(ModelSpec(name, 0, config)), backend)


async def test_dispatches_calls(router: ProviderRouter, upstream: FakeUpstream) -> None:
    result = await router.complete(ModelSpec("simulator/x", 0, {"response": "sim"}), REQUEST, 5.0)
    assert result.content == "sim"
    upstream.set_behavior("gpt-fake", content="real", stream_chunks=["re", "al"])
    model = ModelSpec("openai/gpt-fake", 0, {"api_base": upstream.base_url})
    assert (await router.complete(model, REQUEST, 5.0)).content == "real"
    chunks = [c async for c in router.stream(model, REQUEST, 5.0)]
    assert "".join(c.content for c in chunks) == "real"
    assert chunks[-1].finish_reason == "stop"


async def test_aclose_closes_fast_path_connections(upstream: FakeUpstream) -> None:
    router = ProviderRouter()
    model = ModelSpec("gpt-fake", 0, {"api_base": upstream.base_url})
    await router.complete(model, REQUEST, 5.0)
    conns = [c for e in router.openai._endpoints.values() for c in e._idle]
    await router.aclose()
    assert conns
    assert all(c.transport is not None and c.transport.is_closing() for c in conns)


async def test_demo_mode_simulates_models_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from service.providers.base import ChatRequest, ModelSpec
    from service.providers.router import ProviderRouter

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    demo = ProviderRouter(simulate_without_keys=True)
    prod = ProviderRouter()
    try:
        gpt = ModelSpec("gpt-3.5-turbo", 0, {})
        assert demo.route(gpt) is demo.simulator
        assert prod.route(gpt) is prod.openai
        assert demo.route(ModelSpec("anthropic/claude-3", 0, {})) is demo.simulator
        # Configured endpoints and keys are always called for real.
        assert (
            demo.route(ModelSpec("gpt-4o", 0, {"api_base": "http://127.0.0.1:1/v1"})) is demo.openai
        )
        monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
        assert demo.route(gpt) is demo.openai
        r = await demo.complete(
            ModelSpec("mistral/x", 0, {}), ChatRequest([{"role": "user", "content": "hi"}]), 5
        )
        assert r.content
    finally:
        await demo.aclose()
        await prod.aclose()
