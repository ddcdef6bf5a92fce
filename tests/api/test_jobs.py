"""Jobs, LLM calls and the credit rules through real gRPC stubs, against the
simulator and a fake OpenAI-compatible upstream over real HTTP."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from saas_llm.v1 import common_pb2
from saas_llm.v1 import credit_service_pb2 as cr_pb
from saas_llm.v1 import job_service_pb2 as job_pb
from service.audit import audit
from tests.api.test_tenancy import error_info
from tests.conftest import Client, admin, bearer
from tests.flows import make_group, make_team, run_flow, struct, user_msg
from tests.support.upstream import FakeUpstream, closed_base_url


async def assert_ledger_ok(c: Client) -> None:
    report = await audit(c.app.db)
    assert report.ok, report.violations


async def balance(c: Client, team_id: str) -> cr_pb.GetCreditBalanceResponse:
    return await c.credits.GetCreditBalance(
        cr_pb.GetCreditBalanceRequest(team_id=team_id), metadata=admin()
    )


async def test_seed_flow_charges_one_credit(client: Client) -> None:
    c = client
    group = await make_group(
        c, [("simulator/resume", {"response": "Parsed resume."})], name="ResumeAgent"
    )
    team_id, key = await make_team(c, credits=1000, groups=[group])
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(
            team_id=team_id,
            user_id="user_123",
            job_type="document_analysis",
            metadata=struct({"document_id": "doc_456"}),
        ),
        metadata=bearer(key),
    )
    assert job.status == "pending" and len(job.job_id) == 36
    bal = await balance(c, team_id)
    assert (bal.credits_reserved, bal.credits_remaining) == (1, 999)
    first = await c.jobs.LlmCall(
        job_pb.LlmCallRequest(
            job_id=job.job_id,
            model_group="ResumeAgent",
            purpose="parsing",
            messages=[user_msg("You are a resume parser."), user_msg("doc")],
            temperature=0.7,
        ),
        metadata=bearer(key),
    )
    assert first.response.content == "Parsed resume." and first.response.finish_reason == "stop"
    assert first.metadata.model_group == "ResumeAgent" and first.metadata.tokens_used > 0
    got = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job.job_id), metadata=bearer(key))
    assert got.status == "in_progress" and len(got.calls) == 1
    await c.jobs.LlmCall(
        job_pb.LlmCallRequest(
            job_id=job.job_id,
            model_group="ResumeAgent",
            purpose="analysis",
            messages=[user_msg("Analyze: " + first.response.content)],
        ),
        metadata=bearer(key),
    )
    done = await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(
            job_id=job.job_id, status="completed", metadata=struct({"result": "success"})
        ),
        metadata=bearer(key),
    )
    assert done.status == "completed"
    assert done.costs.total_calls == 2 and done.costs.successful_calls == 2
    assert done.costs.failed_calls == 0 and done.costs.credit_applied
    assert done.costs.credits_remaining == 999
    assert [x.purpose for x in done.calls] == ["parsing", "analysis"]
    assert all(x.error.WhichOneof("kind") == "null_value" for x in done.calls)
    # Simulator models have no price unless configured: flagged, not $0.
    assert done.costs.pricing == "unpriced" and done.costs.total_cost_usd == 0
    bal = await balance(c, team_id)
    assert (bal.credits_used, bal.credits_reserved, bal.credits_remaining) == (1, 0, 999)
    # Complete is idempotent: same summary, no second charge.
    again = await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job.job_id, status="completed"), metadata=bearer(key)
    )
    assert again.costs.credits_remaining == 999 and again.costs.credit_applied
    assert (await balance(c, team_id)).credits_used == 1
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.CompleteJob(
            job_pb.CompleteJobRequest(job_id=job.job_id, status="failed"), metadata=bearer(key)
        )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("x")]), metadata=bearer(key)
        )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(e.value).reason == "JOB_NOT_OPEN"
    await assert_ledger_ok(c)


async def test_failed_job_and_failed_call_release(client: Client) -> None:
    c = client
    ok = await make_group(c, [("simulator/ok", {})])
    bad = await make_group(c, [("simulator/bad", {"failure_rate": 1, "fail_with": 500})])
    team_id, key = await make_team(c, credits=3, groups=[ok, bad])
    r = await run_flow(c, team_id, key, status="failed")
    assert not r.costs.credit_applied and r.costs.credits_remaining == 3
    # A failed call means no charge, even when completed as "completed".
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job.job_id, model_group=bad, messages=[user_msg("x")]),
            metadata=bearer(key),
        )
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert e.value.details().startswith("LLM call failed: ")
    assert error_info(e.value).reason == "LLM_CALL_FAILED"
    assert "simulator" not in e.value.details()
    done = await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job.job_id, status="completed"), metadata=bearer(key)
    )
    assert done.costs.failed_calls == 1 and not done.costs.credit_applied
    assert done.calls[0].error.string_value
    bal = await balance(c, team_id)
    assert (bal.credits_used, bal.credits_reserved, bal.credits_remaining) == (0, 0, 3)
    await assert_ledger_ok(c)


async def test_zero_credits(client: Client) -> None:
    team_id, key = await make_team(client, credits=0)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.jobs.CreateJob(
            job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
        )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert e.value.details() == "Insufficient credits. Required: 1, Available: 0"
    assert error_info(e.value).reason == "INSUFFICIENT_CREDITS"
    team_id, key = await make_team(client, credits=1)
    await client.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.jobs.CreateJob(
            job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
        )
    assert e.value.details() == "Insufficient credits. Required: 1, Available: 0"


async def test_model_group_access_and_default(sqlite_client: Client) -> None:
    c = sqlite_client
    mine = await make_group(c, [("simulator/a", {"response": "from mine"})])
    other = await make_group(c, [("simulator/b", {})])
    team_id, key = await make_team(c, groups=[mine])
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job.job_id, model_group=other, messages=[user_msg("x")]),
            metadata=bearer(key),
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.value.details() == f"Team '{team_id}' does not have access to model group '{other}'"
    # Seed 004 omits model_group: the team's first group is used.
    r = await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("x")]), metadata=bearer(key)
    )
    assert r.response.content == "from mine" and r.metadata.model_group == mine
    none_id, none_key = await make_team(c, groups=[])
    job2 = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=none_id, job_type="t"), metadata=bearer(none_key)
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job2.job_id, messages=[user_msg("x")]),
            metadata=bearer(none_key),
        )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Another team's job is not found, never shown.
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job.job_id), metadata=bearer(none_key))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.CreateJob(
            job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(none_key)
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bad_call_input(sqlite_client: Client) -> None:
    c = sqlite_client
    team_id, key = await make_team(c)
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    bad = [
        job_pb.LlmCallRequest(job_id=job.job_id),
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("x")] * 257),
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("x")], temperature=5),
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[common_pb2.ChatMessage(role="wizard")]),
    ]
    for req in bad:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.jobs.LlmCall(req, metadata=bearer(key))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.CompleteJob(
            job_pb.CompleteJobRequest(job_id=job.job_id, status="done"), metadata=bearer(key)
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.GetJob(job_pb.GetJobRequest(job_id="../../etc"), metadata=bearer(key))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_create_job_idempotent(client: Client) -> None:
    team_id, key = await make_team(client, credits=5)
    req = job_pb.CreateJobRequest(team_id=team_id, job_type="t", request_id="req-1")
    a, b = await asyncio.gather(
        client.jobs.CreateJob(req, metadata=bearer(key)),
        client.jobs.CreateJob(req, metadata=bearer(key)),
    )
    assert a.job_id == b.job_id
    assert (await balance(client, team_id)).credits_reserved == 1
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.jobs.CreateJob(
            job_pb.CreateJobRequest(team_id=team_id, job_type="other", request_id="req-1"),
            metadata=bearer(key),
        )
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    await assert_ledger_ok(client)


async def test_list_team_jobs(sqlite_client: Client) -> None:
    c = sqlite_client
    team_id, key = await make_team(c, credits=10)
    await run_flow(c, team_id, key)
    await run_flow(c, team_id, key, status="failed")
    await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    lst = await c.jobs.ListTeamJobs(
        job_pb.ListTeamJobsRequest(team_id=team_id), metadata=bearer(key)
    )
    assert lst.total_jobs == 3 and [j.status for j in lst.jobs] == [
        "pending",
        "failed",
        "completed",
    ]
    only = await c.jobs.ListTeamJobs(
        job_pb.ListTeamJobsRequest(team_id=team_id, status="completed", limit=1),
        metadata=bearer(key),
    )
    assert only.total_jobs == 1 and only.jobs[0].costs.credit_applied


async def test_fallbacks(client: Client, upstream: FakeUpstream) -> None:
    c = client
    upstream.set_behavior("m500", status=500, error_message="boom")
    upstream.set_behavior("m429", status=429)
    upstream.set_behavior("m400", status=400, error_message="bad request")
    upstream.set_behavior("good", content="fallback answer")
    base = upstream.base_url
    group = await make_group(
        c,
        [
            ("openai/closed", {"api_base": closed_base_url()}),
            ("openai/m500", {"api_base": base}),
            ("openai/m429", {"api_base": base}),
            (
                "openai/good",
                {"api_base": base, "input_cost_per_token": 0.001, "output_cost_per_token": 0.002},
            ),
        ],
    )
    team_id, key = await make_team(c, groups=[group])
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    r = await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("x")]), metadata=bearer(key)
    )
    assert r.response.content == "fallback answer"
    assert [q.body["model"] for q in upstream.requests] == ["m500", "m429", "good"]
    done = await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job.job_id, status="completed"), metadata=bearer(key)
    )
    # A call that succeeded after fallbacks is a success: the job is charged.
    assert done.costs.credit_applied and done.costs.successful_calls == 1
    assert done.costs.pricing == "priced" and done.costs.total_cost_usd > 0
    async with c.app.db.tx() as conn:
        from sqlalchemy import select

        from service.storage.schema import llm_calls

        attempts = (await conn.execute(select(llm_calls.c.attempts))).scalars().all()
    assert [a["error"] is None for a in attempts[-1]] == [False, False, False, True]
    # No fallback on a client error.
    upstream.requests.clear()
    g400 = await make_group(
        c, [("openai/m400", {"api_base": base}), ("openai/good", {"api_base": base})]
    )
    team2, key2 = await make_team(c, groups=[g400])
    job2 = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team2, job_type="t"), metadata=bearer(key2)
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job2.job_id, messages=[user_msg("x")]),
            metadata=bearer(key2),
        )
    assert e.value.code() == grpc.StatusCode.INTERNAL and "bad request" in e.value.details()
    assert [q.body["model"] for q in upstream.requests] == ["m400"]
    await assert_ledger_ok(c)


async def test_params_and_tools_pass_through(sqlite_client: Client, upstream: FakeUpstream) -> None:
    c = sqlite_client
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q":1}'},
    }
    upstream.set_behavior("tools", tool_calls=[tool_call], content="")
    group = await make_group(c, [("openai/tools", {"api_base": upstream.base_url})])
    team_id, key = await make_team(c, groups=[group])
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    from google.protobuf import struct_pb2

    r = await c.jobs.LlmCall(
        job_pb.LlmCallRequest(
            job_id=job.job_id,
            messages=[user_msg("x")],
            temperature=0.2,
            max_tokens=50,
            top_p=0.9,
            seed=7,
            user="u1",
            stop=struct_pb2.Value(string_value="END"),
            tools=[
                struct(
                    {
                        "type": "function",
                        "function": {"name": "lookup", "parameters": {"type": "object"}},
                    }
                )
            ],
            tool_choice=struct_pb2.Value(string_value="auto"),
            response_format=struct({"type": "json_object"}),
        ),
        metadata=bearer(key),
    )
    body = upstream.requests[-1].body
    assert body["temperature"] == 0.2 and body["max_tokens"] == 50 and body["top_p"] == 0.9
    assert body["seed"] == 7 and body["user"] == "u1" and body["stop"] == "END"
    assert body["tool_choice"] == "auto" and body["response_format"] == {"type": "json_object"}
    assert body["tools"][0]["function"]["name"] == "lookup"
    assert r.response.finish_reason == "tool_calls"
    assert r.response.tool_calls[0]["function"]["name"] == "lookup"


async def test_deadline_bounds_provider_timeout(client: Client, upstream: FakeUpstream) -> None:
    c = client
    upstream.set_behavior("slow", delay_s=5)
    group = await make_group(c, [("openai/slow", {"api_base": upstream.base_url})])
    team_id, key = await make_team(c, groups=[group])
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("x")]),
            metadata=bearer(key),
            timeout=1.0,
        )
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2.0
    await asyncio.sleep(0.2)
    got = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job.job_id), metadata=bearer(key))
    # The failed call is recorded; the job is still open for the client to
    # complete (it will not be charged).
    assert got.calls[0].status == "failed"
    done = await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job.job_id, status="completed"), metadata=bearer(key)
    )
    assert not done.costs.credit_applied
    await assert_ledger_ok(c)


async def test_sweeper_expires_and_releases(db_url: str) -> None:
    from tests.conftest import start_client, stop_client

    c = await start_client(db_url, job_timeout=0.2)
    try:
        team_id, key = await make_team(c, credits=2)
        job = await c.jobs.CreateJob(
            job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
        )
        assert (await balance(c, team_id)).credits_remaining == 1
        await asyncio.sleep(0.3)
        assert await c.app.sweep_once() == 1
        got = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job.job_id), metadata=bearer(key))
        assert got.status == "expired" and not got.credit_applied
        assert (await balance(c, team_id)).credits_remaining == 2
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.jobs.CompleteJob(
                job_pb.CompleteJobRequest(job_id=job.job_id, status="completed"),
                metadata=bearer(key),
            )
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        tx = await c.credits.ListCreditTransactions(
            cr_pb.ListCreditTransactionsRequest(team_id=team_id), metadata=admin()
        )
        assert tx.transactions[0].transaction_type == "expiry"
        await assert_ledger_ok(c)
    finally:
        await stop_client(c)


async def test_create_and_call(client: Client) -> None:
    c = client
    team_id, key = await make_team(client, credits=3)
    req = job_pb.CreateAndCallRequest(
        team_id=team_id, job_type="oneshot", messages=[user_msg("hello")], request_id="cc-1"
    )
    r = await c.jobs.CreateAndCall(req, metadata=bearer(key))
    assert r.status == "completed" and r.costs.credit_applied and r.costs.credits_remaining == 2
    assert r.response.content and r.call_id
    again = await c.jobs.CreateAndCall(req, metadata=bearer(key))
    assert (again.job_id, again.call_id, again.response.content) == (
        r.job_id,
        r.call_id,
        r.response.content,
    )
    assert (await balance(c, team_id)).credits_used == 1
    bad = await make_group(c, [("simulator/bad", {"failure_rate": 1, "fail_with": 503})])
    team2, key2 = await make_team(c, credits=1, groups=[bad])
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.CreateAndCall(
            job_pb.CreateAndCallRequest(team_id=team2, job_type="t", messages=[user_msg("x")]),
            metadata=bearer(key2),
        )
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert (await balance(c, team2)).credits_remaining == 1
    await assert_ledger_ok(c)


async def test_a_team_key_cannot_complete_another_teams_job(client: Client) -> None:
    """The ownership check rides on the complete's claim (no read before it): another team's key
    gets NOT_FOUND, the job stays open with its credit reserved, and its owner completes it."""
    owner_id, owner_key = await make_team(client, credits=3)
    _, other_key = await make_team(client, credits=3)
    job = await client.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=owner_id, job_type="t"), metadata=bearer(owner_key)
    )
    for status in ("completed", "failed"):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await client.jobs.CompleteJob(
                job_pb.CompleteJobRequest(job_id=job.job_id, status=status),
                metadata=bearer(other_key),
            )
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(e.value).reason == "JOB_NOT_FOUND"
    bal = await balance(client, owner_id)
    assert (bal.credits_reserved, bal.credits_remaining) == (1, 2)
    got = await client.jobs.GetJob(job_pb.GetJobRequest(job_id=job.job_id), metadata=admin())
    assert got.status == "pending"
    done = await client.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job.job_id, status="completed"), metadata=bearer(owner_key)
    )
    assert (done.status, done.costs.credits_remaining) == ("completed", 2)
    assert (await audit(client.app.db)).ok
