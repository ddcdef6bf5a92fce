"""Money invariants under concurrency: for every team, ledger == team row,
available >= 0, exactly one charge per successful job, never more charges than
credits."""

from __future__ import annotations

import asyncio
import random

import grpc

from saas_llm.v1 import credit_service_pb2 as cr_pb
from saas_llm.v1 import job_service_pb2 as job_pb
from service.audit import audit
from tests.conftest import Client, admin, bearer
from tests.flows import make_group, make_team, user_msg


async def _flow(c: Client, team_id: str, key: str, group: str, i: int) -> str:
    """create -> call -> complete; returns the outcome."""
    md = bearer(key)
    try:
        job = await c.jobs.CreateJob(
            job_pb.CreateJobRequest(team_id=team_id, job_type="bulk"), metadata=md
        )
    except grpc.aio.AioRpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
        assert e.details().startswith("Insufficient credits. Required: 1, Available: ")
        return "refused"
    try:
        await c.jobs.LlmCall(
            job_pb.LlmCallRequest(
                job_id=job.job_id, model_group=group, messages=[user_msg(f"m{i}")]
            ),
            metadata=md,
        )
        status = "completed" if i % 5 else "failed"
    except grpc.aio.AioRpcError:
        status = "completed"  # a failed call: completing still must not charge
    # Duplicate completes race each other: only one may settle the credit.
    results = await asyncio.gather(
        *[
            c.jobs.CompleteJob(
                job_pb.CompleteJobRequest(job_id=job.job_id, status=status), metadata=md
            )
            for _ in range(2)
        ],
        return_exceptions=True,
    )
    charged = {r.costs.credit_applied for r in results if not isinstance(r, BaseException)}
    assert len(charged) == 1, results
    return "charged" if charged.pop() else "released"


async def test_200_concurrent_flows_on_20_credits(client: Client) -> None:
    c = client
    group = await make_group(c, [("simulator/flaky", {"failure_rate": 0.1, "latency_ms": 2})])
    team_id, key = await make_team(c, credits=20, groups=[group])
    outcomes = await asyncio.gather(*[_flow(c, team_id, key, group, i) for i in range(200)])
    charged = outcomes.count("charged")
    bal = await c.credits.GetCreditBalance(
        cr_pb.GetCreditBalanceRequest(team_id=team_id), metadata=admin()
    )
    assert bal.credits_used == charged <= 20
    assert bal.credits_reserved == 0 and bal.credits_remaining == 20 - charged >= 0
    report = await audit(c.app.db)
    assert report.ok, report.violations
    # Refill and drain exactly: with every flow succeeding, exactly 20 charge.
    ok_group = await make_group(c, [("simulator/ok", {})])
    team2, key2 = await make_team(c, credits=20, groups=[ok_group])
    rnd = random.Random(7)
    order = list(range(1, 200))
    rnd.shuffle(order)
    outcomes = await asyncio.gather(
        *[_flow(c, team2, key2, ok_group, i if i % 5 else i + 1) for i in order]
    )
    assert outcomes.count("charged") == 20 and outcomes.count("refused") == 179
    bal = await c.credits.GetCreditBalance(
        cr_pb.GetCreditBalanceRequest(team_id=team2), metadata=admin()
    )
    assert (bal.credits_used, bal.credits_reserved, bal.credits_remaining) == (20, 0, 0)
    report = await audit(c.app.db)
    assert report.ok, report.violations
