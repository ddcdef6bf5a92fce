"""Issue 16: provider cooldowns (circuit breakers) and the response cache, through the real
service (grpc.aio, the storage stack, the provider fast path) against a fake OpenAI-compatible
upstream over real HTTP, whose request log tells which calls reached a provider; shared state on
the real Redis at 127.0.0.1:6379 (keys under a prefix of each test's own)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from saas_llm.v1 import common_pb2
from saas_llm.v1 import health_service_pb2 as health_pb
from saas_llm.v1 import job_service_pb2 as job_pb
from saas_llm.v1 import model_group_service_pb2 as mg_pb
from saas_llm.v1 import openai_service_pb2 as oa_pb
from saas_llm.v1 import openai_service_pb2_grpc as oa_grpc
from service.audit import audit
from service.domain.breaker import breaker_key
from service.domain.response_cache import LocalCacheStore
from service.providers.base import ModelSpec
from service.storage.schema import llm_calls
from tests.api.test_tenancy import error_info
from tests.conftest import Client, admin, bearer, fresh_database, start_client, stop_client
from tests.flows import make_team, struct, uid, user_msg
from tests.support.upstream import FakeUpstream

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _redis_up() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=1):
            return True
    except OSError:
        return False


def needs_redis() -> None:
    if not _redis_up():
        if os.environ.get("CI") == "true":
            pytest.fail("Redis at 127.0.0.1:6379 is unreachable (required in CI)")
        pytest.skip("Redis not reachable")


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards (never FLUSHALL)."""
    needs_redis()
    import redis.asyncio as aioredis

    prefix = f"test16b:{uuid.uuid4().hex[:12]}:"
    yield prefix
    r = aioredis.from_url(f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
    try:
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


def requests_to(upstream: FakeUpstream, model: str) -> int:
    return sum(1 for q in upstream.requests if q.body.get("model") == model)


async def create_group(
    c: Client, models: list[tuple[str, dict[str, Any]]], *, cache_ttl: int = 0
) -> str:
    name = uid("grp")
    await c.groups.CreateModelGroup(
        mg_pb.CreateModelGroupRequest(
            group_name=name,
            models=[
                mg_pb.ModelGroupModel(model_name=m, priority=i, config=struct(cfg))
                for i, (m, cfg) in enumerate(models)
            ],
            cache_ttl_seconds=cache_ttl,
        ),
        metadata=admin(),
    )
    return name


async def new_job(c: Client, team_id: str, key: str) -> str:
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    return job.job_id


async def call(
    c: Client, key: str, job_id: str, text: str = "hello", **params: Any
) -> job_pb.LlmCallResponse:
    return await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg(text)], **params),
        metadata=bearer(key),
    )


async def assert_audit_clean(*clients: Client) -> None:
    for c in clients:
        report = await audit(c.app.db)
        assert report.ok, report.violations


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.05)


async def breakers_of(c: Client) -> list[health_pb.ModelBreaker]:
    return list((await c.health.Check(health_pb.CheckRequest())).breakers)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def breaker_metric(model: str, state: str) -> float | None:
    return sample("gateway_llm_breaker_state", model=model, gateway_llm_breaker_state=state)


# Circuit breakers ---------------------------------------------------------------------------


@pytest.fixture
async def sqlite_url(tmp_path: Any) -> str:
    return await fresh_database("sqlite", tmp_path)


