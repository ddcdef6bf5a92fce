"""Usage aggregates over a period, computed by the database (GROUP BY over
indexed columns), never by loading rows into Python."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, FromClause, and_, case, func, select

from service.domain.models import UsageRow
from service.storage.db import Database
from service.storage.schema import jobs, llm_calls, teams


def _job_counts() -> tuple[ColumnElement[Any], ...]:
    return (
        func.count(),
        func.coalesce(
            func.sum(case((and_(jobs.c.status == "completed", jobs.c.credit_applied), 1), else_=0)),
            0,
        ),
        func.coalesce(func.sum(case((jobs.c.status.in_(("failed", "expired")), 1), else_=0)), 0),
    )


def _call_sums() -> tuple[ColumnElement[Any], ...]:
    return (
        func.coalesce(func.sum(llm_calls.c.cost_usd), 0.0),
        func.coalesce(func.sum(llm_calls.c.prompt_tokens + llm_calls.c.completion_tokens), 0),
    )


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
        keys = (jobs.c.team_id, jobs.c.job_type)
        async with self.db.tx() as conn:
            counts = (
                await conn.execute(
                    select(*keys, *_job_counts()).select_from(base).where(cond).group_by(*keys)
                )
            ).all()
            sums = (
                await conn.execute(
                    select(*keys, *_call_sums())
                    .select_from(base.join(llm_calls, llm_calls.c.job_id == jobs.c.job_id))
                    .where(cond)
                    .group_by(*keys)
                )
            ).all()
        money: dict[tuple[str, str], tuple[float, int]] = defaultdict(lambda: (0.0, 0))
        for t, jt, cost, tokens in sums:
            money[(t, jt)] = (float(cost or 0), int(tokens or 0))
        out: dict[tuple[str, str], UsageRow] = {}
        for t, jt, total, ok, failed in counts:
            cost, tokens = money[(t, jt)]
            out[(t, jt)] = UsageRow(
                total_jobs=int(total),
                successful_jobs=int(ok),
                failed_jobs=int(failed),
                total_cost_usd=cost,
                total_tokens=tokens,
            )
        return out
