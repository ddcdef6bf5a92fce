"""Creating and completing jobs runs on the raw driver (storage/fastpath.py `create_job`,
`complete_job`) when the happy path applies, and on SQLAlchemy otherwise. Both must leave
exactly the same rows and give the same answers: the same scenario is played once with the fast
path and once without it, on SQLite and on PostgreSQL, and the two databases' jobs (raw JSON
text and NULLs included), ledger and team totals are compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Text, cast, select

from saas_llm.v1 import team_service_pb2 as team_pb
from service.domain.errors import AlreadyExists, FailedPrecondition, InsufficientCredits
from service.storage.schema import credit_transactions, jobs, teams
from tests.conftest import Client, admin, fresh_database, start_client, stop_client
from tests.flows import make_team
from tests.storage.test_hot_path import _call

# Columns that differ between two runs by construction (ids, clocks).
_VOLATILE = {"id", "job_id", "transaction_id", "team_id", "created_at", "updated_at"}
_VOLATILE |= {"completed_at", "request_id"}


async def _scenario(c: Client) -> list[Any]:
    """Every way a job is created and completed; returns what the repository answered."""
    repo = c.app.jobs_repo
    team_id, _ = await make_team(c, credits=7)
    answers: list[Any] = []

    async def create(**kw: Any) -> str:
        args: dict[str, Any] = {
            "team_id": team_id,
            "user_id": "u",
            "job_type": "t",
            "metadata": {"k": [1, "two"]},
            "request_id": None,
            "request_hash": None,
        }
        args.update(kw)
        job, replayed = await repo.create(**args)
        answers.append((job.status, job.metadata, job.credit_applied, replayed))
        return job.job_id

    async def complete(job_id: str, status: str, *args: Any, **kw: Any) -> None:
        job, replayed = await repo.complete(job_id, status, *args, **kw)
        times = [job.completed_at, job.created_at, *(x.created_at for x in job.calls)]
        answers.append(
            (
                all(t is not None and t.tzinfo is not None for t in times),
                job.status,
                job.result_metadata,
                job.error_message,
                job.credit_applied,
                job.credits_remaining_after,
                [(x.status, x.tokens) for x in job.calls],
                job.replay_response,
                replayed,
            )
        )

    # Charged: completed without a failed call.
    charged = await create()
    await repo.record_call(_call(charged, team_id))
    await complete(charged, "completed", {"out": 1}, None)
    # The same complete again is a replay that moves no credit; another status is refused.
    await complete(charged, "completed", {"out": 1}, None)
    with pytest.raises(FailedPrecondition):
        await repo.complete(charged, "failed", {}, "late")
    # Released: a failed call, or a failed job.
    with_failure = await create()
    await repo.record_call(_call(with_failure, team_id, status="failed"))
    await complete(with_failure, "completed", {}, None)
    failed = await create()
    await complete(failed, "failed", {"why": "x"}, "it broke")
    # With a stored answer (create-and-call with a request_id).
    answered = await create(request_id="rid-1", request_hash="h1")
    await complete(answered, "completed", {}, None, replay_response={"content": "hi"})
    # The same request_id: the first job again; another body: refused.
    assert await create(request_id="rid-1", request_hash="h1") == answered
    with pytest.raises(AlreadyExists, match="already used"):
        await create(request_id="rid-1", request_hash="other")
    # Out of credits (7 allocated, 2 used: 5 more jobs stay open), then suspended.
    for _ in range(5):
        await create()
    with pytest.raises(InsufficientCredits):
        await create()
    await c.teams.SuspendTeam(
        team_pb.SuspendTeamRequest(team_id=team_id, reason="test"), metadata=admin()
    )
    with pytest.raises(FailedPrecondition, match="suspended"):
        await create()
    answers.append(await _state(c, team_id))
    return answers


async def _state(c: Client, team_id: str) -> dict[str, Any]:
    def clean(rows: Any) -> list[dict[str, Any]]:
        return [{k: v for k, v in r._mapping.items() if k not in _VOLATILE} for r in rows]

    async with c.app.db.tx() as conn:
        team = (await conn.execute(select(teams).where(teams.c.team_id == team_id))).one()
        job_rows = (
            await conn.execute(
                select(jobs).where(jobs.c.team_id == team_id).order_by(jobs.c.created_at)
            )
        ).all()
        # As stored: JSON text (None may be SQL NULL or JSON null), and which columns are NULL.
        raw_rows = (
            await conn.execute(
                select(
                    *(cast(jobs.c[n], Text) for n in ("metadata", "result_metadata")),
                    cast(jobs.c.replay_response, Text),
                    jobs.c.error_message.is_(None),
                    jobs.c.completed_at.is_(None),
                )
                .where(jobs.c.team_id == team_id)
                .order_by(jobs.c.created_at)
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
        "jobs": clean(job_rows),
        "raw": [tuple(r) for r in raw_rows],
        "ledger": clean(ledger_rows),
    }


def _count_served(fast: Any) -> dict[str, int]:
    """Count the creates and completes that the fast path served itself."""
    served = {"create": 0, "complete": 0}
    create_job, complete_job = fast.create_job, fast.complete_job

    async def counting_create(*args: Any) -> bool:
        done: bool = await create_job(*args)
        served["create"] += done
        return done

    async def counting_complete(*args: Any) -> Any:
        done = await complete_job(*args)
        served["complete"] += done is not None
        return done

    fast.create_job, fast.complete_job = counting_create, counting_complete
    return served


async def test_fast_and_sqlalchemy_paths_write_the_same_rows(db_kind: str, tmp_path: Path) -> None:
    results = []
    for use_fast in (True, False):
        c = await start_client(await fresh_database(db_kind, tmp_path))
        fast = c.app.db.fast
        assert fast is not None
        served = _count_served(fast)
        try:
            if not use_fast:
                c.app.db.fast = None
            results.append(await _scenario(c))
        finally:
            c.app.db.fast = fast
            await stop_client(c)
        if use_fast:
            # The fast path served every happy case (9 jobs created, 4 completed) and nothing else.
            assert served == {"create": 9, "complete": 4}
    with_fast, without = results
    state = with_fast[-1]
    # 2 charged; the suspension failed the 5 open jobs and released their credits.
    assert state["totals"] == (7, 2, 0)
    kinds = [e["transaction_type"] for e in state["ledger"]]
    assert kinds.count("reservation") == 9 and kinds.count("deduction") == 2
    assert kinds.count("release") == 7 and kinds[0] == "allocation"
    assert with_fast == without