async def test_failing_model_is_skipped_after_the_threshold_then_tried_again(
    sqlite_url: str, upstream: FakeUpstream
) -> None:
    c = await start_client(sqlite_url, breaker_failures=3, breaker_cooldown_seconds=1.0)
    try:
        base = upstream.base_url
        upstream.set_behavior("bad", status=500, error_message="boom")
        upstream.set_behavior("good", content="from good")
        bad = ModelSpec("openai/bad", 0, {"api_base": base})
        group = await create_group(
            c, [("openai/bad", {"api_base": base}), ("openai/good", {"api_base": base})]
        )
        team_id, key = await make_team(c, credits=10, groups=[group])
        job = await new_job(c, team_id, key)

        for _ in range(3):
            assert (await call(c, key, job)).response.content == "from good"
        assert requests_to(upstream, "bad") == 3
        (state,) = await breakers_of(c)
        assert (state.model, state.state, state.consecutive_failures) == (
            breaker_key(bad),
            "open",
            3,
        )
        assert 0.5 < state.retry_in_seconds <= 1.0
        assert breaker_metric(breaker_key(bad), "open") == 1.0
        assert breaker_metric(breaker_key(bad), "closed") == 0.0
        # Open: the next calls go straight to the fallback, the failing model gets no request.
        for _ in range(4):
            assert (await call(c, key, job)).response.content == "from good"
        assert requests_to(upstream, "bad") == 3
        assert requests_to(upstream, "good") == 7

        # After the cooldown one trial goes through; it fails, so the breaker opens again.
        await asyncio.sleep(1.1)
        await call(c, key, job)
        await call(c, key, job)
        assert requests_to(upstream, "bad") == 4
        assert [b.state for b in await breakers_of(c)] == ["open"]

        # Next trial succeeds: closed, the model is the first choice again.
        upstream.set_behavior("bad", content="from bad again")
        await asyncio.sleep(1.1)
        assert (await call(c, key, job)).response.content == "from bad again"
        assert (await call(c, key, job)).response.content == "from bad again"
        assert requests_to(upstream, "bad") == 6
        assert await breakers_of(c) == []
        assert breaker_metric(breaker_key(bad), "closed") == 1.0

        got = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job), metadata=bearer(key))
        assert got.costs.total_calls == 11 and got.costs.failed_calls == 0
        done = await c.jobs.CompleteJob(
            job_pb.CompleteJobRequest(job_id=job, status="completed"), metadata=bearer(key)
        )
        assert done.costs.credit_applied
        await assert_audit_clean(c)
    finally:
        await stop_client(c)


async def test_retry_after_opens_the_breaker_for_as_long(
    sqlite_url: str, upstream: FakeUpstream
) -> None:
    c = await start_client(sqlite_url, breaker_failures=5, breaker_cooldown_seconds=0.2)
    try:
        base = upstream.base_url
        upstream.set_behavior("limited", status=429, headers={"Retry-After": "2"})
        upstream.set_behavior("spare", content="spare")
        group = await create_group(
            c, [("openai/limited", {"api_base": base}), ("openai/spare", {"api_base": base})]
        )
        team_id, key = await make_team(c, credits=10, groups=[group])
        job = await new_job(c, team_id, key)
        await call(c, key, job)
        assert requests_to(upstream, "limited") == 1
        # One 429 with Retry-After (below the threshold of 5) opens it for 2 s, not 0.2 s.
        (state,) = await breakers_of(c)
        assert state.state == "open" and 1.5 < state.retry_in_seconds <= 2.0
        await asyncio.sleep(0.5)
        await call(c, key, job)
        assert requests_to(upstream, "limited") == 1
        upstream.set_behavior("limited", content="back")
        await asyncio.sleep(1.6)
        assert (await call(c, key, job)).response.content == "back"
        assert requests_to(upstream, "limited") == 2
        await assert_audit_clean(c)
    finally:
        await stop_client(c)


async def test_a_group_whose_models_are_all_open_fails_fast(
    sqlite_url: str, upstream: FakeUpstream
) -> None:
    c = await start_client(sqlite_url, breaker_failures=2, breaker_cooldown_seconds=30)
    try:
        upstream.set_behavior("down", status=503)
        group = await create_group(c, [("openai/down", {"api_base": upstream.base_url})])
        team_id, key = await make_team(c, credits=10, groups=[group])
        job = await new_job(c, team_id, key)
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call(c, key, job)
            assert failed.value.code() == grpc.StatusCode.INTERNAL
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(c, key, job)
        assert time.perf_counter() - started < 0.5
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info(refused.value)
        assert (
            info.reason == "UNAVAILABLE" and 25 <= int(info.metadata["retry_after_seconds"]) <= 30
        )
        assert "cooling down" in refused.value.details()
        assert requests_to(upstream, "down") == 2
        # Nothing reached a provider: no call is recorded for the refusal.
        got = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job), metadata=bearer(key))
        assert got.costs.total_calls == 2
        await c.jobs.CompleteJob(
            job_pb.CompleteJobRequest(job_id=job, status="failed"), metadata=bearer(key)
        )
        await assert_audit_clean(c)
    finally:
        await stop_client(c)


