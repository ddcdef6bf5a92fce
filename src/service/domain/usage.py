"""Usage reports of seed 003 "Monitoring & Analytics": per UTC month, jobs
counted by created_at; open jobs count only in total_jobs; successful = completed
and charged; failed = failed or expired."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from service.domain import validation as v
from service.domain.errors import organization_not_found, team_not_found
from service.domain.models import UsageRow
from service.domain.ports import Catalog, TeamDirectory, UsageStore
from service.domain.principal import Principal


@dataclass(frozen=True, slots=True)
class UsageReport:
    period: str
    summary: UsageRow
    job_types: dict[str, UsageRow]
    teams: dict[str, UsageRow]


def month_bounds(period: str) -> tuple[datetime, datetime]:
    year, month = v.period(period)
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _sum(rows: list[UsageRow]) -> UsageRow:
    return UsageRow(
        total_jobs=sum(r.total_jobs for r in rows),
        successful_jobs=sum(r.successful_jobs for r in rows),
        failed_jobs=sum(r.failed_jobs for r in rows),
        total_cost_usd=round(sum(r.total_cost_usd for r in rows), 10),
        total_tokens=sum(r.total_tokens for r in rows),
    )


def _report(period: str, rows: dict[tuple[str, str], UsageRow]) -> UsageReport:
    by_type: dict[str, list[UsageRow]] = {}
    by_team: dict[str, list[UsageRow]] = {}
    for (team, job_type), row in rows.items():
        by_type.setdefault(job_type, []).append(row)
        by_team.setdefault(team, []).append(row)
    return UsageReport(
        period=period,
        summary=_sum(list(rows.values())),
        job_types={k: _sum(v) for k, v in sorted(by_type.items())},
        teams={k: _sum(v) for k, v in sorted(by_team.items())},
    )


class UsageService:
    def __init__(self, usage: UsageStore, teams: TeamDirectory, catalog: Catalog) -> None:
        self.usage = usage
        self.teams = teams
        self.catalog = catalog

    async def team(self, who: Principal, team_id: str, period: str) -> UsageReport:
        v.require_id(team_id, "team_id")
        who.require_team(team_id)
        start, end = month_bounds(period)
        if await self.teams.get_team(team_id) is None:
            raise team_not_found(team_id)
        return _report(period, await self.usage.by_team_and_type(start, end, team_id=team_id))

    async def organization(self, who: Principal, organization_id: str, period: str) -> UsageReport:
        who.require_admin()
        v.require_id(organization_id, "organization_id")
        start, end = month_bounds(period)
        if await self.catalog.get_organization(organization_id) is None:
            raise organization_not_found(organization_id)
        return _report(
            period, await self.usage.by_team_and_type(start, end, org_id=organization_id)
        )
