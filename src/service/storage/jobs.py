"""Jobs and their LLM calls (domain/ports.py JobStore). The writes that move credits or record
a call are the dialect's money writer (storage/money.py); this module reads, and keeps the
job's metadata."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update

from service.domain.models import LIMIT_FIELDS, OPEN_STATUSES, CallRecord, Job, JobRef
from service.domain.ports import JobClaim, NewCall, NewJob
from service.storage.database import Database
from service.storage.money import Money
from service.storage.rows import call_of, job_of, limits_of, new_id, utcnow
from service.storage.schema import jobs, llm_calls, teams
from service.storage.sql import in_list, one_of, prepared
from service.storage.statements import SELECT_CALLS, SELECT_JOB

# What every LLM call checks first, with what the per-job bounds are checked against: the
# job's counts and its team's limits, in one primary-key read (a join on the team's key), so that
# the bounds cost no round trip and a PATCH of the limits applies at once on every replica.
_JOB_REF = prepared(
    select(
        jobs.c.team_id,
        jobs.c.status,
        jobs.c.calls_admitted,
        jobs.c.total_tokens,
        jobs.c.total_cost_usd,
        *(teams.c[f] for f in LIMIT_FIELDS),
    )
    .join(teams, teams.c.team_id == jobs.c.team_id)
    .where(jobs.c.job_id == bindparam("p_job_id"))
)
_BY_REQUEST = prepared(
    select(jobs).where(
        jobs.c.team_id == bindparam("p_team_id"), jobs.c.request_id == bindparam("p_request_id")
    )
)
_TEAM_REMAINING = prepared(
    select(teams.c.credits_allocated - teams.c.credits_used - teams.c.credits_reserved).where(
        teams.c.team_id == bindparam("p_team_id")
    )
)
_LOCK_METADATA = prepared(
    select(jobs.c.status, jobs.c.metadata)
    .where(jobs.c.job_id == bindparam("p_job_id"))
    .with_for_update()
)
_SET_METADATA = prepared(update(jobs).where(jobs.c.job_id == bindparam("p_job_id")))
# The gauges the job sweeper refreshes (service/metrics.py): open jobs through
# ix_jobs_status_updated_at, reserved credits summed over teams (few rows).
_OPEN_TOTALS = prepared(
    select(
        select(func.count())
        .select_from(jobs)
        .where(one_of(jobs.c.status, OPEN_STATUSES))
        .scalar_subquery(),
        select(func.coalesce(func.sum(teams.c.credits_reserved), 0)).scalar_subquery(),
    )
)
_CALLS_OF_JOBS = prepared(
    select(llm_calls).where(in_list(llm_calls.c.job_id, "p_job_ids")).order_by(llm_calls.c.id)
)


class JobRepository:
    def __init__(self, db: Database, money: Money) -> None:
        self.db = db
        self.money = money

    async def create_job(self, job: NewJob) -> bool:
        return await self.money.create_job(job)

    async def job_by_request(self, team_id: str, request_id: str) -> tuple[Job, str | None] | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(_BY_REQUEST, {"p_team_id": team_id, "p_request_id": request_id})
            ).first()
        if row is None:
            return None
        m = row._mapping
        return job_of(m), m["request_hash"]

    async def get_job(self, job_id: str, *, with_calls: bool = True) -> Job | None:
        key = {"p_job_id": job_id}
        async with self.db.read() as conn:
            row = (await conn.execute(SELECT_JOB, key)).first()
            if row is None:
                return None
            calls: list[CallRecord] = []
            if with_calls:
                calls = [call_of(r._mapping) for r in (await conn.execute(SELECT_CALLS, key))]
        return job_of(row._mapping, calls)

    async def job_ref(self, job_id: str) -> JobRef | None:
        async with self.db.read() as conn:
            row = (await conn.execute(_JOB_REF, {"p_job_id": job_id})).first()
        if row is None:
            return None
        return JobRef(
            job_id=job_id,
            team_id=row[0],
            status=row[1],
            calls_admitted=int(row[2]),
            total_tokens=int(row[3]),
            total_cost_usd=float(row[4]),
            limits=limits_of(row._mapping),
        )

    async def admit_call(self, job_id: str, max_calls: int) -> bool:
        return await self.money.admit_call(job_id, max_calls)

    async def record_call(self, call: NewCall) -> CallRecord:
        now = utcnow()
        call_id = new_id()
        values = {
            "call_id": call_id,
            "job_id": call.job_id,
            "team_id": call.team_id,
            "model_group": call.model_group,
            "model": call.model,
            "purpose": call.purpose,
            "status": call.status,
            "streamed": call.streamed,
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": call.completion_tokens,
            "usage_estimated": call.usage_estimated,
            "cost_usd": call.cost_usd,
            "latency_ms": call.latency_ms,
            "ttft_ms": call.ttft_ms,
            "error": call.error,
            "attempts": call.attempts,
            "created_at": now,
        }
        await self.money.record_call(values)
        return CallRecord(
            call_id=call_id,
            job_id=call.job_id,
            model_group=call.model_group,
            model=call.model,
            purpose=call.purpose,
            status=call.status,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            cost_usd=call.cost_usd,
            latency_ms=call.latency_ms,
            error=call.error,
            created_at=now,
        )

    async def complete_job(self, claim: JobClaim) -> Job | None:
        done = await self.money.complete_job(claim, utcnow())
        if done is None:
            return None
        row, calls = done
        return job_of(row, [call_of(c) for c in calls])

    async def update_job_metadata(
        self, job_id: str, merge: Callable[[str, dict[str, Any]], dict[str, Any]]
    ) -> Job | None:
        # The row is locked (FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on SQLite) so that
        # concurrent patches do not lose each other's keys.
        key = {"p_job_id": job_id}
        async with self.db.tx() as conn:
            row = (await conn.execute(_LOCK_METADATA, key)).first()
            if row is None:
                return None
            merged = merge(row[0], dict(row[1] or {}))
            await conn.execute(_SET_METADATA, {**key, "metadata": merged, "updated_at": utcnow()})
        return await self.get_job(job_id)

    async def expire_stale_jobs(self, cutoff: datetime, batch: int = 100) -> int:
        return await self.money.expire_stale_jobs(cutoff, utcnow(), batch)

    async def list_team_jobs(
        self, team_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[int, list[Job]]:
        cond = jobs.c.team_id == team_id
        if status:
            cond = and_(cond, jobs.c.status == status)
        async with self.db.read() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(jobs).where(cond))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(jobs)
                    .where(cond)
                    .order_by(jobs.c.created_at.desc(), jobs.c.job_id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            ids = [r._mapping["job_id"] for r in rows]
            by_job: dict[str, list[CallRecord]] = defaultdict(list)
            if ids:
                for r in await conn.execute(_CALLS_OF_JOBS, {"p_job_ids": ids}):
                    call = call_of(r._mapping)
                    by_job[call.job_id].append(call)
        return int(total), [job_of(r._mapping, by_job[r._mapping["job_id"]]) for r in rows]

    async def open_totals(self) -> tuple[int, int]:
        """(jobs open, credits reserved), all teams together, in one statement."""
        async with self.db.read() as conn:
            row = (await conn.execute(_OPEN_TOTALS)).first()
        assert row is not None  # an aggregate has one row
        return int(row[0]), int(row[1])

    async def team_remaining(self, team_id: str) -> int | None:
        async with self.db.read() as conn:
            row = (await conn.execute(_TEAM_REMAINING, {"p_team_id": team_id})).first()
        return None if row is None else int(row[0])


__all__ = ["JobRepository"]