async def test_client_errors_do_not_open_the_breaker(
    sqlite_url: str, upstream: FakeUpstream
) -> None:
    c = await start_client(sqlite_url, breaker_failures=2)
    try:
        upstream.set_behavior("picky", status=400, error_message="bad request")
        group = await create_group(c, [("openai/picky", {"api_base": upstream.base_url})])
        team_id, key = await make_team(c, credits=10, groups=[group])
        job = await new_job(c, team_id, key)
        for _ in range(4):
            with pytest.raises(grpc.aio.AioRpcError):
                await call(c, key, job)
        assert requests_to(upstream, "picky") == 4 and await breakers_of(c) == []
    finally:
        await stop_client(c)


async def _pg_or_skip(tmp_path: Any) -> str:
    return await fresh_database("postgres", tmp_path)


@pytest.mark.postgres
async def test_breaker_state_is_shared_by_two_replicas_through_redis(
    tmp_path: Any, upstream: FakeUpstream, redis_prefix: str
) -> None:
    url = await _pg_or_skip(tmp_path)
    shared = {
        "redis_url": f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
        "redis_key_prefix": redis_prefix,
        "breaker_failures": 2,
        "breaker_cooldown_seconds": 1.5,
        "breaker_sync_seconds": 0.1,
    }
    a = await start_client(url, **shared)
    b = await start_client(url, **shared)
    try:
        base = upstream.base_url
        upstream.set_behavior("flaky", status=502)
        upstream.set_behavior("steady", content="steady")
        group = await create_group(
            a, [("openai/flaky", {"api_base": base}), ("openai/steady", {"api_base": base})]
        )
        team_id, key = await make_team(a, credits=10, groups=[group])
        job = await new_job(a, team_id, key)
        # Replica A sees the two failures and opens the breaker.
        await call(a, key, job)
        await call(a, key, job)
        assert requests_to(upstream, "flaky") == 2

        # Replica B, which never saw the model fail, learns it from Redis and skips it.
        async def b_sees_open() -> bool:
            return [s.state for s in await breakers_of(b)] == ["open"]

        await eventually(b_sees_open)
        for _ in range(3):
            assert (await call(b, key, job)).response.content == "steady"
        assert requests_to(upstream, "flaky") == 2

        # After the cooldown exactly one trial runs, whichever replica gets it: the calls made
        # while it is in flight still skip the model.
        upstream.set_behavior("flaky", content="flaky is back", delay_s=0.5)
        await asyncio.sleep(1.6)
        answers = await asyncio.gather(*(call(r, key, job) for r in (a, b, a, b)))
        assert requests_to(upstream, "flaky") == 3
        assert sum(x.response.content == "flaky is back" for x in answers) == 1

        # The trial closed it for both.
        async def closed_everywhere() -> bool:
            return await breakers_of(a) == [] and await breakers_of(b) == []

        await eventually(closed_everywhere)
        assert (await call(b, key, job)).response.content == "flaky is back"
        await a.jobs.CompleteJob(
            job_pb.CompleteJobRequest(job_id=job, status="completed"), metadata=bearer(key)
        )
        await assert_audit_clean(a)
    finally:
        await stop_client(b)
        await stop_client(a)


