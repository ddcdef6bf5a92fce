"""Issue 16 (spend and traffic control): per-team rate limits and per-job bounds through the real
gRPC service on real databases, a fake upstream that counts provider requests, and a real Redis
(127.0.0.1:6379) shared by two replicas. DESIGN.md "Operations"."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio

from saas_llm.v1 import job_service_pb2 as job_pb
from saas_llm.v1 import team_service_pb2 as team_pb
from service import metrics
from tests.api.test_tenancy import error_info
from tests.conftest import Client, admin, bearer, fresh_database, start_client, stop_client
from tests.flows import make_group, make_team, uid, user_msg
from tests.reliability.harness import audit_cli
from tests.support.upstream import FakeUpstream, closed_port

REDIS = ("127.0.0.1", 6379)


def _redis_up() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1):
            return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not _redis_up(), reason="Redis not reachable at 127.0.0.1:6379")


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as u:
        yield u


async def limited_team(c: Client, group: str, **limits: float) -> tuple[str, str]:
    team_id, key = await make_team(c, credits=50, groups=[group])
    if limits:
        await c.teams.UpdateTeamLimits(
            team_pb.UpdateTeamLimitsRequest(team_id=team_id, **limits),  # type: ignore[arg-type]
            metadata=admin(),
        )
    return team_id, key


async def new_job(c: Client, key: str, team_id: str) -> str:
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="limits"), metadata=bearer(key)
    )
    return job.job_id


def call(job_id: str, text: str = "hi", **params: int) -> job_pb.LlmCallRequest:
    return job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg(text)], **params)  # type: ignore[arg-type]


async def fake_group(c: Client, upstream: FakeUpstream, model: str) -> str:
    upstream.set_behavior(model, content="ok", usage=True, prompt_tokens=5, completion_tokens=5)
    return await make_group(
        c,
        [
            (
                f"openai/{model}",
                {
                    "api_base": upstream.base_url,
                    "input_cost_per_token": 0.001,
                    "output_cost_per_token": 0.001,
                },
            )
        ],
    )


def requests_for(upstream: FakeUpstream, model: str) -> int:
    return sum(1 for r in upstream.requests if r.body.get("model") == model)


# Per-job bounds ------------------------------------------------------------------------------


async def test_job_bounds_stop_the_provider_call(client: Client, upstream: FakeUpstream) -> None:
    model = f"gpt-bounds-{uuid.uuid4().hex[:6]}"
    group = await fake_group(client, upstream, model)
    # Limits on create (the PATCH is tested below).
    team_id = uid("team")
    org = uid("org")
    from saas_llm.v1 import organization_service_pb2 as org_pb

    await client.orgs.CreateOrganization(
        org_pb.CreateOrganizationRequest(organization_id=org, name="O"), metadata=admin()
    )
    created = await client.teams.CreateTeam(
        team_pb.CreateTeamRequest(
            organization_id=org,
            team_id=team_id,
            model_groups=[group],
            credits_allocated=10,
            max_calls_per_job=2,
        ),
        metadata=admin(),
    )
    key = created.virtual_key
    team = await client.teams.GetTeam(team_pb.GetTeamRequest(team_id=team_id), metadata=admin())
    assert (team.max_calls_per_job, team.rpm_limit, team.tpm_limit) == (2, 0, 0)
    assert (team.max_tokens_per_job, team.max_job_cost_usd) == (0, 0)

    job_id = await new_job(client, key, team_id)
    for _ in range(2):
        await client.jobs.LlmCall(call(job_id), metadata=bearer(key))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.LlmCall(call(job_id), metadata=bearer(key))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "max_calls_per_job" in (err.value.details() or "")
    info = error_info(err.value)
    assert info.reason == "JOB_LIMIT_EXCEEDED" and info.metadata["limit"] == "max_calls_per_job"
    assert requests_for(upstream, model) == 2
    # The refused call wrote nothing: the job has its two calls.
    job = await client.jobs.GetJob(job_pb.GetJobRequest(job_id=job_id), metadata=bearer(key))
    assert len(job.calls) == 2
    done = await client.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job_id, status="completed"), metadata=bearer(key)
    )
    assert done.costs.total_calls == 2

    # Cost: each call costs 10 x $0.001 = $0.01; a bound of $0.015 allows two calls.
    await client.teams.UpdateTeamLimits(
        team_pb.UpdateTeamLimitsRequest(
            team_id=team_id, max_calls_per_job=0, max_job_cost_usd=0.015
        ),
        metadata=admin(),
    )
    job_id = await new_job(client, key, team_id)
    before = requests_for(upstream, model)
    for _ in range(2):
        await client.jobs.LlmCall(call(job_id), metadata=bearer(key))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.LlmCall(call(job_id), metadata=bearer(key))
    assert error_info(err.value).metadata["limit"] == "max_job_cost_usd"
    assert requests_for(upstream, model) == before + 2

    # Tokens: max_tokens is capped by what the job has left; past the bound, refused.
    await client.teams.UpdateTeamLimits(
        team_pb.UpdateTeamLimitsRequest(team_id=team_id, max_job_cost_usd=0, max_tokens_per_job=30),
        metadata=admin(),
    )
    job_id = await new_job(client, key, team_id)
    await client.jobs.LlmCall(call(job_id, max_tokens=1000), metadata=bearer(key))
    sent = upstream.requests[-1].body
    assert sent["model"] == model and 1 <= sent["max_tokens"] < 30
    await client.jobs.LlmCall(call(job_id), metadata=bearer(key))  # 20 tokens used now
    assert upstream.requests[-1].body["max_tokens"] < 20
    before = requests_for(upstream, model)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.jobs.LlmCall(call(job_id, "x" * 200), metadata=bearer(key))
    assert error_info(err.value).metadata["limit"] == "max_tokens_per_job"
    assert requests_for(upstream, model) == before

    report = await audit_cli(client.url, "--no-check-stale")
    assert report.returncode == 0, report.stdout + report.stderr


async def test_concurrent_calls_on_one_job_admit_exactly_the_bound(
    client: Client, upstream: FakeUpstream
) -> None:
    model = f"gpt-race-{uuid.uuid4().hex[:6]}"
    group = await fake_group(client, upstream, model)
    upstream.set_behavior(model, content="ok", delay_s=0.05)
    team_id, key = await limited_team(client, group, max_calls_per_job=2)
    job_id = await new_job(client, key, team_id)
    results = await asyncio.gather(
        *(client.jobs.LlmCall(call(job_id), metadata=bearer(key)) for _ in range(12)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 2 and len(refused) == 10
    assert all(error_info(r).reason == "JOB_LIMIT_EXCEEDED" for r in refused)
    assert requests_for(upstream, model) == 2
    job = await client.jobs.GetJob(job_pb.GetJobRequest(job_id=job_id), metadata=bearer(key))
    assert len(job.calls) == 2


async def test_create_and_call_refused_writes_no_job(sqlite_client: Client) -> None:
    c = sqlite_client
    group = await make_group(c, [("simulator/fast", {})])
    team_id, key = await limited_team(c, group, rpm_limit=1)
    req = job_pb.CreateAndCallRequest(team_id=team_id, job_type="x", messages=[user_msg("hi")])
    await c.jobs.CreateAndCall(req, metadata=bearer(key))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.jobs.CreateAndCall(req, metadata=bearer(key))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    listed = await c.jobs.ListTeamJobs(
        job_pb.ListTeamJobsRequest(team_id=team_id), metadata=bearer(key)
    )
    assert listed.total_jobs == 1
    balance = await c.teams.GetTeam(team_pb.GetTeamRequest(team_id=team_id), metadata=admin())
    assert balance.credits.credits_reserved == 0


# Rate limits ---------------------------------------------------------------------------------


async def test_rpm_limit_in_process(sqlite_client: Client) -> None:
    c = sqlite_client
    group = await make_group(c, [("simulator/fast", {})])
    team_id, key = await limited_team(c, group, rpm_limit=3)
    job_id = await new_job(c, key, team_id)
    refused_before = metrics.REFUSALS.labels("rate_limit", "rpm")._value.get()
    for _ in range(3):
        await c.jobs.LlmCall(call(job_id), metadata=bearer(key))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.jobs.LlmCall(call(job_id), metadata=bearer(key))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(err.value)
    assert info.reason == "RATE_LIMITED" and info.metadata["limit"] == "rpm"
    assert 1 <= int(info.metadata["retry_after_seconds"]) <= 60
    assert metrics.REFUSALS.labels("rate_limit", "rpm")._value.get() == refused_before + 1
    # A stream is refused before its first event, as an ordinary RPC error.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in c.jobs.LlmCallStream(call(job_id), metadata=bearer(key)):
            pass
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Nothing was written for the refused call.
    job = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job_id), metadata=bearer(key))
    assert len(job.calls) == 3
    # 0 turns the limit off.
    await c.teams.UpdateTeamLimits(
        team_pb.UpdateTeamLimitsRequest(team_id=team_id, rpm_limit=0), metadata=admin()
    )
    await c.jobs.LlmCall(call(job_id), metadata=bearer(key))


async def test_tpm_limit_counts_actual_tokens(sqlite_client: Client) -> None:
    c = sqlite_client
    group = await make_group(c, [("simulator/fast", {})])
    team_id, key = await limited_team(c, group, tpm_limit=40)
    job_id = await new_job(c, key, team_id)
    admitted = 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        for _ in range(20):
            await c.jobs.LlmCall(call(job_id, "hello there friend"), metadata=bearer(key))
            admitted += 1
    assert error_info(err.value).metadata["limit"] == "tpm"
    job = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job_id), metadata=bearer(key))
    used = sum(x.tokens for x in job.calls)
    # Admitted while the window's actual tokens (corrected after each call) fit.
    assert 1 <= admitted < 20 and len(job.calls) == admitted
    assert used - job.calls[-1].tokens <= 40


@pytest.fixture
async def two_replicas(tmp_path: Path) -> AsyncIterator[tuple[Client, Client, str]]:
    """Two service processes' Apps on one database and one Redis, 3-second windows."""
    kind = "postgres" if _pg_up() else "sqlite"
    url = await fresh_database(kind, tmp_path)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    opts = {
        "redis_url": "redis://127.0.0.1:6379/0",
        "redis_key_prefix": prefix,
        "rate_limit_window_seconds": 3.0,
    }
    a = await start_client(url, **opts)
    b = await start_client(url, **opts)
    try:
        yield a, b, prefix
    finally:
        await stop_client(a)
        await stop_client(b)
        import redis.asyncio as aioredis

        r = aioredis.from_url("redis://127.0.0.1:6379/0")
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()


