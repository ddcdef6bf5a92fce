"""The auditor finds every kind of broken ledger, names the offending row, and its CLI
(`python -m service.audit`, `python -m service audit` = `make audit`) exits 1 on a violation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select, update

from saas_llm.v1 import job_service_pb2 as job_pb
from service.audit import audit
from service.storage.database import Database
from service.storage.rows import new_id, utcnow
from service.storage.schema import credit_transactions as ct
from service.storage.schema import jobs, teams
from tests.conftest import bearer, fresh_database, start_client, stop_client
from tests.flows import make_group, make_team, run_flow
from tests.reliability.harness import audit_cli


async def _populate(url: str, n_teams: int) -> list[dict[str, str]]:
    """n teams, each with a charged job, a failed job and an open job."""
    c = await start_client(url)
    try:
        group = await make_group(c, [("simulator/ok", {})])
        out = []
        for _ in range(n_teams):
            team_id, key = await make_team(c, credits=5, groups=[group])
            charged = await run_flow(c, team_id, key, group=group, status="completed")
            failed = await run_flow(c, team_id, key, group=group, status="failed")
            open_job = await c.jobs.CreateJob(
                job_pb.CreateJobRequest(team_id=team_id, job_type="open"), metadata=bearer(key)
            )
            assert charged.costs.credit_applied and not failed.costs.credit_applied
            out.append(
                {
                    "team": team_id,
                    "charged": charged.job_id,
                    "failed": failed.job_id,
                    "open": open_job.job_id,
                }
            )
        return out
    finally:
        await stop_client(c)


async def _new_violations(db: Database, seen: set[str], stale: float | None = None) -> list[str]:
    report = await audit(db, stale)
    new = [v for v in report.violations if v not in seen]
    seen.update(report.violations)
    return new


async def test_auditor_detects_each_violation_and_names_the_row(db_url: str) -> None:
    world = await _populate(db_url, 7)
    db = Database.open(db_url)
    try:
        report = await audit(db, 3600)
        assert report.ok, report.violations
        assert (report.teams, report.jobs) == (7, 21)
        seen: set[str] = set()

        # 1. The team row disagrees with its ledger (credits "added" without a ledger row).
        t = world[0]
        async with db.tx() as conn:
            await conn.execute(
                update(teams)
                .where(teams.c.team_id == t["team"])
                .values(credits_allocated=teams.c.credits_allocated + 1)
            )
        new = await _new_violations(db, seen)
        assert len(new) == 1 and t["team"] in new[0] and "ledger sums" in new[0], new

        # 2. A charged job charged twice.
        t = world[1]
        async with db.tx() as conn:
            await conn.execute(
                insert(ct).values(
                    transaction_id=new_id(),
                    team_id=t["team"],
                    transaction_type="deduction",
                    credits_amount=1,
                    balance_after=2,
                    reason="corrupt",
                    job_id=t["charged"],
                    metadata={},
                    created_at=utcnow(),
                )
            )
        new = await _new_violations(db, seen)
        assert any(t["charged"] in v and "2 deduction" in v for v in new), new
        assert any(t["team"] in v and "ledger sums" in v for v in new), new

        # 3. A failed job charged: its release turned into a deduction.
        t = world[2]
        async with db.tx() as conn:
            await conn.execute(
                update(ct)
                .where(ct.c.job_id == t["failed"], ct.c.transaction_type == "release")
                .values(transaction_type="deduction")
            )
        new = await _new_violations(db, seen)
        assert any(t["failed"] in v and "uncharged" in v for v in new), new

        # 4. A completed job marked charged without its deduction.
        t = world[3]
        async with db.tx() as conn:
            await conn.execute(
                update(jobs).where(jobs.c.job_id == t["failed"]).values(credit_applied=True)
            )
        new = await _new_violations(db, seen)
        assert any(t["failed"] in v and "charged job" in v for v in new), new

        # 5. A reservation left behind past the job timeout (the sweeper did not run).
        t = world[4]
        async with db.tx() as conn:
            await conn.execute(
                update(jobs)
                .where(jobs.c.job_id == t["open"])
                .values(updated_at=utcnow() - timedelta(hours=2))
            )
        assert not await _new_violations(db, seen), "stale jobs are flagged only when asked"
        new = await _new_violations(db, seen, stale=3600)
        assert len(new) == 1 and t["open"] in new[0] and "outlived" in new[0], new

        # 6. A ledger row for a job that does not exist, and a wrong balance_after.
        t = world[5]
        ghost = new_id()
        async with db.tx() as conn:
            last = (
                await conn.execute(
                    select(ct.c.id).where(ct.c.team_id == t["team"]).order_by(ct.c.id.desc())
                )
            ).first()
            assert last is not None
            await conn.execute(
                update(ct).where(ct.c.id == last[0]).values(balance_after=ct.c.balance_after + 7)
            )
            await conn.execute(
                insert(ct).values(
                    transaction_id=new_id(),
                    team_id=t["team"],
                    transaction_type="release",
                    credits_amount=1,
                    balance_after=0,
                    reason="corrupt",
                    job_id=ghost,
                    metadata={},
                    created_at=utcnow(),
                )
            )
        new = await _new_violations(db, seen, stale=3600)
        assert any(ghost in v and "no such job" in v for v in new), new
        assert any(t["team"] in v and "running balance" in v for v in new), new

        # 7. A ledger that goes below zero: the initial allocation shrunk to 0.
        t = world[6]
        async with db.tx() as conn:
            await conn.execute(
                update(ct)
                .where(ct.c.team_id == t["team"], ct.c.transaction_type == "allocation")
                .values(credits_amount=0, balance_after=0)
            )
        new = await _new_violations(db, seen, stale=3600)
        assert any(t["team"] in v and "negative" in v for v in new), new

        # Nothing else was ever reported: every violation names one of the corrupted rows.
        corrupted = {world[i]["team"] for i in range(7)}
        assert all(any(x in v for x in corrupted) for v in seen), seen
    finally:
        await db.dispose()

    # The CLI: exit 1 and one VIOLATION line per offending row, from both entry points.
    for module in ("service.audit", "service"):
        r = await audit_cli(db_url, "--stale-after", "3600", module=module)
        assert r.returncode == 1, (r.stdout, r.stderr)
        out = r.stdout
        assert world[0]["team"] in out and world[1]["charged"] in out, out
        assert world[4]["open"] in out and ghost in out, out
        assert len(r.violations) == len(seen), (r.violations, seen)
        assert "violations" in out.splitlines()[-1]


async def test_cli_passes_on_a_clean_database(tmp_path: Path) -> None:
    url = await fresh_database("sqlite", tmp_path)
    await _populate(url, 2)
    r = await audit_cli(url)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.violations == []
    assert r.stdout.strip().splitlines()[-1] == ("audited 2 teams, 6 jobs, 12 ledger rows: OK"), (
        r.stdout
    )
    # --no-check-stale and an unreachable database (exit 2, not a false OK).
    assert (await audit_cli(url, "--no-check-stale")).returncode == 0
    bad = await audit_cli(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/none.db")
    assert bad.returncode == 2, (bad.stdout, bad.stderr)