async def test_a_redis_that_is_down_fails_open(sqlite_url: str, upstream: FakeUpstream) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    c = await start_client(
        sqlite_url,
        redis_url=f"redis://127.0.0.1:{dead_port}/0",
        breaker_failures=2,
        breaker_sync_seconds=0.1,
    )
    try:
        base = upstream.base_url
        upstream.set_behavior("bad", status=500)
        group = await create_group(
            c,
            [("openai/bad", {"api_base": base}), ("openai/good", {"api_base": base})],
            cache_ttl=60,
        )
        team_id, key = await make_team(c, credits=10, groups=[group])
        job = await new_job(c, team_id, key)
        for _ in range(4):
            r = await call(c, key, job)
            # No cache without its store: every call is answered by a provider.
            assert not r.metadata.cached
        # The breaker still works, on this process's own state.
        assert requests_to(upstream, "bad") == 2 and requests_to(upstream, "good") == 4
        assert [s.state for s in await breakers_of(c)] == ["open"]
        await assert_audit_clean(c)
    finally:
        await stop_client(c)


# Response cache -------------------------------------------------------------------------------


async def test_cache_ttl_is_set_shown_and_kept_by_updates(sqlite_client: Client) -> None:
    c = sqlite_client
    group = await create_group(c, [("simulator/a", {})], cache_ttl=120)
    got = await c.groups.GetModelGroup(
        mg_pb.GetModelGroupRequest(group_name=group), metadata=admin()
    )
    assert got.cache_ttl_seconds == 120
    listed = await c.groups.ListModelGroups(mg_pb.ListModelGroupsRequest(), metadata=admin())
    assert [g.cache_ttl_seconds for g in listed.model_groups if g.group_name == group] == [120]
    models = [mg_pb.ModelGroupModel(model_name="simulator/b", priority=0)]
    kept = await c.groups.UpdateModelGroup(
        mg_pb.UpdateModelGroupRequest(group_name=group, models=models), metadata=admin()
    )
    assert kept.cache_ttl_seconds == 120
    off = await c.groups.UpdateModelGroup(
        mg_pb.UpdateModelGroupRequest(group_name=group, models=models, cache_ttl_seconds=0),
        metadata=admin(),
    )
    assert off.cache_ttl_seconds == 0
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await c.groups.UpdateModelGroup(
            mg_pb.UpdateModelGroupRequest(group_name=group, models=models, cache_ttl_seconds=-1),
            metadata=admin(),
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(bad.value).metadata["field"] == "cache_ttl_seconds"


async def test_cache_hit_calls_no_provider_and_costs_nothing(
    sqlite_client: Client, upstream: FakeUpstream
) -> None:
    c = sqlite_client
    cfg = {
        "api_base": upstream.base_url,
        "input_cost_per_token": 0.001,
        "output_cost_per_token": 0.002,
    }
    upstream.set_behavior("cachy", content="cached words")
    group = await create_group(c, [("openai/cachy", cfg)], cache_ttl=60)
    team_id, key = await make_team(c, credits=10, groups=[group])
    job = await new_job(c, team_id, key)
    first = await call(c, key, job, "same question", temperature=0.2)
    second = await call(c, key, job, "same question", temperature=0.2)
    assert requests_to(upstream, "cachy") == 1
    assert not first.metadata.cached and second.metadata.cached
    assert second.response.content == "cached words" == first.response.content
    assert second.metadata.tokens_used == first.metadata.tokens_used
    # Other parameters or messages are other requests.
    third = await call(c, key, job, "same question", temperature=0.3)
    fourth = await call(c, key, job, "another question", temperature=0.2)
    assert not third.metadata.cached and not fourth.metadata.cached
    assert requests_to(upstream, "cachy") == 3
    # A stream is never served from (nor stored in) the cache.
    stream = c.jobs.LlmCallStream(
        job_pb.LlmCallRequest(job_id=job, messages=[user_msg("same question")], temperature=0.2),
        metadata=bearer(key),
    )
    assert "".join([m.content async for m in stream]) == "cached words"
    assert requests_to(upstream, "cachy") == 4

    # Metrics: one hit, three misses (streams do not look); the hit is a "cached" call outcome.
    assert sample("gateway_llm_cache_requests_total", model_group=group, result="hit") == 1
    assert sample("gateway_llm_cache_requests_total", model_group=group, result="miss") == 3
    assert (
        sample(
            "gateway_llm_calls_total",
            model_group=group,
            model="openai/cachy",
            provider="openai",
            outcome="cached",
        )
        == 1
    )
    done = await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job, status="completed"), metadata=bearer(key)
    )
    # The hit counts as a call of the job, at no provider cost; the job bills 1 credit as usual.
    assert done.costs.total_calls == 5 and done.costs.successful_calls == 5
    assert done.costs.credit_applied and done.costs.credits_remaining == 9
    async with c.app.db.read() as conn:
        rows = (
            await conn.execute(
                select(llm_calls.c.cost_usd, llm_calls.c.attempts)
                .where(llm_calls.c.job_id == job)
                .order_by(llm_calls.c.created_at)
            )
        ).all()
    costs = [r[0] for r in rows]
    # The provider cost of the hit is 0; every other call was priced.
    assert costs[1] == 0 and all(x > 0 for i, x in enumerate(costs) if i != 1)
    assert rows[1][1] == []  # no provider attempt
    assert done.costs.total_cost_usd == pytest.approx(sum(costs))
    await assert_audit_clean(c)


