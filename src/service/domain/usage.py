"""Usage reports of seed 003 "Monitoring & Analytics": per UTC month, jobs
counted by created_at; open jobs count only in total_jobs; successful = completed
and charged; failed = failed or expired."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from service.domain import validation as v
from service.domain.errors import organization_not_found, team_not_found
from service.domain.models import DirectUsageRow, UsageRow
from service.domain.ports import (
    BUDGET_NANOS_PER_CREDIT,
    NANOS_PER_USD,
    Catalog,
    TeamDirectory,
    UsageStore,
)
from service.domain.principal import Principal


@dataclass(frozen=True, slots=True)
class UsageReport:
    period: str
    summary: UsageRow
    job_types: dict[str, UsageRow]
    teams: dict[str, UsageRow]
    direct_calls: DirectUsageRow


@dataclass(frozen=True, slots=True)
class MarginRow:
    """Revenue (credits charged at the budget's price) against provider cost of one slice."""

    jobs: int
    credits_charged: int
    revenue_usd: float
    provider_cost_usd: float
    margin_usd: float


@dataclass(frozen=True, slots=True)
class MarginReport:
    period: str
    job_types: dict[str, MarginRow]
    total: MarginRow
    direct_cost_usd: float


# A credit's price is the OpenAI-compatible budget's (credits_allocated x $0.10): one constant.
USD_PER_CREDIT = BUDGET_NANOS_PER_CREDIT / NANOS_PER_USD


def _margin(row: UsageRow) -> MarginRow:
    # A charged job (completed and charged) pays exactly one credit.
    revenue = round(row.successful_jobs * USD_PER_CREDIT, 10)
    cost = round(row.total_cost_usd, 10)
    return MarginRow(
        jobs=row.total_jobs,
        credits_charged=row.successful_jobs,
        revenue_usd=revenue,
        provider_cost_usd=cost,
        margin_usd=round(revenue - cost, 10),
    )


def month_bounds(period: str) -> tuple[datetime, datetime]:
    year, month = v.period(period)
    start = datetime(year, month, 1, tzinfo=UTC)
    if (year, month) == (9999, 12):
        # The next month's first day is past datetime's range: the month ends at its last
        # representable instant instead.
        return start, datetime.max.replace(tzinfo=UTC)
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


def _report(
    period: str, rows: dict[tuple[str, str], UsageRow], direct: DirectUsageRow
) -> UsageReport:
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
        direct_calls=direct,
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
        return _report(
            period,
            await self.usage.by_team_and_type(start, end, team_id=team_id),
            await self.usage.direct_calls(start, end, team_id=team_id),
        )

    async def organization(self, who: Principal, organization_id: str, period: str) -> UsageReport:
        who.require_admin()
        v.require_id(organization_id, "organization_id")
        start, end = month_bounds(period)
        if await self.catalog.get_organization(organization_id) is None:
            raise organization_not_found(organization_id)
        return _report(
            period,
            await self.usage.by_team_and_type(start, end, org_id=organization_id),
            await self.usage.direct_calls(start, end, org_id=organization_id),
        )

    async def team_margin(self, who: Principal, team_id: str, period: str) -> MarginReport:
        """The usage query's per-type sums (one GROUP BY) read as revenue against cost."""
        who.require_admin()
        v.require_id(team_id, "team_id")
        start, end = month_bounds(period)
        if await self.teams.get_team(team_id) is None:
            raise team_not_found(team_id)
        report = _report(
            period,
            await self.usage.by_team_and_type(start, end, team_id=team_id),
            await self.usage.direct_calls(start, end, team_id=team_id),
        )
        return MarginReport(
            period=period,
            job_types={k: _margin(r) for k, r in report.job_types.items()},
            total=_margin(report.summary),
            direct_cost_usd=report.direct_calls.total_cost_usd,
        )
