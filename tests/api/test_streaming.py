"""Server-streaming LLM calls over gRPC: chunks arrive as produced, usage is
recorded, fallback only before the first chunk, cancellation reaches the
upstream."""

from __future__ import annotations

import asyncio
import itertools
import time

import grpc
import pytest

from saas_llm.v1 import job_service_pb2 as job_pb
from service.audit import audit
from tests.conftest import Client, bearer
from tests.flows import make_group, make_team, user_msg
from tests.support.upstream import FakeUpstream


async def _job(c: Client, team_id: str, key: str) -> str:
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="chat"), metadata=bearer(key)
    )
    return job.job_id


async def test_chunks_arrive_as_produced(client: Client, upstream: FakeUpstream) -> None:
    c = client
    upstream.set_behavior("slow", stream_chunks=["Once ", "upon ", "a ", "time"], chunk_delay_s=0.3)
    group = await make_group(
        c,
        [
            (
                "openai/slow",
                {
                    "api_base": upstream.base_url,
                    "input_cost_per_token": 1e-6,
                    "output_cost_per_token": 2e-6,
                },
            )
        ],
    )
    team_id, key = await make_team(c, groups=[group])
    job_id = await _job(c, team_id, key)
    arrivals: list[tuple[float, job_pb.LlmCallStreamResponse]] = []
    started = time.monotonic()
    async for msg in c.jobs.LlmCallStream(
        job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg("Tell me a story")]),
        metadata=bearer(key),
    ):
        arrivals.append((time.monotonic() - started, msg))
    contents = [m.content for _, m in arrivals if m.content]
    assert contents == ["Once ", "upon ", "a ", "time"]
    times = [t for t, m in arrivals if m.content]
    # Each chunk reached us before the next was produced (0.3 s apart).
    for a, b in itertools.pairwise(times):
        assert b - a > 0.2
    assert times[-1] - times[0] > 0.8
    last = arrivals[-1][1]
    assert last.finish_reason == "stop" and last.call_id
    assert last.usage.completion_tokens > 0 and last.usage.total_tokens > 0
    done = await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job_id, status="completed"), metadata=bearer(key)
    )
    assert done.costs.credit_applied and done.costs.total_tokens == last.usage.total_tokens
    assert done.costs.pricing == "priced" and done.costs.total_cost_usd > 0
    assert (await audit(c.app.db)).ok


async def test_stream_fallback_before_first_chunk(
    sqlite_client: Client, upstream: FakeUpstream
) -> None:
    c = sqlite_client
    upstream.set_behavior("down", status=503)
    upstream.set_behavior("up", stream_chunks=["ok"])
    group = await make_group(
        c,
        [
            ("openai/down", {"api_base": upstream.base_url}),
            ("openai/up", {"api_base": upstream.base_url}),
        ],
    )
    team_id, key = await make_team(c, groups=[group])
    job_id = await _job(c, team_id, key)
    msgs = [
        m
        async for m in c.jobs.LlmCallStream(
            job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg("x")]), metadata=bearer(key)
        )
    ]
    assert [m.content for m in msgs if m.content] == ["ok"]


async def test_stream_error_before_first_chunk_is_rpc_error(
    sqlite_client: Client, upstream: FakeUpstream
) -> None:
    c = sqlite_client
    upstream.set_behavior("down2", status=500, error_message="boom")
    group = await make_group(c, [("openai/down2", {"api_base": upstream.base_url})])
    team_id, key = await make_team(c, groups=[group])
    job_id = await _job(c, team_id, key)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in c.jobs.LlmCallStream(
            job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg("x")]), metadata=bearer(key)
        ):
            pass
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert e.value.details().startswith("LLM call failed:")


async def test_failure_after_first_chunk_ends_with_error_event(
    client: Client, upstream: FakeUpstream
) -> None:
    c = client
    upstream.set_behavior("drop", stream_chunks=["a", "b", "c", "d"], drop_after_chunks=2)
    upstream.set_behavior("never", stream_chunks=["should not be used"])
    group = await make_group(
        c,
        [
            ("openai/drop", {"api_base": upstream.base_url}),
            ("openai/never", {"api_base": upstream.base_url}),
        ],
    )
    team_id, key = await make_team(c, groups=[group])
    job_id = await _job(c, team_id, key)
    msgs = [
        m
        async for m in c.jobs.LlmCallStream(
            job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg("x")]), metadata=bearer(key)
        )
    ]
    # aiohttp drops data still buffered when the connection breaks, so "b"
    # may be lost; what matters is that chunks came, then an error event.
    assert [m.content for m in msgs if m.content] in (["a"], ["a", "b"])
    assert msgs[-1].HasField("error") and msgs[-1].error.message.startswith("LLM call failed:")
    assert [r.body["model"] for r in upstream.requests] == ["drop"]  # no fallback after a chunk
    done = await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job_id, status="completed"), metadata=bearer(key)
    )
    assert not done.costs.credit_applied and done.costs.failed_calls == 1
    assert (await audit(c.app.db)).ok


async def test_cancel_reaches_upstream_and_is_recorded(
    client: Client, upstream: FakeUpstream
) -> None:
    c = client
    upstream.set_behavior("long", stream_chunks=[f"w{i} " for i in range(50)], chunk_delay_s=0.2)
    group = await make_group(c, [("openai/long", {"api_base": upstream.base_url})])
    team_id, key = await make_team(c, groups=[group])
    job_id = await _job(c, team_id, key)
    call = c.jobs.LlmCallStream(
        job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg("x")]), metadata=bearer(key)
    )
    seen = 0
    async for msg in call:
        if msg.content:
            seen += 1
        if seen == 2:
            call.cancel()
            break
    t0 = time.monotonic()
    await upstream.wait_disconnect(timeout=2.0)
    assert time.monotonic() - t0 < 1.5
    for _ in range(50):
        got = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job_id), metadata=bearer(key))
        if got.calls:
            break
        await asyncio.sleep(0.05)
    assert got.calls[0].status == "cancelled" and got.calls[0].tokens > 0
    done = await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job_id, status="completed"), metadata=bearer(key)
    )
    # A dropped stream neither fails nor charges the job by itself.
    assert done.costs.failed_calls == 0 and done.costs.credit_applied
    assert (await audit(c.app.db)).ok


async def test_create_and_call_stream(sqlite_client: Client) -> None:
    c = sqlite_client
    group = await make_group(
        c, [("simulator/story", {"response": "one two three", "tokens_per_second": 100})]
    )
    team_id, key = await make_team(c, credits=2, groups=[group])
    msgs = [
        m
        async for m in c.jobs.CreateAndCallStream(
            job_pb.CreateAndCallRequest(team_id=team_id, job_type="chat", messages=[user_msg("x")]),
            metadata=bearer(key),
        )
    ]
    assert msgs[0].job_id
    assert "".join(m.content for m in msgs).strip() == "one two three"
    last = msgs[-1]
    assert last.costs.credit_applied and last.costs.credits_remaining == 1 and last.call_id
