"""Graceful shutdown: SIGTERM during in-flight unary calls and streams lets them finish within
SHUTDOWN_GRACE, refuses new work (health NOT_SERVING, new RPCs UNAVAILABLE), exits 0, and leaves
no job in_progress that the server owns (create-and-call). Past the grace period, cut streams still
end their jobs and record their calls. The auditor passes afterwards."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

from saas_llm.v1 import job_service_pb2 as job_pb
from service.storage.database import Database
from service.storage.schema import jobs, llm_calls
from tests.conftest import Client, bearer
from tests.flows import make_group, make_team, user_msg
from tests.reliability.harness import audit_cli
from tests.support.procs import ServiceProc

# Unary calls take ~2.5 s; streams 30 tokens at 20 tokens/s (~1.5 s), first token at once.
SLOW = {"latency_ms": 2500}
STREAMING = {"tokens_per_second": 20, "completion_tokens": 30}


async def _job_rows(url: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    db = Database.open(url)
    try:
        async with db.tx() as conn:
            statuses = {
                r[0]: r[1] for r in (await conn.execute(select(jobs.c.job_id, jobs.c.status))).all()
            }
            calls: dict[str, list[str]] = {}
            for job_id, status in (
                await conn.execute(select(llm_calls.c.job_id, llm_calls.c.status))
            ).all():
                calls.setdefault(job_id, []).append(status)
    finally:
        await db.dispose()
    return statuses, calls


async def _start(db_url: str, tmp: Path, grace: float) -> tuple[ServiceProc, Client]:
    svc = ServiceProc(db_url, tmp, settings={"SHUTDOWN_GRACE": grace}, name="service-shutdown")
    svc.start()
    await svc.wait_ready()
    channel = grpc.aio.insecure_channel(svc.target)
    return svc, Client(channel=channel, app=None, url=db_url)  # type: ignore[arg-type]


async def _stream_all(call: Any, first: asyncio.Event) -> list[Any]:
    out = []
    async for m in call:
        out.append(m)
        first.set()
    return out


async def test_sigterm_drains_in_flight_calls_and_streams(db_url: str, tmp_path: Path) -> None:
    svc, c = await _start(db_url, tmp_path, grace=8.0)
    try:
        slow = await make_group(c, [("simulator/slow", SLOW)])
        streaming = await make_group(c, [("simulator/stream", STREAMING)])
        team, key = await make_team(c, credits=50, groups=[slow, streaming])
        md = bearer(key)
        open_jobs = [
            (
                await c.jobs.CreateJob(
                    job_pb.CreateJobRequest(team_id=team, job_type="t"), metadata=md
                )
            ).job_id
            for _ in range(4)
        ]
        firsts = [asyncio.Event() for _ in range(4)]
        unary = [
            asyncio.ensure_future(
                c.jobs.CreateAndCall(
                    job_pb.CreateAndCallRequest(
                        team_id=team, job_type="cac", model_group=slow, messages=[user_msg("u")]
                    ),
                    metadata=md,
                )
            )
            for _ in range(3)
        ] + [
            asyncio.ensure_future(
                c.jobs.LlmCall(
                    job_pb.LlmCallRequest(job_id=j, model_group=slow, messages=[user_msg("u")]),
                    metadata=md,
                )
            )
            for j in open_jobs[:2]
        ]
        streams = [
            asyncio.create_task(
                _stream_all(
                    c.jobs.CreateAndCallStream(
                        job_pb.CreateAndCallRequest(
                            team_id=team,
                            job_type="cacs",
                            model_group=streaming,
                            messages=[user_msg("s")],
                        ),
                        metadata=md,
                    ),
                    firsts[i],
                )
            )
            for i in range(2)
        ] + [
            asyncio.create_task(
                _stream_all(
                    c.jobs.LlmCallStream(
                        job_pb.LlmCallRequest(
                            job_id=j, model_group=streaming, messages=[user_msg("s")]
                        ),
                        metadata=md,
                    ),
                    firsts[2 + i],
                )
            )
            for i, j in enumerate(open_jobs[2:])
        ]
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 10)
        # Every create-and-call has reached the server (its job exists), and the unary calls
        # are in their 2.5 s upstream wait.
        deadline = time.monotonic() + 10
        while len((await _job_rows(db_url))[0]) < 4 + 3 + 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert not any(t.done() for t in unary + streams)
        sigterm_at = time.monotonic()
        svc.signal(signal.SIGTERM)
        await asyncio.sleep(0.2)

        # New work is refused while the old finishes.
        health = health_pb2_grpc.HealthStub(c.channel)
        try:
            h = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            assert h.status == health_pb2.HealthCheckResponse.NOT_SERVING, h
        except grpc.aio.AioRpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, e
        async with grpc.aio.insecure_channel(svc.target) as fresh:
            from saas_llm.v1 import job_service_pb2_grpc

            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await job_service_pb2_grpc.JobServiceStub(fresh).CreateJob(
                    job_pb.CreateJobRequest(team_id=team, job_type="late"), metadata=md, timeout=3
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value

        unary_results = await asyncio.gather(*unary)
        stream_results = await asyncio.gather(*streams)
        finished_at = time.monotonic()
        for r in unary_results[:3]:
            assert r.costs.credit_applied and r.response.content
        for r in unary_results[3:]:
            assert r.response.content
        for msgs in stream_results:
            last = msgs[-1]
            assert last.usage.completion_tokens == 30 and not last.HasField("error"), last
        code = await svc.wait_exit(15)
        exited_at = time.monotonic()
        assert code == 0, svc.log()[-3000:]
        assert finished_at - sigterm_at < 8.0 and exited_at - sigterm_at < 8.0 + 3
    finally:
        await c.channel.close()
        await svc.stop()

    statuses, calls = await _job_rows(db_url)
    # Every call that was in flight is recorded as a success; no job was created after SIGTERM.
    assert len(statuses) == 4 + 3 + 2, statuses
    assert all(calls.get(j) == ["success"] for j in statuses), calls
    # Jobs the server owns (create-and-call) are all closed; the client-owned ones wait for
    # their complete, which the restarted service takes.
    server_owned = [j for j in statuses if j not in open_jobs]
    assert all(statuses[j] == "completed" for j in server_owned), statuses
    svc.start()
    await svc.wait_ready()
    try:
        async with grpc.aio.insecure_channel(svc.target) as ch:
            from saas_llm.v1 import job_service_pb2_grpc

            stub = job_service_pb2_grpc.JobServiceStub(ch)
            for j in open_jobs:
                done = await stub.CompleteJob(
                    job_pb.CompleteJobRequest(job_id=j, status="completed"), metadata=md
                )
                assert done.costs.credit_applied
    finally:
        assert await svc.stop() == 0
    statuses, _ = await _job_rows(db_url)
    assert set(statuses.values()) == {"completed"}, statuses
    audit = await audit_cli(db_url)
    assert audit.returncode == 0, audit.stdout + audit.stderr


async def test_streams_longer_than_the_grace_period_are_cut_and_settled(
    db_url: str, tmp_path: Path
) -> None:
    """A stream still running near the end of the grace period is ended by the server with a
    final error event (UNAVAILABLE: a client can tell it from a finished stream), its call is
    recorded (failed: the gateway cut it, so it does not charge the job, with the tokens seen), a
    create-and-call job ends failed with its credit released, and the process still exits 0
    shortly after the grace period."""
    grace = 1.0
    svc, c = await _start(db_url, tmp_path, grace=grace)
    try:
        long_stream = await make_group(
            c, [("simulator/long", {"tokens_per_second": 10, "completion_tokens": 100})]
        )
        team, key = await make_team(c, credits=10, groups=[long_stream])
        md = bearer(key)
        job = await c.jobs.CreateJob(
            job_pb.CreateJobRequest(team_id=team, job_type="t"), metadata=md
        )
        firsts = [asyncio.Event(), asyncio.Event()]
        cut = [
            asyncio.create_task(
                _stream_all(
                    c.jobs.CreateAndCallStream(
                        job_pb.CreateAndCallRequest(
                            team_id=team, job_type="cacs", messages=[user_msg("s")]
                        ),
                        metadata=md,
                    ),
                    firsts[0],
                )
            ),
            asyncio.create_task(
                _stream_all(
                    c.jobs.LlmCallStream(
                        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("s")]),
                        metadata=md,
                    ),
                    firsts[1],
                )
            ),
        ]
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), 10)
        sigterm_at = time.monotonic()
        svc.signal(signal.SIGTERM)
        results = await asyncio.gather(*cut, return_exceptions=True)
        for r in results:
            # Cut by the server: the last event says so.
            assert not isinstance(r, BaseException), r
            assert r[-1].error.code == grpc.StatusCode.UNAVAILABLE.value[0], r[-1]
            assert "shutting down" in r[-1].error.message and r[-1].finish_reason == "error"
        code = await svc.wait_exit(grace + 10)
        assert code == 0, svc.log()[-3000:]
        assert time.monotonic() - sigterm_at < grace + 5
    finally:
        await c.channel.close()
        await svc.stop()
    statuses, calls = await _job_rows(db_url)
    cac = [j for j in statuses if j != job.job_id]
    assert len(cac) == 1
    assert statuses[cac[0]] == "failed", (statuses, svc.log()[-3000:])
    assert calls.get(cac[0]) == ["failed"], calls
    assert calls.get(job.job_id) == ["failed"], calls
    assert statuses[job.job_id] == "in_progress"  # the client's to complete (or the sweeper's)
    audit = await audit_cli(db_url, "--no-check-stale")
    assert audit.returncode == 0, audit.stdout + audit.stderr
