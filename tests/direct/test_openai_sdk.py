"""The OpenAI-compatible API through real Envoy with the official `openai` Python SDK (seed 003,
Pattern B; DESIGN.md "Direct OpenAI-compatible API"): the SDK's own objects and exception
classes, model naming, streams with usage, tool calls, structured output, embeddings, the budget
and what balance, usage and the auditor say about it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from pydantic import BaseModel

from tests.reliability.harness import audit_cli
from tests.rest.real_service import RestClient, RestService, serve_real
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.envoy


@pytest.fixture(scope="module")
async def svc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RestService]:
    async with serve_real("sqlite", tmp_path_factory.mktemp("openai")) as s:
        yield s


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


@pytest.fixture
async def api(svc: RestService) -> AsyncIterator[RestClient]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        yield RestClient(http, svc.base_url, svc.master_key)


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def tenant(
    api: RestClient, groups: dict[str, list[tuple[str, dict[str, Any]]]], credits: int = 100
) -> tuple[str, str, dict[str, str]]:
    """An org, the groups (renamed uniquely), a team with them: (team_id, key, group names)."""
    org = uid("org")
    await api.ok("POST", "/api/organizations/create", json={"organization_id": org, "name": "O"})
    names = {}
    for name, models in groups.items():
        unique = uid(name)
        names[name] = unique
        body = {
            "group_name": unique,
            "models": [
                {"model_name": m, "priority": i, "config": c} for i, (m, c) in enumerate(models)
            ],
        }
        await api.ok("POST", "/api/model-groups/create", json=body)
    team = uid("team")
    created = await api.ok(
        "POST",
        "/api/teams/create",
        json={
            "organization_id": org,
            "team_id": team,
            "model_groups": list(names.values()),
            "credits_allocated": credits,
        },
    )
    return team, created["virtual_key"], names


def client(svc: RestService, key: str, v1: bool = True) -> openai.AsyncOpenAI:
    base = svc.base_url + ("/v1" if v1 else "")
    return openai.AsyncOpenAI(api_key=key, base_url=base, max_retries=0, timeout=20)


class Person(BaseModel):
    name: str
    age: int


async def test_chat_models_stream_and_usage(svc: RestService, api: RestClient) -> None:
    team, key, names = await tenant(
        api,
        {
            "chat": [("simulator/gpt-4o-mini", {}), ("simulator/gpt-4o", {})],
            "other": [("simulator/claude-3", {})],
        },
    )
    ai = client(svc, key)
    listed = await ai.models.list()
    ids = [m.id for m in listed.data]
    assert ids == [
        "simulator/gpt-4o-mini",
        "simulator/gpt-4o",
        "simulator/claude-3",
        names["chat"],
        names["other"],
    ]
    assert all(m.object == "model" and m.owned_by == "saas-llm-gateway" for m in listed.data)
    assert (await ai.models.retrieve("simulator/gpt-4o")).id == "simulator/gpt-4o"

    # A model as configured, bare, and a group name; with and without /v1.
    for model, v1 in (("simulator/gpt-4o", True), ("gpt-4o-mini", False), (names["chat"], True)):
        r = await client(svc, key, v1).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hello there"}], max_tokens=50
        )
        assert r.object == "chat.completion" and r.model == model
        assert r.id.startswith("chatcmpl-")
        assert r.choices[0].message.content == "Simulated response to: Hello there"
        assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason == "stop"
        assert r.usage is not None and r.usage.total_tokens == r.usage.prompt_tokens + 5

    stream = await ai.chat.completions.create(
        model="claude-3",
        messages=[{"role": "user", "content": "Tell me a story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk" and chunk.model == "claude-3"
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == "Simulated response to: Tell me a story"
    assert finish == "stop" and usage is not None and usage.completion_tokens == 7

    # Usage and balance count the four calls; the auditor agrees with the team row.
    month = (await api.ok("GET", f"/api/teams/{team}/usage?period=2026-12"))["period"]
    usage_doc = await api.ok("GET", f"/api/teams/{team}/usage?period={month}")
    direct = usage_doc["direct_calls"]
    assert (direct["total_calls"], direct["successful_calls"]) == (4, 4)
    assert direct["total_cost_usd"] > 0
    balance = await api.ok("GET", f"/api/credits/teams/{team}/balance")
    assert balance["budget_usd"] == 10.0
    assert balance["spend_usd"] == pytest.approx(direct["total_cost_usd"])
    assert balance["budget_remaining_usd"] == pytest.approx(10.0 - direct["total_cost_usd"])
    assert balance["credits_remaining"] == 100  # the job API's credits are untouched
    await _audit_clean(svc)


async def test_tools_structured_output_and_passthrough(
    svc: RestService, api: RestClient, upstream: FakeUpstream
) -> None:
    priced = {"api_base": upstream.base_url, "input_cost_per_token": 1e-6}
    priced["output_cost_per_token"] = 2e-6
    _, key, _ = await tenant(
        api, {"fake": [("openai/fake-4o", priced)], "sim": [("simulator/tooly", {})]}
    )
    ai = client(svc, key)
    # Tool calls: the simulator calls the required function.
    tools: list[Any] = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    r = await ai.chat.completions.create(
        model="tooly",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        tool_choice="required",
    )
    call = r.choices[0].message.tool_calls
    assert (
        call
        and call[0].function.name == "get_weather"
        and r.choices[0].finish_reason == "tool_calls"
    )
    # Structured output parsed by the SDK into the pydantic model.
    parsed = await ai.chat.completions.parse(
        model="tooly", messages=[{"role": "user", "content": "Who?"}], response_format=Person
    )
    person = parsed.choices[0].message.parsed
    assert isinstance(person, Person)

    # Everything else is passed through to the provider as sent, and n > 1 comes back.
    upstream.set_behavior("fake-4o", content="from upstream")
    await ai.chat.completions.create(
        model="fake-4o",
        messages=[{"role": "user", "content": "x"}],
        seed=7,
        stop=["\n\n"],
        temperature=0.3,
        n=2,
        response_format={"type": "json_object"},
        tools=tools,
        max_tokens=9,
        presence_penalty=0.5,
    )
    sent = upstream.requests[-1].body
    for field, value in {
        "seed": 7,
        "stop": ["\n\n"],
        "temperature": 0.3,
        "n": 2,
        "response_format": {"type": "json_object"},
        "max_tokens": 9,
        "presence_penalty": 0.5,
        "model": "fake-4o",
    }.items():
        assert sent[field] == value, (field, sent)
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    r2 = await ai.chat.completions.create(
        model="openai/fake-4o", messages=[{"role": "user", "content": "x"}], n=2
    )
    assert [c.index for c in r2.choices] == [0, 1]
    assert r2.choices[1].message.content == "from upstream"


async def test_embeddings(svc: RestService, api: RestClient, upstream: FakeUpstream) -> None:
    priced = {"api_base": upstream.base_url, "input_cost_per_token": 1e-7}
    priced["output_cost_per_token"] = 0
    _, key, _ = await tenant(
        api, {"emb": [("openai/text-embed", priced)], "sim": [("simulator/embedder", {})]}
    )
    ai = client(svc, key)
    # The SDK asks for base64 by default and decodes it.
    e = await ai.embeddings.create(model="text-embed", input=["hello", "worlds"])
    assert [d.embedding for d in e.data] == [[0.0, 5.0, 0.5], [1.0, 6.0, 0.5]]
    assert e.usage.prompt_tokens == 11 and e.model == "text-embed"
    f = await ai.embeddings.create(model="embedder", input="one", encoding_format="float")
    assert len(f.data) == 1 and len(f.data[0].embedding) == 16


async def test_error_classes(svc: RestService, api: RestClient) -> None:
    team, key, _ = await tenant(api, {"chat": [("simulator/gpt-x", {})]}, credits=1)
    msg = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError) as bad:
        await client(svc, "sk-not-a-key").chat.completions.create(model="gpt-x", messages=msg)
    assert bad.value.status_code == 401 and bad.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError) as master:
        await client(svc, svc.master_key).chat.completions.create(model="gpt-x", messages=msg)
    assert master.value.code == "team_key_required"
    with pytest.raises(openai.NotFoundError) as missing:
        await client(svc, key).chat.completions.create(model="gpt-nope", messages=msg)
    assert missing.value.code == "model_not_found"
    assert "gpt-nope" in missing.value.message
    with pytest.raises(openai.BadRequestError) as invalid:
        await client(svc, key).chat.completions.create(model="gpt-x", messages=msg, temperature=7)
    assert invalid.value.param == "temperature"
    # A budget of $0.10 (1 credit) cannot hold a call of 200,000 output tokens.
    with pytest.raises(openai.BadRequestError) as over:
        await client(svc, key).chat.completions.create(
            model="gpt-x", messages=msg, max_tokens=200_000
        )
    assert over.value.code == "budget_exceeded"
    assert over.value.type == "budget_exceeded"
    assert "Budget exceeded" in over.value.message and "$0.1" in over.value.message
    # Suspended: 403.
    await api.ok("POST", f"/api/teams/{team}/suspend", json={"reason": "test"})
    with pytest.raises(openai.PermissionDeniedError):
        await client(svc, key).chat.completions.create(model="gpt-x", messages=msg)
    await api.ok("POST", f"/api/teams/{team}/resume", json={})
    # Envoy's own refusal (body over 1 MiB) has OpenAI's error shape too.
    with pytest.raises(openai.APIStatusError) as big:
        await client(svc, key).chat.completions.create(
            model="gpt-x", messages=[{"role": "user", "content": "x" * 1_100_000}]
        )
    assert big.value.status_code == 413
    assert isinstance(big.value.body, dict) and big.value.body["type"] == "invalid_request_error"


async def test_budget_exhaustion_and_additions(svc: RestService, api: RestClient) -> None:
    """Calls stop when the budget is spent, and adding credits raises it."""
    config = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.001}
    team, key, _ = await tenant(api, {"chat": [("simulator/pricey", config)]}, credits=1)
    ai = client(svc, key)
    msg = [{"role": "user", "content": "hi"}]
    made = 0
    with pytest.raises(openai.BadRequestError) as over:
        for _ in range(50):
            await ai.chat.completions.create(model="pricey", messages=msg, max_tokens=5)
            made += 1
    assert over.value.code == "budget_exceeded" and 0 < made < 50
    balance = await api.ok("GET", f"/api/credits/teams/{team}/balance")
    assert balance["spend_usd"] <= balance["budget_usd"] == 0.1
    await api.ok("POST", f"/api/credits/teams/{team}/add", json={"credits_amount": 10})
    await ai.chat.completions.create(model="pricey", messages=msg, max_tokens=5)
    assert (await api.ok("GET", f"/api/credits/teams/{team}/balance"))["budget_usd"] == 1.1
    await _audit_clean(svc)


async def _audit_clean(svc: RestService) -> None:
    assert svc.app_client is not None
    report = await audit_cli(svc.app_client.url, "--no-check-stale")
    assert report.returncode == 0 and not report.violations, report.stdout + report.stderr


async def test_rate_limit_raises_rate_limit_error(svc: RestService, api: RestClient) -> None:
    """Issue 16: over the team's rpm_limit the SDK raises RateLimitError (429, Retry-After);
    nothing is reserved from the budget for the refused call."""
    team, key, names = await tenant(api, {"chat": [("simulator/gpt-4o-mini", {})]})
    await api.ok("PATCH", f"/api/teams/{team}/limits", json={"rpm_limit": 2})
    ai = client(svc, key)
    msgs: Any = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        await ai.chat.completions.create(model=names["chat"], messages=msgs, max_tokens=5)
    with pytest.raises(openai.RateLimitError) as err:
        await ai.chat.completions.create(model=names["chat"], messages=msgs, max_tokens=5)
    assert err.value.status_code == 429
    assert 1 <= int(err.value.response.headers["retry-after"]) <= 60
    body: Any = err.value.body
    assert body["code"] == "rate_limit_exceeded" and body["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError):
        await ai.embeddings.create(model="gpt-4o-mini", input="x")
    with pytest.raises(openai.RateLimitError):
        await ai.chat.completions.create(model=names["chat"], messages=msgs, stream=True)
    report = await audit_cli(svc.app_client.url, "--no-check-stale")
    assert report.returncode == 0, report.stdout + report.stderr