def _pg_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


async def _window_start(seconds: float) -> None:
    """Sleep to the start of the next window (the replicas' clock is this host's)."""
    await asyncio.sleep(seconds - time.time() % seconds + 0.02)


@needs_redis
async def test_rpm_limit_holds_across_two_replicas_on_redis(
    two_replicas: tuple[Client, Client, str],
) -> None:
    a, b, _ = two_replicas
    group = await make_group(a, [("simulator/fast", {})])
    team_id, key = await limited_team(a, group, rpm_limit=5)
    job_id = await new_job(a, key, team_id)
    for _round in range(2):  # two consecutive windows: the count starts again at the boundary
        await _window_start(3.0)
        results = await asyncio.gather(
            *(
                (a if i % 2 else b).jobs.LlmCall(call(job_id), metadata=bearer(key))
                for i in range(12)
            ),
            return_exceptions=True,
        )
        ok = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(ok) == 5, results
        assert len(refused) == 7
        assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
        assert all(error_info(r).reason == "RATE_LIMITED" for r in refused)
    job = await a.jobs.GetJob(job_pb.GetJobRequest(job_id=job_id), metadata=bearer(key))
    assert len(job.calls) == 10
    report = await audit_cli(a.url, "--no-check-stale")
    assert report.returncode == 0, report.stdout + report.stderr


