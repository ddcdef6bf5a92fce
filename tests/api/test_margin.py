"""The team margin report (issue 16 item 3): credits charged at $0.10 beside provider cost,
per job type, on both databases, with provider costs known from the fake upstream."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from saas_llm.v1 import common_pb2
from saas_llm.v1 import job_service_pb2 as job_pb
from saas_llm.v1 import openai_service_pb2 as oa_pb
from saas_llm.v1 import openai_service_pb2_grpc as oa_grpc
from saas_llm.v1 import team_service_pb2 as team_pb
from tests.conftest import Client, admin, bearer
from tests.flows import make_group, make_team, uid, user_msg
from tests.support.upstream import FakeUpstream

# 10 prompt tokens x $0.001 + 5 completion tokens x $0.002 = $0.02 per call.
PRICES = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}


async def _job(c: Client, team_id: str, key: str, job_type: str, calls: int, status: str) -> None:
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type=job_type), metadata=bearer(key)
    )
    for _ in range(calls):
        await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("hi")]),
            metadata=bearer(key),
        )
    await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job.job_id, status=status), metadata=bearer(key)
    )


def _row(m: team_pb.JobTypeMargin) -> tuple[int, int, float, float, float]:
    return (m.jobs, m.credits_charged, m.revenue_usd, m.provider_cost_usd, m.margin_usd)


async def test_team_margin_per_job_type(client: Client, upstream: FakeUpstream) -> None:
    c = client
    model = "margin-priced"
    upstream.set_behavior(model, prompt_tokens=10, completion_tokens=5)
    group = await make_group(c, [(f"openai/{model}", {"api_base": upstream.base_url, **PRICES})])
    team_id, key = await make_team(c, credits=10, groups=[group])
    # flow: two charged jobs and a failed one (not charged, its call's cost still counts).
    await _job(c, team_id, key, "flow", 1, "completed")
    await _job(c, team_id, key, "flow", 1, "completed")
    await _job(c, team_id, key, "flow", 1, "failed")
    # summarize: one charged job of two calls.
    await _job(c, team_id, key, "summarize", 2, "completed")
    # A direct (OpenAI-compatible) call: its cost is reported apart, not in the margin.
    await oa_grpc.OpenAIServiceStub(c.channel).CreateChatCompletion(
        oa_pb.ChatCompletionRequest(
            model=group, messages=[common_pb2.ChatMessage(role="user", text="hi")], max_tokens=5
        ),
        metadata=bearer(key),
    )
    period = datetime.now(UTC).strftime("%Y-%m")
    m = await c.teams.GetTeamMargin(
        team_pb.GetTeamMarginRequest(team_id=team_id, period=period), metadata=admin()
    )
    assert (m.team_id, m.period) == (team_id, period)
    assert set(m.job_types) == {"flow", "summarize"}
    assert _row(m.job_types["flow"]) == (3, 2, 0.2, 0.06, 0.14)
    assert _row(m.job_types["summarize"]) == (1, 1, 0.1, 0.04, 0.06)
    assert _row(m.total) == (4, 3, 0.3, 0.1, 0.2)
    assert m.direct_cost_usd == 0.02

    empty = await c.teams.GetTeamMargin(
        team_pb.GetTeamMarginRequest(team_id=team_id, period="2001-01"), metadata=admin()
    )
    assert not empty.job_types and _row(empty.total) == (0, 0, 0.0, 0.0, 0.0)
    cases = [
        (team_id, period, bearer(key), grpc.StatusCode.PERMISSION_DENIED),
        (team_id, "2025-13", admin(), grpc.StatusCode.INVALID_ARGUMENT),
        (uid("nope"), period, admin(), grpc.StatusCode.NOT_FOUND),
    ]
    for team, p, md, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.teams.GetTeamMargin(
                team_pb.GetTeamMarginRequest(team_id=team, period=p), metadata=md
            )
        assert e.value.code() == code
