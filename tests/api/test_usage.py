"""Usage reports (seed 003 "Check Team Usage") on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from saas_llm.v1 import job_service_pb2 as job_pb
from saas_llm.v1 import organization_service_pb2 as org_pb
from saas_llm.v1 import team_service_pb2 as team_pb
from tests.conftest import Client, admin, bearer
from tests.flows import make_group, make_team, run_flow, uid


async def test_team_and_org_usage(client: Client) -> None:
    c = client
    priced = await make_group(
        c, [("simulator/p", {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002})]
    )
    org = uid("org")
    team_id, key = await make_team(c, credits=10, groups=[priced], org=org)
    other, other_key = await make_team(c, credits=10, groups=[priced], org=org)
    for _ in range(3):
        await run_flow(c, team_id, key)
    await run_flow(c, team_id, key, status="failed")
    await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="chat_session"), metadata=bearer(key)
    )
    await run_flow(c, other, other_key)
    period = datetime.now(UTC).strftime("%Y-%m")
    u = await c.teams.GetTeamUsage(
        team_pb.GetTeamUsageRequest(team_id=team_id, period=period), metadata=bearer(key)
    )
    assert u.period == period
    s = u.summary
    assert (s.total_jobs, s.successful_jobs, s.failed_jobs) == (5, 3, 1)
    assert s.total_tokens > 0 and s.total_cost_usd > 0
    assert s.avg_cost_per_job == pytest.approx(s.total_cost_usd / 5, rel=1e-3)
    assert set(u.job_types) == {"flow", "chat_session"}
    assert u.job_types["flow"].count == 4 and u.job_types["chat_session"].count == 1
    assert u.job_types["chat_session"].cost_usd == 0
    empty = await c.teams.GetTeamUsage(
        team_pb.GetTeamUsageRequest(team_id=team_id, period="2001-01"), metadata=admin()
    )
    assert empty.summary.total_jobs == 0 and not empty.job_types
    o = await c.orgs.GetOrganizationUsage(
        org_pb.GetOrganizationUsageRequest(organization_id=org, period=period), metadata=admin()
    )
    assert (
        o.summary.total_jobs == 6
        and o.teams[team_id].total_jobs == 5
        and o.teams[other].total_jobs == 1
    )
    for bad in ("", "2025-13", "25-10", "2025-1", "abcd-ef"):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.teams.GetTeamUsage(
                team_pb.GetTeamUsageRequest(team_id=team_id, period=bad), metadata=admin()
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.teams.GetTeamUsage(
            team_pb.GetTeamUsageRequest(team_id=other, period=period), metadata=bearer(key)
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
