"""Each money operation has one writer per dialect (storage/money_sqlite.py,
storage/money_postgres.py). Both must leave the same rows and give the same answers: one
scenario covering every way a job is created, charged, released, replayed, refused, expired and
ended by a suspension, and credits added, is played on SQLite and on PostgreSQL through the
domain services, and the two databases' jobs (JSON values and SQL NULLs included), calls, ledger
and team totals are compared, besides the expectations written out below."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.domain.errors import AlreadyExists, FailedPrecondition, InsufficientCredits
from service.domain.ports import NewCall
from service.domain.principal import ADMIN
from service.storage.rows import utcnow
from service.storage.schema import credit_transactions, jobs, llm_calls, teams
from tests.conftest import Client, fresh_database, start_client, stop_client
from tests.flows import make_team

# Columns that differ between two runs by construction (ids, clocks).
_VOLATILE = {"id", "job_id", "transaction_id", "team_id", "call_id", "request_id"}
_VOLATILE |= {"created_at", "updated_at", "completed_at"}


def _call(job_id: str, team_id: str, status: str = "success") -> NewCall:
    return NewCall(
        job_id=job_id,
        team_id=team_id,
        model_group="g",
        model="openai/m",
        purpose="p",
        status=status,
        streamed=False,
        prompt_tokens=3,
        completion_tokens=4,
        usage_estimated=False,
        cost_usd=0.25 if status == "success" else None,
        latency_ms=5,
        ttft_ms=None,
        error=None if status == "success" else "boom",
        attempts=[{"model": "openai/m", "error": None, "latency_ms": 5}],
    )


async def _scenario(c: Client) -> list[Any]:
    """Every money operation; returns what the domain answered."""
    svc, repo = c.app.jobs, c.app.jobs_repo
    team_id, _ = await make_team(c, credits=9)
    answers: list[Any] = []

    async def create(request_id: str = "", metadata: Any = None) -> str:
        job, replayed = await svc.create(
            ADMIN,
            team_id=team_id,
            user_id="u",
            job_type="t",
            metadata={"k": [1, "two"]} if metadata is None else metadata,
            request_id=request_id,
        )
        answers.append((job.status, job.metadata, job.credit_applied, replayed))
        return job.job_id

    async def complete(job_id: str, status: str, meta: Any = None, err: str = "") -> None:
        job, costs = await svc.complete(ADMIN, job_id, status, meta or {}, err)
        times = [job.completed_at, job.created_at, *(x.created_at for x in job.calls)]
        answers.append(
            (
                all(t is not None and t.tzinfo is not None for t in times),
                job.status,
                job.result_metadata,
                job.error_message,
                job.credit_applied,
                job.credits_remaining_after,
                [(x.status, x.tokens, x.cost_usd) for x in job.calls],
                costs,
            )
        )

    # Charged: completed without a failed call.
    charged = await create()
    await repo.record_call(_call(charged, team_id))
    await complete(charged, "completed", {"out": 1})
    # The same complete again is a replay that moves no credit; another status is refused.
    await complete(charged, "completed", {"out": 1})
    with pytest.raises(FailedPrecondition, match="already completed"):
        await svc.complete(ADMIN, charged, "failed", {}, "late")
    # Released: a failed call, or a failed job.
    with_failure = await create()
    await repo.record_call(_call(with_failure, team_id, status="failed"))
    await complete(with_failure, "completed")
    failed = await create()
    await complete(failed, "failed", {"why": "x"}, "it broke")
    # A request_id: the first job again; another body: refused.
    once = await create(request_id="rid-1")
    assert await create(request_id="rid-1") == once
    with pytest.raises(AlreadyExists, match="already used"):
        await create(request_id="rid-1", metadata={"other": True})
    # Expired by the sweeper.
    assert await repo.expire_stale_jobs(utcnow() + timedelta(seconds=1)) == 1
    # Out of credits (9 allocated, 1 used: 8 more jobs fit), an addition, then suspended.
    for _ in range(8):
        await create()
    with pytest.raises(InsufficientCredits, match="Required: 1, Available: 0"):
        await create()
    entry, credits = await c.app.credits.add(ADMIN, team_id, 2, "top-up", {"po": 7}, "add-1")
    answers.append((entry.credits_amount, entry.balance_after, entry.reason, credits))
    replay, _ = await c.app.credits.add(ADMIN, team_id, 2, "top-up", {"po": 7}, "add-1")
    assert replay.transaction_id == entry.transaction_id
    await create()
    await c.app.tenancy.set_team_status(ADMIN, team_id, "suspended", "test")
    with pytest.raises(FailedPrecondition, match="suspended"):
        await create()
    answers.append(await _state(c, team_id))
    return answers


async def _state(c: Client, team_id: str) -> dict[str, Any]:
    def clean(rows: Any) -> list[dict[str, Any]]:
        return [{k: v for k, v in r._mapping.items() if k not in _VOLATILE} for r in rows]

    async with c.app.db.read() as conn:
        team = (await conn.execute(select(teams).where(teams.c.team_id == team_id))).one()
        job_rows = (
            await conn.execute(
                select(jobs).where(jobs.c.team_id == team_id).order_by(jobs.c.created_at)
            )
        ).all()
        # Which columns are SQL NULL (JSON null is stored as the JSON value null).
        nulls = (
            await conn.execute(
                select(
                    jobs.c.result_metadata.is_(None),
                    jobs.c.replay_response.is_(None),
                    jobs.c.error_message.is_(None),
                    jobs.c.completed_at.is_(None),
                )
                .where(jobs.c.team_id == team_id)
                .order_by(jobs.c.created_at)
            )
        ).all()
        call_rows = (
            await conn.execute(
                select(llm_calls).where(llm_calls.c.team_id == team_id).order_by(llm_calls.c.id)
            )
        ).all()
        ledger_rows = (
            await conn.execute(
                select(credit_transactions)
                .where(credit_transactions.c.team_id == team_id)
                .order_by(credit_transactions.c.id)
            )
        ).all()
    m = team._mapping
    return {
        "totals": (m["credits_allocated"], m["credits_used"], m["credits_reserved"]),
        "status": m["status"],
        "jobs": clean(job_rows),
        "nulls": [tuple(bool(x) for x in r) for r in nulls],
        "calls": clean(call_rows),
        "ledger": clean(ledger_rows),
    }


@pytest.mark.postgres
async def test_both_writers_leave_the_same_rows(tmp_path: Path) -> None:
    results = []
    for kind in ("sqlite", "postgres"):
        c = await start_client(await fresh_database(kind, tmp_path))
        try:
            results.append(await _scenario(c))
        finally:
            await stop_client(c)
    on_sqlite, on_postgres = results
    state = on_sqlite[-1]
    # allocated 9 + 2; 1 charged; nothing reserved after the suspension.
    assert state["totals"] == (11, 1, 0)
    assert state["status"] == "suspended"
    kinds = [r["transaction_type"] for r in state["ledger"]]
    assert kinds[:2] == ["allocation", "reservation"] and kinds.count("deduction") == 1
    assert kinds.count("expiry") == 1 and kinds.count("addition") == 1
    # 13 jobs: 1 charged, 2 released, 1 expired, 9 ended by the suspension.
    assert kinds.count("reservation") == 13 and kinds.count("release") == 11
    assert [r["reason"] for r in state["ledger"]][-1] == "Job t ended: team suspended"
    # A completed job without a stored answer holds JSON null there, not SQL NULL.
    assert state["jobs"][0]["replay_response"] is None and not state["nulls"][0][1]
    assert on_sqlite == on_postgres