@needs_redis
async def test_redis_limiter_minute_boundary_with_injected_clock() -> None:
    """60-second windows on a clock the test moves: the count starts again at the minute."""
    from service.ratelimit import RedisRateLimiter

    now = [1_000_000 * 60 + 59.5]  # half a second before a minute boundary
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    client = redis.asyncio.from_url("redis://127.0.0.1:6379/0")
    limiter = RedisRateLimiter(client, prefix=prefix, window_seconds=60, clock=lambda: now[0])
    try:
        got = [await limiter.acquire("team", 3, 0, 0) for _ in range(5)]
        assert [d.allowed for d in got] == [True, True, True, False, False]
        assert got[3].limit == "rpm" and got[3].retry_after == 1
        now[0] += 1.0  # the next minute
        got = [await limiter.acquire("team", 3, 0, 0) for _ in range(5)]
        assert [d.allowed for d in got] == [True, True, True, False, False]
        # A refund gives a slot back; tokens count and are corrected.
        await limiter.adjust("team", got[0].window, -1, 0)
        assert (await limiter.acquire("team", 3, 0, 0)).allowed
        assert (await limiter.acquire("tok", 0, 100, 60)).allowed
        assert (await limiter.acquire("tok", 0, 100, 60)).limit == "tpm"
        await limiter.adjust("tok", got[0].window, 0, -50)  # it used 10, not 60
        assert (await limiter.acquire("tok", 0, 100, 60)).allowed
    finally:
        keys = [k async for k in limiter.redis.scan_iter(match=prefix + "*")]
        if keys:
            await limiter.redis.delete(*keys)
        await client.aclose()


