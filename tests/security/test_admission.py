"""Issue 21, item 1: nobody can stop the traffic of others by holding RPCs open.

The attack: ~2,100 grpc.health.v1.Health/Watch streams without any key filled the server's
MAX_CONCURRENT_RPCS, and every REST and gRPC call then got 429. Now unauthenticated long-lived
streams share their own small cap (MAX_PUBLIC_STREAMS), each key may hold at most
MAX_CONCURRENT_RPCS_PER_KEY RPCs, and the service listens on loopback unless told otherwise.
Real grpc.aio server, real Envoy, SQLite."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from saas_llm.v1 import credit_service_pb2 as cr_pb
from saas_llm.v1 import job_service_pb2 as job_pb
from service.audit import audit
from service.settings import Settings
from tests.api.test_tenancy import error_info
from tests.conftest import Client, admin, bearer, fresh_database, start_client, stop_client
from tests.flows import make_group, make_team, user_msg
from tests.rest.real_service import serve_real

OK, EXHAUSTED = grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED
FLOOD = 2_100  # the count: more than the default MAX_CONCURRENT_RPCS (2000)
CHANNELS = 30


async def _watch(channel: grpc.aio.Channel) -> grpc.aio.UnaryStreamCall:
    return health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))


async def _first(call: grpc.aio.UnaryStreamCall) -> grpc.StatusCode:
    """OK once the stream delivered its first status, else the code it ended with."""
    try:
        await call.read()
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()


@contextlib.asynccontextmanager
async def _flood(target: str, n: int) -> AsyncIterator[list[grpc.StatusCode]]:
    """n Watch streams without metadata over CHANNELS channels; yields the first outcome of
    each (the admitted ones stay open until the block ends)."""
    channels = [grpc.aio.insecure_channel(target) for _ in range(CHANNELS)]
    calls = [await _watch(channels[i % CHANNELS]) for i in range(n)]
    try:
        yield list(await asyncio.gather(*(_first(c) for c in calls)))
    finally:
        for call in calls:
            call.cancel()
        for ch in channels:
            await ch.close()


def test_the_service_listens_on_loopback_by_default() -> None:
    assert Settings(master_key="x" * 32).grpc_host == "127.0.0.1"


@pytest.mark.parametrize(("host", "reachable"), [(None, False), ("0.0.0.0", True)])
async def test_grpc_host_decides_who_can_connect(
    tmp_path: Path, host: str | None, reachable: bool
) -> None:
    """With the default GRPC_HOST the service refuses a connection to another address of the
    machine (127.0.0.2: same loopback device, another address); 0.0.0.0 widens it."""
    host = host or str(Settings.model_fields["grpc_host"].default)
    c = await start_client(await fresh_database("sqlite", tmp_path), grpc_host=host)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.2:{c.app.port}") as other:
            stub = health_pb2_grpc.HealthStub(other)
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                connected = True
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                connected = False
        assert connected is reachable
    finally:
        await stop_client(c)


async def test_a_watch_flood_leaves_authenticated_calls_served(tmp_path: Path) -> None:
    """The issue's attack with the default limits, against the real service behind Envoy: the
    flood gets MAX_PUBLIC_STREAMS streams and RESOURCE_EXHAUSTED for the rest, while REST and
    gRPC calls with a key are served during it."""
    async with serve_real("sqlite", tmp_path) as svc:
        c = svc.app_client
        assert c is not None
        limit = c.app.settings.max_public_streams
        group = await make_group(c, [("simulator/ok", {})])
        team_id, key = await make_team(c, credits=5, groups=[group])
        async with _flood(c.target, FLOOD) as outcomes:
            # The rest are refused: RESOURCE_EXHAUSTED by the cap, or CANCELLED by gRPC core,
            # which sheds part of a burst of calls it has not handed to the server yet (before
            # this fix too).
            counts = Counter(outcomes)
            assert counts[OK] == limit, counts
            assert counts[EXHAUSTED] > FLOOD / 2, counts
            assert set(counts) <= {OK, EXHAUSTED, grpc.StatusCode.CANCELLED}, counts
            # Authenticated gRPC: a whole job flow.
            job = await c.jobs.CreateJob(
                job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
            )
            await c.jobs.LlmCall(
                job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("hi")]),
                metadata=bearer(key),
            )
            # Authenticated REST through Envoy.
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    svc.url(f"/api/credits/teams/{team_id}/balance"),
                    headers={"Authorization": f"Bearer {key}"},
                ) as resp,
            ):
                assert resp.status == 200, await resp.text()
            # Reflection is an unauthenticated stream too: refused while the cap is full.
            stub = reflection_pb2_grpc.ServerReflectionStub(c.channel)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                async for _ in stub.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")])
                ):
                    pass
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_info(e.value).reason == "CONCURRENCY_LIMIT_EXCEEDED"
        # The flood is gone: Watch and reflection work again.
        async with _flood(c.target, 1) as outcomes:
            assert outcomes == [grpc.StatusCode.OK]
        report = await audit(c.app.db)
        assert report.ok, report.violations


async def test_one_key_cannot_take_the_whole_server(tmp_path: Path) -> None:
    """A team holding many slow streams gets at most MAX_CONCURRENT_RPCS_PER_KEY of them; the
    rest are refused with RESOURCE_EXHAUSTED, while another team and the admin are served and
    the global cap (MAX_CONCURRENT_RPCS) is never reached."""
    url = await fresh_database("sqlite", tmp_path)
    c: Client = await start_client(url, max_concurrent_rpcs=40, max_concurrent_rpcs_per_key=10)
    try:
        slow = await make_group(c, [("simulator/slow", {"latency_ms": 3000})])
        greedy, greedy_key = await make_team(c, credits=50, groups=[slow])
        other, other_key = await make_team(c, credits=5, groups=[slow])
        jobs = [
            (
                await c.jobs.CreateJob(
                    job_pb.CreateJobRequest(team_id=greedy, job_type="t"),
                    metadata=bearer(greedy_key),
                )
            ).job_id
            for _ in range(25)
        ]
        calls = [
            c.jobs.LlmCallStream(
                job_pb.LlmCallRequest(job_id=j, messages=[user_msg("hi")]),
                metadata=bearer(greedy_key),
            )
            for j in jobs
        ]
        refused: list[grpc.aio.AioRpcError] = []

        async def wait_refusal(call: grpc.aio.UnaryStreamCall) -> None:
            try:
                await call.read()
            except grpc.aio.AioRpcError as exc:
                refused.append(exc)

        tasks = [asyncio.create_task(wait_refusal(call)) for call in calls]
        await asyncio.wait(tasks, timeout=1.5)
        assert len(refused) == 15
        assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert {error_info(e).reason for e in refused} == {"CONCURRENCY_LIMIT_EXCEEDED"}
        # Another key, and the master key, are served meanwhile.
        balance = await c.credits.GetCreditBalance(
            cr_pb.GetCreditBalanceRequest(team_id=other), metadata=bearer(other_key)
        )
        assert balance.team_id == other
        await c.credits.GetCreditBalance(
            cr_pb.GetCreditBalanceRequest(team_id=greedy), metadata=admin()
        )
        for call in calls:
            call.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        report = await audit(c.app.db)
        assert report.ok, report.violations
    finally:
        await stop_client(c)


async def test_the_http_handler_has_the_global_cap_too(tmp_path: Path) -> None:
    """The job flow's REST paths and the OpenAI-compatible ones are served by the service's HTTP
    handler, not grpc.aio: MAX_CONCURRENT_RPCS bounds its requests in progress as well (every
    key together), with the same 429, while the per-key cap is far away."""
    async with serve_real(
        "sqlite", tmp_path, max_concurrent_rpcs=3, max_concurrent_rpcs_per_key=100
    ) as svc:
        assert svc.app_client is not None
        c = svc.app_client
        slow = await make_group(c, [("simulator/slow", {"latency_ms": 1500})])
        team, key = await make_team(c, credits=50, groups=[slow])
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(base_url=svc.base_url) as http:
            jobs = []
            for _ in range(8):
                async with http.post(
                    "/api/jobs/create", json={"team_id": team, "job_type": "t"}, headers=headers
                ) as r:
                    assert r.status == 200, await r.text()
                    jobs.append((await r.json())["job_id"])

            async def call(job_id: str) -> tuple[int, dict[str, object]]:
                async with http.post(
                    f"/api/jobs/{job_id}/llm-call",
                    json={"messages": [{"role": "user", "content": "hi"}]},
                    headers=headers,
                ) as r:
                    return r.status, await r.json()

            results = await asyncio.gather(*(call(j) for j in jobs))
        statuses = Counter(status for status, _ in results)
        assert statuses == {200: 3, 429: 5}, results
        refused = [body for status, body in results if status == 429]
        assert {b["code"] for b in refused} == {8}
        assert {b["details"][0]["reason"] for b in refused} == {"CONCURRENCY_LIMIT_EXCEEDED"}  # type: ignore[index]
        report = await audit(c.app.db)
        assert report.ok, report.violations
