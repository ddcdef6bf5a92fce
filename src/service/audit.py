"""Ledger auditor: `python -m service.audit` (also `python -m service audit`, `make audit`).

Checks the invariants of DESIGN.md "Credits" over the whole database:
  1. for every team, the ledger sums to the team row: allocated = allocation + addition,
     used = deduction, reserved = reservation - deduction - release - expiry;
  2. available = allocated - used - reserved >= 0, on the team row and at every point of the
     ledger replayed in order, and every row's balance_after is the running balance;
  3. reserved == number of open jobs (each open job holds exactly 1 credit);
  4. every job has exactly one reservation; every completed-and-charged job exactly one
     deduction and no release; every failed, expired or uncharged job no deduction and exactly
     one release or expiry; an open job neither; every job-bound ledger row belongs to an
     existing job of the same team, and allocations/additions to no job;
  5. no open job (no reservation) is older than JOB_TIMEOUT plus one sweeper interval
     (on by default in the CLI; `--no-check-stale` skips it, e.g. for a stopped service).
Prints one `VIOLATION` line per offending row, then a summary; exit status 1 on any
violation, 2 when the database cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select

from service.domain.models import OPEN_STATUSES
from service.settings import get_settings
from service.storage.database import Database
from service.storage.rows import utcnow
from service.storage.schema import credit_transactions as ct
from service.storage.schema import jobs, teams
from service.storage.sql import one_of

# Signed effect of each ledger row on credits_remaining (allocated - used - reserved).
_EFFECT = {
    "allocation": 1,
    "addition": 1,
    "reservation": -1,
    "deduction": 0,
    "release": 1,
    "expiry": 1,
}
_JOB_KINDS = ("reservation", "deduction", "release", "expiry")
# More rows than this per kind of violation are summarised, not printed.
MAX_REPORTED = 200


@dataclass
class Report:
    teams: int = 0
    jobs: int = 0
    transactions: int = 0
    violations: list[str] = field(default_factory=list)
    _suppressed: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, text: str) -> None:
        if len(self.violations) < MAX_REPORTED:
            self.violations.append(text)
        else:
            self._suppressed += 1
            if self._suppressed == 1:
                self.violations.append("... more violations not shown")


def _sum(kind: str) -> ColumnElement[Any]:
    return func.coalesce(
        func.sum(case((ct.c.transaction_type == kind, ct.c.credits_amount), else_=0)), 0
    )


def _count(*kinds: str) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((one_of(ct.c.transaction_type, kinds), 1), else_=0)), 0)


async def audit(db: Database, stale_after_s: float | None = None) -> Report:
    """Check every invariant; `stale_after_s` also flags open jobs idle for longer."""
    report = Report()
    async with db.snapshot() as conn:
        ledger = {
            r[0]: tuple(int(x) for x in r[1:])
            for r in (
                await conn.execute(
                    select(
                        ct.c.team_id,
                        _sum("allocation"),
                        _sum("addition"),
                        _sum("reservation"),
                        _sum("deduction"),
                        _sum("release"),
                        _sum("expiry"),
                    ).group_by(ct.c.team_id)
                )
            ).all()
        }
        open_jobs = {
            r[0]: int(r[1])
            for r in (
                await conn.execute(
                    select(jobs.c.team_id, func.count())
                    .where(one_of(jobs.c.status, OPEN_STATUSES))
                    .group_by(jobs.c.team_id)
                )
            ).all()
        }
        team_ids: set[str] = set()
        for t in (await conn.execute(select(teams))).all():
            m = t._mapping
            report.teams += 1
            tid = m["team_id"]
            team_ids.add(tid)
            alloc, add, res, ded, rel, exp = ledger.get(tid, (0,) * 6)
            want = (alloc + add, ded, res - ded - rel - exp)
            have = (m["credits_allocated"], m["credits_used"], m["credits_reserved"])
            row = (
                f"team row {{team_id={tid!r}, allocated={have[0]}, used={have[1]}, "
                f"reserved={have[2]}}}"
            )
            if want != have:
                report.add(f"{row}: the ledger sums to (allocated, used, reserved)={want}")
            if have[0] - have[1] - have[2] < 0:
                report.add(f"{row}: negative available credits {have[0] - have[1] - have[2]}")
            if have[2] != open_jobs.get(tid, 0):
                report.add(f"{row}: {open_jobs.get(tid, 0)} open jobs hold reservations")
        for tid in sorted(set(ledger) - team_ids):
            report.add(f"ledger rows of team {tid!r}, which does not exist")

        # Every job: its ledger rows by kind.
        per_job = (
            select(
                jobs.c.job_id,
                jobs.c.team_id,
                jobs.c.status,
                jobs.c.credit_applied,
                _count("reservation"),
                _count("deduction"),
                _count("release", "expiry"),
                func.coalesce(func.sum(case((ct.c.team_id != jobs.c.team_id, 1), else_=0)), 0),
            )
            .select_from(jobs.outerjoin(ct, ct.c.job_id == jobs.c.job_id))
            .group_by(jobs.c.job_id, jobs.c.team_id, jobs.c.status, jobs.c.credit_applied)
        )
        for job_id, team_id, status, applied, n_res, n_ded, n_rel, n_foreign in (
            await conn.execute(per_job)
        ).all():
            report.jobs += 1
            n_res, n_ded, n_rel, n_foreign = int(n_res), int(n_ded), int(n_rel), int(n_foreign)
            row = (
                f"job row {{job_id={job_id!r}, team_id={team_id!r}, status={status!r}, "
                f"credit_applied={bool(applied)}}} with {n_res} reservation, {n_ded} deduction, "
                f"{n_rel} release/expiry rows"
            )
            if n_res != 1:
                report.add(f"{row}: want exactly 1 reservation")
            if n_foreign:
                report.add(f"{row}: {n_foreign} of its ledger rows belong to another team")
            if status in OPEN_STATUSES:
                if n_ded or n_rel:
                    report.add(f"{row}: open but already settled")
            elif applied:
                if status != "completed" or n_ded != 1 or n_rel != 0:
                    report.add(
                        f"{row}: a charged job needs status completed, 1 deduction, 0 releases"
                    )
            elif n_ded != 0 or n_rel != 1:
                report.add(f"{row}: an uncharged job needs 0 deductions and 1 release or expiry")

        # Ledger rows that point nowhere (or to a job where they should not).
        orphans = (
            select(ct.c.transaction_id, ct.c.team_id, ct.c.transaction_type, ct.c.job_id)
            .select_from(ct.outerjoin(jobs, jobs.c.job_id == ct.c.job_id))
            .where(
                (one_of(ct.c.transaction_type, _JOB_KINDS) & jobs.c.job_id.is_(None))
                | (
                    one_of(ct.c.transaction_type, ("allocation", "addition"))
                    & ct.c.job_id.isnot(None)
                )
            )
        )
        for tx_id, team_id, kind, job_id in (await conn.execute(orphans)).all():
            report.add(
                f"ledger row {{transaction_id={tx_id!r}, team_id={team_id!r}, "
                f"transaction_type={kind!r}, job_id={job_id!r}}}: "
                + ("no such job" if kind in _JOB_KINDS else "must not name a job")
            )

        # Replay each team's ledger in commit order (the team row lock serialises writers, so
        # the id order is the order of the updates): balance_after is the running balance and
        # never goes below zero.
        running: dict[str, int] = defaultdict(int)
        result = await conn.stream(
            select(
                ct.c.id,
                ct.c.transaction_id,
                ct.c.team_id,
                ct.c.transaction_type,
                ct.c.credits_amount,
                ct.c.balance_after,
            ).order_by(ct.c.team_id, ct.c.id)
        )
        async for _id, tx_id, team_id, kind, amount, balance_after in result:
            report.transactions += 1
            running[team_id] += _EFFECT.get(kind, 0) * int(amount)
            row = (
                f"ledger row {{transaction_id={tx_id!r}, team_id={team_id!r}, "
                f"transaction_type={kind!r}, credits_amount={amount}, "
                f"balance_after={balance_after}}}"
            )
            if kind not in _EFFECT:
                report.add(f"{row}: unknown transaction type")
            if kind in _JOB_KINDS and kind != "deduction" and amount != 1:
                report.add(f"{row}: a job's reservation, release or expiry moves exactly 1 credit")
            if kind == "deduction" and amount != 1:
                report.add(f"{row}: a deduction charges exactly 1 credit")
            if running[team_id] < 0:
                report.add(f"{row}: the running balance is negative ({running[team_id]})")
            if balance_after != running[team_id]:
                report.add(f"{row}: the running balance is {running[team_id]}")

        if stale_after_s is not None:
            cutoff = utcnow() - timedelta(seconds=stale_after_s)
            for job_id, team_id, status, updated_at in (
                await conn.execute(
                    select(jobs.c.job_id, jobs.c.team_id, jobs.c.status, jobs.c.updated_at).where(
                        one_of(jobs.c.status, OPEN_STATUSES), jobs.c.updated_at < cutoff
                    )
                )
            ).all():
                report.add(
                    f"job row {{job_id={job_id!r}, team_id={team_id!r}, status={status!r}, "
                    f"updated_at={updated_at}}}: its reservation outlived the job timeout "
                    f"({stale_after_s:g}s)"
                )
    return report


async def _main(url: str, stale_after_s: float | None) -> int:
    db = Database.open(url)
    try:
        report = await audit(db, stale_after_s)
    except Exception as exc:
        print(f"audit: cannot read the database: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()
    for v in report.violations:
        print("VIOLATION", v)
    print(
        f"audited {report.teams} teams, {report.jobs} jobs, {report.transactions} ledger rows: "
        + ("OK" if report.ok else f"{len(report.violations)} violations")
    )
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m service.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--database-url", default=None, help="defaults to DATABASE_URL")
    stale = p.add_mutually_exclusive_group()
    stale.add_argument(
        "--check-stale",
        dest="check_stale",
        action="store_true",
        default=True,
        help="flag open jobs idle for longer than JOB_TIMEOUT + SWEEPER_INTERVAL (default)",
    )
    stale.add_argument(
        "--no-check-stale",
        dest="check_stale",
        action="store_false",
        help="skip that check (a stopped service has not swept yet)",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=None,
        help="seconds an open job may stay idle (default JOB_TIMEOUT + SWEEPER_INTERVAL)",
    )
    a = p.parse_args(argv)
    settings = get_settings()
    stale_after: float | None = None
    if a.check_stale:
        stale_after = (
            a.stale_after
            if a.stale_after is not None
            else settings.job_timeout + settings.sweeper_interval
        )
    return asyncio.run(_main(a.database_url or settings.database_url, stale_after))


if __name__ == "__main__":
    sys.exit(main())