async def test_redis_down_fails_open_with_a_metric(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = await fresh_database("sqlite", tmp_path)
    c = await start_client(url, redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    try:
        group = await make_group(c, [("simulator/fast", {})])
        team_id, key = await limited_team(c, group, rpm_limit=1)
        job_id = await new_job(c, key, team_id)
        errors_before = metrics.LIMITER_ERRORS._value.get()
        with caplog.at_level("WARNING", logger="service.ratelimit"):
            for _ in range(3):  # over the limit, but Redis cannot count: admitted
                await c.jobs.LlmCall(call(job_id), metadata=bearer(key))
        assert metrics.LIMITER_ERRORS._value.get() > errors_before
        assert any("fail open" in r.getMessage() for r in caplog.records), caplog.records
    finally:
        await stop_client(c)


async def test_limits_validation_and_admin_only(sqlite_client: Client) -> None:
    c = sqlite_client
    team_id, key = await make_team(c)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.teams.UpdateTeamLimits(
            team_pb.UpdateTeamLimitsRequest(team_id=team_id, rpm_limit=-1), metadata=admin()
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.teams.UpdateTeamLimits(
            team_pb.UpdateTeamLimitsRequest(team_id=team_id, rpm_limit=1), metadata=bearer(key)
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.teams.UpdateTeamLimits(
            team_pb.UpdateTeamLimitsRequest(team_id="nope_" + uid("t"), rpm_limit=1),
            metadata=admin(),
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # A field left out keeps its value.
    t = await c.teams.UpdateTeamLimits(
        team_pb.UpdateTeamLimitsRequest(team_id=team_id, tpm_limit=7), metadata=admin()
    )
    t = await c.teams.UpdateTeamLimits(
        team_pb.UpdateTeamLimitsRequest(team_id=team_id, rpm_limit=9), metadata=admin()
    )
    assert (t.rpm_limit, t.tpm_limit, t.max_calls_per_job) == (9, 7, 100)