async def test_cache_entries_expire(sqlite_client: Client, upstream: FakeUpstream) -> None:
    c = sqlite_client
    upstream.set_behavior("brief", content="brief")
    group = await create_group(c, [("openai/brief", {"api_base": upstream.base_url})], cache_ttl=1)
    team_id, key = await make_team(c, credits=10, groups=[group])
    job = await new_job(c, team_id, key)
    assert not (await call(c, key, job)).metadata.cached
    assert (await call(c, key, job)).metadata.cached
    await asyncio.sleep(1.1)
    assert not (await call(c, key, job)).metadata.cached
    assert requests_to(upstream, "brief") == 2


async def test_cache_is_scoped_per_organization(
    sqlite_client: Client, upstream: FakeUpstream
) -> None:
    c = sqlite_client
    upstream.set_behavior("scoped", content="scoped")
    group = await create_group(
        c, [("openai/scoped", {"api_base": upstream.base_url})], cache_ttl=60
    )
    org_a, org_b = uid("org"), uid("org")
    team_a1, key_a1 = await make_team(c, credits=10, groups=[group], org=org_a)
    team_a2, key_a2 = await make_team(c, credits=10, groups=[group], org=org_a)
    team_b, key_b = await make_team(c, credits=10, groups=[group], org=org_b)
    assert not (await call(c, key_a1, await new_job(c, team_a1, key_a1))).metadata.cached
    # Another organization's identical request misses ...
    assert not (await call(c, key_b, await new_job(c, team_b, key_b))).metadata.cached
    # ... a team of the same organization shares the answer.
    assert (await call(c, key_a2, await new_job(c, team_a2, key_a2))).metadata.cached
    assert requests_to(upstream, "scoped") == 2


async def test_a_group_update_invalidates_its_cached_answers(
    sqlite_client: Client, upstream: FakeUpstream
) -> None:
    c = sqlite_client
    upstream.set_behavior("v1", content="one")
    upstream.set_behavior("v2", content="two")
    base = upstream.base_url
    group = await create_group(c, [("openai/v1", {"api_base": base})], cache_ttl=60)
    team_id, key = await make_team(c, credits=10, groups=[group])
    job = await new_job(c, team_id, key)
    await call(c, key, job)
    await c.groups.UpdateModelGroup(
        mg_pb.UpdateModelGroupRequest(
            group_name=group,
            models=[
                mg_pb.ModelGroupModel(model_name="openai/v2", config=struct({"api_base": base}))
            ],
        ),
        metadata=admin(),
    )
    r = await call(c, key, job)
    assert r.response.content == "two" and not r.metadata.cached


