"""LiteLLM against the fake upstream, as `openai/<name>` with an api_base
(LiteLLM speaks OpenAI to it). Few tests: importing LiteLLM costs ~2 s."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.providers.base import ChatRequest, ModelSpec, ProviderError
from service.providers.litellm_provider import LiteLLMProvider
from tests.support.upstream import FakeUpstream, closed_base_url

REQUEST = ChatRequest(
    messages=[{"role": "user", "content": "hello"}], params={"temperature": 0.3, "seed": 5}
)


@pytest.fixture(scope="module")
async def litellm_provider() -> AsyncIterator[LiteLLMProvider]:
    provider = LiteLLMProvider()
    yield provider
    await provider.aclose()


def model(upstream: FakeUpstream, api_base: str | None = None) -> ModelSpec:
    return ModelSpec(
        "openai/gpt-fake",
        0,
        {"api_base": api_base or upstream.base_url, "api_key": "os.environ/FAKE_LITELLM_KEY"},
    )


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_LITELLM_KEY", "sk-litellm-test")


async def test_complete_and_stream(
    litellm_provider: LiteLLMProvider, upstream: FakeUpstream
) -> None:
    upstream.set_behavior(
        "gpt-fake", content="Hi from upstream", prompt_tokens=9, completion_tokens=3
    )
    result = await litellm_provider.complete(model(upstream), REQUEST, 10.0)
    assert result.content == "Hi from upstream"
    assert result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (9, 3)
    sent = upstream.requests[-1]
    assert sent.body["model"] == "gpt-fake"
    assert sent.body["temperature"] == 0.3
    assert sent.body["seed"] == 5
    assert sent.authorization == "Bearer sk-litellm-test"

    upstream.set_behavior("gpt-fake", stream_chunks=["Hel", "lo"], prompt_tokens=9)
    chunks = [c async for c in litellm_provider.stream(model(upstream), REQUEST, 10.0)]
    assert "".join(c.content for c in chunks) == "Hello"
    final = chunks[-1]
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert final.usage.prompt_tokens == 9
    assert upstream.requests[-1].body["stream"] is True


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (400, False)])
async def test_errors(
    litellm_provider: LiteLLMProvider, upstream: FakeUpstream, status: int, retryable: bool
) -> None:
    upstream.set_behavior("gpt-fake", status=status, error_message="fake failure")
    with pytest.raises(ProviderError) as info:
        await litellm_provider.complete(model(upstream), REQUEST, 10.0)
    assert info.value.retryable is retryable
    assert info.value.status == status
    assert "sk-litellm-test" not in info.value.message


async def test_connection_refused(
    litellm_provider: LiteLLMProvider, upstream: FakeUpstream
) -> None:
    with pytest.raises(ProviderError) as info:
        await litellm_provider.complete(model(upstream, closed_base_url()), REQUEST, 10.0)
    assert info.value.retryable
