"""Ledger auditor: `python -m service.audit` (or `make audit`).

Checks, for every team, the invariants of DESIGN.md "Credits":
  1. the ledger sums to the team row (allocated, used, reserved);
  2. available = allocated - used - reserved >= 0;
  3. reserved == number of open jobs (each open job holds exactly 1 credit);
  4. every job with credit_applied has exactly one deduction and no release;
     every failed or expired job has no deduction;
  5. no open job is older than JOB_TIMEOUT plus one sweeper interval (only
     with --check-stale).
Exit status 1 with the offending rows on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select

from service.domain.validation import OPEN_STATUSES
from service.settings import get_settings
from service.storage.db import Database
from service.storage.rows import utcnow
from service.storage.schema import credit_transactions as ct
from service.storage.schema import jobs, teams


@dataclass
class Report:
    teams: int = 0
    jobs: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def _signed(kind: str) -> ColumnElement[Any]:
    return func.coalesce(
        func.sum(case((ct.c.transaction_type == kind, ct.c.credits_amount), else_=0)), 0
    )


async def audit(db: Database, stale_after_s: float | None = None) -> Report:
    report = Report()
    async with db.tx() as conn:
        ledger = {
            r[0]: r[1:]
            for r in (
                await conn.execute(
                    select(
                        ct.c.team_id,
                        _signed("allocation"),
                        _signed("addition"),
                        _signed("reservation"),
                        _signed("deduction"),
                        _signed("release"),
                        _signed("expiry"),
                    ).group_by(ct.c.team_id)
                )
            ).all()
        }
        open_jobs = {
            r[0]: r[1]
            for r in (
                await conn.execute(
                    select(jobs.c.team_id, func.count())
                    .where(jobs.c.status.in_(OPEN_STATUSES))
                    .group_by(jobs.c.team_id)
                )
            ).all()
        }
        for t in (await conn.execute(select(teams))).all():
            m = t._mapping
            report.teams += 1
            tid = m["team_id"]
            alloc, add, res, ded, rel, exp = (int(x) for x in ledger.get(tid, (0,) * 6))
            want = (alloc + add, ded, res - ded - rel - exp)
            have = (m["credits_allocated"], m["credits_used"], m["credits_reserved"])
            if want != have:
                report.violations.append(
                    f"team {tid}: ledger (allocated, used, reserved)={want} but team row={have}"
                )
            if have[0] - have[1] - have[2] < 0:
                report.violations.append(f"team {tid}: negative available credits {have}")
            if have[2] != open_jobs.get(tid, 0):
                report.violations.append(
                    f"team {tid}: reserved={have[2]} but {open_jobs.get(tid, 0)} open jobs"
                )
        per_job = (
            select(
                jobs.c.job_id,
                jobs.c.status,
                jobs.c.credit_applied,
                func.sum(case((ct.c.transaction_type == "deduction", 1), else_=0)),
                func.sum(case((ct.c.transaction_type.in_(("release", "expiry")), 1), else_=0)),
                func.sum(case((ct.c.transaction_type == "reservation", 1), else_=0)),
            )
            .select_from(jobs.outerjoin(ct, ct.c.job_id == jobs.c.job_id))
            .group_by(jobs.c.job_id, jobs.c.status, jobs.c.credit_applied)
        )
        for job_id, status, applied, n_ded, n_rel, n_res in (await conn.execute(per_job)).all():
            report.jobs += 1
            n_ded, n_rel, n_res = int(n_ded or 0), int(n_rel or 0), int(n_res or 0)
            if n_res != 1:
                report.violations.append(f"job {job_id}: {n_res} reservations (want 1)")
            if status in OPEN_STATUSES:
                if n_ded or n_rel:
                    report.violations.append(f"job {job_id}: open but settled ({n_ded}/{n_rel})")
            elif applied:
                if status != "completed" or n_ded != 1 or n_rel != 0:
                    report.violations.append(
                        f"job {job_id}: charged {status} job: {n_ded} deductions, {n_rel} releases"
                    )
            elif n_ded != 0 or n_rel != 1:
                report.violations.append(
                    f"job {job_id}: uncharged {status} job: {n_ded} deductions, {n_rel} releases"
                )
        if stale_after_s is not None:
            cutoff = utcnow() - timedelta(seconds=stale_after_s)
            for (job_id,) in (
                await conn.execute(
                    select(jobs.c.job_id).where(
                        jobs.c.status.in_(OPEN_STATUSES), jobs.c.updated_at < cutoff
                    )
                )
            ).all():
                report.violations.append(f"job {job_id}: open past the job timeout")
    return report


async def _main(url: str, check_stale: bool) -> int:
    settings = get_settings()
    db = Database(url)
    try:
        stale = settings.job_timeout + settings.sweeper_interval if check_stale else None
        report = await audit(db, stale)
    finally:
        await db.dispose()
    for v in report.violations:
        print("VIOLATION", v)
    print(
        f"audited {report.teams} teams, {report.jobs} jobs: "
        + ("OK" if report.ok else f"{len(report.violations)} violations")
    )
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.audit", description=__doc__)
    p.add_argument("--database-url", default=None, help="defaults to DATABASE_URL")
    p.add_argument("--check-stale", action="store_true", help="also flag overdue open jobs")
    a = p.parse_args(argv)
    return asyncio.run(_main(a.database_url or get_settings().database_url, a.check_stale))


if __name__ == "__main__":
    sys.exit(main())