async def test_local_cache_is_a_bounded_lru(sqlite_url: str, upstream: FakeUpstream) -> None:
    store = LocalCacheStore(max_entries=2, max_bytes=1000)
    await store.set("a", b"1", 60)
    await store.set("b", b"2", 60)
    assert await store.get("a") == b"1"  # a is now the most recently used
    await store.set("c", b"3", 60)
    assert await store.get("b") is None and await store.get("a") == b"1" and len(store) == 2
    await store.set("big", b"x" * 600, 60)
    await store.set("big2", b"y" * 600, 60)
    assert await store.get("big") is None and len(store) == 1  # bounded by bytes too

    c = await start_client(sqlite_url, response_cache_max_entries=2)
    try:
        upstream.set_behavior("lru", content="lru")
        group = await create_group(
            c, [("openai/lru", {"api_base": upstream.base_url})], cache_ttl=60
        )
        team_id, key = await make_team(c, credits=10, groups=[group])
        job = await new_job(c, team_id, key)
        for text in ("q1", "q2", "q3"):
            await call(c, key, job, text)
        assert (await call(c, key, job, "q3")).metadata.cached
        assert not (await call(c, key, job, "q1")).metadata.cached  # pushed out by q3
        assert requests_to(upstream, "lru") == 4
    finally:
        await stop_client(c)


async def test_openai_compatible_calls_use_the_cache_too(
    sqlite_client: Client, upstream: FakeUpstream
) -> None:
    c = sqlite_client
    cfg = {
        "api_base": upstream.base_url,
        "input_cost_per_token": 1e-6,
        "output_cost_per_token": 2e-6,
    }
    upstream.set_behavior("direct-cachy", content="direct answer")
    group = await create_group(c, [("openai/direct-cachy", cfg)], cache_ttl=60)
    team_id, key = await make_team(c, credits=10, groups=[group])
    stub = oa_grpc.OpenAIServiceStub(c.channel)
    hello = [common_pb2.ChatMessage(role="user", text="hello direct")]
    first = await stub.CreateChatCompletion(
        oa_pb.ChatCompletionRequest(model=group, messages=hello, max_tokens=20),
        metadata=bearer(key),
    )
    spent = (await c.app.ledger.budget_state(team_id))[1].spent_nanos  # type: ignore[index]
    second = await stub.CreateChatCompletion(
        oa_pb.ChatCompletionRequest(model=group, messages=hello, max_tokens=20),
        metadata=bearer(key),
    )
    assert first.choices[0].message.text == second.choices[0].message.text == "direct answer"
    assert requests_to(upstream, "direct-cachy") == 1
    budget = (await c.app.ledger.budget_state(team_id))[1]  # type: ignore[index]
    assert spent > 0 and budget.spent_nanos == spent and budget.reserved_nanos == 0
    await assert_audit_clean(c)


@pytest.mark.postgres
async def test_cache_is_shared_by_two_replicas_through_redis(
    tmp_path: Any, upstream: FakeUpstream, redis_prefix: str
) -> None:
    url = await _pg_or_skip(tmp_path)
    shared = {"redis_url": f"redis://{REDIS_HOST}:{REDIS_PORT}/0", "redis_key_prefix": redis_prefix}
    a = await start_client(url, **shared)
    b = await start_client(url, **shared)
    try:
        upstream.set_behavior("shared", content="shared answer")
        group = await create_group(
            a, [("openai/shared", {"api_base": upstream.base_url})], cache_ttl=60
        )
        team_id, key = await make_team(a, credits=10, groups=[group])
        job = await new_job(a, team_id, key)
        assert not (await call(a, key, job)).metadata.cached
        hit = await call(b, key, job)
        assert hit.metadata.cached and hit.response.content == "shared answer"
        assert requests_to(upstream, "shared") == 1
        await b.jobs.CompleteJob(
            job_pb.CompleteJobRequest(job_id=job, status="completed"), metadata=bearer(key)
        )
        await assert_audit_clean(a)
    finally:
        await stop_client(b)
        await stop_client(a)
