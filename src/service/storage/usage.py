"""Usage aggregates over a period, computed by the database: one GROUP BY over
the covering index ix_jobs_usage (team, month range), never rows in Python.
Job totals (tokens, cost) are kept on the job by each call's record."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import FromClause, and_, case, func, select

from service.domain.models import UsageRow
from service.storage.database import Database
from service.storage.schema import jobs, teams
from service.storage.sql import one_of


class UsageRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def by_team_and_type(
        self,
        start: datetime,
        end: datetime,
        *,
        team_id: str | None = None,
        org_id: str | None = None,
    ) -> dict[tuple[str, str], UsageRow]:
        """{(team_id, job_type): aggregates} of jobs created in [start, end)."""
        cond = and_(jobs.c.created_at >= start, jobs.c.created_at < end)
        base: FromClause = jobs
        if team_id is not None:
            cond = and_(cond, jobs.c.team_id == team_id)
        if org_id is not None:
            base = jobs.join(teams, teams.c.team_id == jobs.c.team_id)
            cond = and_(cond, teams.c.organization_id == org_id)
        charged = and_(jobs.c.status == "completed", jobs.c.credit_applied)
        ended_badly = one_of(jobs.c.status, ("failed", "expired"))
        keys = (jobs.c.team_id, jobs.c.job_type)
        query = (
            select(
                *keys,
                func.count(),
                func.coalesce(func.sum(case((charged, 1), else_=0)), 0),
                func.coalesce(func.sum(case((ended_badly, 1), else_=0)), 0),
                func.coalesce(func.sum(jobs.c.total_cost_usd), 0.0),
                func.coalesce(func.sum(jobs.c.total_tokens), 0),
            )
            .select_from(base)
            .where(cond)
            .group_by(*keys)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        return {
            (t, jt): UsageRow(
                total_jobs=int(total),
                successful_jobs=int(ok),
                failed_jobs=int(failed),
                total_cost_usd=float(cost or 0),
                total_tokens=int(tokens or 0),
            )
            for t, jt, total, ok, failed, cost, tokens in rows
        }
