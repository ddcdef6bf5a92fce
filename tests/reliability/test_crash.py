"""Crashes: SIGKILL a service process in the middle of hundreds of job flows, restart it, let the
sweeper run. Afterwards every job is completed, failed or expired, no credit is lost or charged
twice, what clients were told matches the database, and the auditor passes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from service.storage.database import Database
from service.storage.schema import jobs, teams
from tests.conftest import MASTER_KEY, fresh_database
from tests.reliability.harness import audit_cli, leaked
from tests.reliability.rest import FlowResult, Rest, make_tenant, rest_flow
from tests.support.envoy import start_envoy
from tests.support.procs import ServiceProc, start_services

pytestmark = pytest.mark.envoy

JOB_TIMEOUT = 4.0
SWEEPER_INTERVAL = 0.5


async def _job_states(url: str) -> tuple[dict[str, str], dict[str, bool], tuple[int, int, int]]:
    db = Database.open(url)
    try:
        async with db.tx() as conn:
            rows = (
                await conn.execute(select(jobs.c.job_id, jobs.c.status, jobs.c.credit_applied))
            ).all()
            team = (
                await conn.execute(
                    select(
                        func.sum(teams.c.credits_allocated),
                        func.sum(teams.c.credits_used),
                        func.sum(teams.c.credits_reserved),
                    )
                )
            ).one()
    finally:
        await db.dispose()
    return (
        {r[0]: r[1] for r in rows},
        {r[0]: bool(r[2]) for r in rows},
        (int(team[0]), int(team[1]), int(team[2])),
    )


async def _crash_run(
    tmp_path: Path, db_kind: str, replicas: int, flows: int, concurrency: int, kill_at: float
) -> dict[str, object]:
    url = await fresh_database(db_kind, tmp_path)
    procs = await start_services(
        url,
        tmp_path / "logs",
        replicas,
        JOB_TIMEOUT=JOB_TIMEOUT,
        SWEEPER_INTERVAL=SWEEPER_INTERVAL,
    )
    victim: ServiceProc = procs[0]
    envoy = await start_envoy([p.port for p in procs], direct_hosts=[p.direct_port for p in procs])
    numbers: dict[str, object] = {"db": db_kind, "replicas": replicas, "flows": flows}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            rest = Rest(session, envoy.base_url)
            team, key, group = await make_tenant(rest, flows, "simulator/ok", {"latency_ms": 30})
            sem = asyncio.Semaphore(concurrency)
            done = 0

            async def one(i: int) -> FlowResult:
                nonlocal done
                async with sem:
                    r = await rest_flow(
                        rest, team, key, group, i, fail_every=6, tolerate_errors=True
                    )
                done += 1
                return r

            started = time.monotonic()
            tasks = [asyncio.create_task(one(i)) for i in range(flows)]
            # SIGKILL once kill_at of the flows are done: `concurrency` flows are in flight.
            while done < kill_at * flows:
                await asyncio.sleep(0.005)
            numbers["killed_after_flows"] = done
            numbers["killed_at_s"] = round(time.monotonic() - started, 2)
            await victim.kill()
            await asyncio.sleep(0.5)
            victim.start()
            await victim.wait_ready()
            numbers["restarted_at_s"] = round(time.monotonic() - started, 2)
            results = await asyncio.gather(*tasks)
            numbers["flows_s"] = round(time.monotonic() - started, 2)
            outcomes = [r.outcome for r in results]
            for name in ("charged", "released", "broken", "refused"):
                numbers[name] = outcomes.count(name)
            assert outcomes.count("refused") == 0, "the team had a credit per flow"
            assert outcomes.count("broken") > 0, "the kill hit no flow in flight"

        # Let the sweeper expire what the crash left open (bounded wait).
        deadline = time.monotonic() + JOB_TIMEOUT + 10 * SWEEPER_INTERVAL + 10
        while True:
            states, applied, totals = await _job_states(url)
            open_jobs = [j for j, s in states.items() if s in ("pending", "in_progress")]
            if not open_jobs:
                break
            assert time.monotonic() < deadline, f"{len(open_jobs)} jobs still open: {open_jobs[:5]}"
            await asyncio.sleep(0.25)
        numbers["swept_at_s"] = round(time.monotonic() - started, 2)
        by_status: dict[str, int] = {}
        for s in states.values():
            by_status[s] = by_status.get(s, 0) + 1
        numbers["job_statuses"] = by_status
        assert set(by_status) <= {"completed", "failed", "expired"}, by_status
        # What the clients were told is what the database says.
        for r in results:
            if r.outcome in ("charged", "released"):
                assert r.job_id is not None
                assert applied[r.job_id] == (r.outcome == "charged"), r
                assert states[r.job_id] == ("completed" if r.outcome == "charged" else "failed")
        # Every charged job is a completed, charged job, and the team row agrees.
        charged_jobs = sum(1 for j, a in applied.items() if a)
        assert totals == (flows, charged_jobs, 0), (totals, charged_jobs)
        assert charged_jobs >= outcomes.count("charged")
    finally:
        await envoy.stop()
        await asyncio.gather(*(p.stop() for p in procs))
    assert victim.starts == 2
    assert not leaked([p.log() for p in procs], [MASTER_KEY, key]), "a key reached the logs"
    audit = await audit_cli(url, "--stale-after", str(JOB_TIMEOUT + SWEEPER_INTERVAL + 1))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    numbers["audit"] = audit.stdout.strip().splitlines()[-1]
    return numbers


@pytest.mark.postgres
async def test_sigkill_a_replica_mid_flows_postgres(tmp_path: Path) -> None:
    numbers = await _crash_run(
        tmp_path, "postgres", replicas=2, flows=400, concurrency=48, kill_at=0.35
    )
    print("crash:", numbers)


async def test_sigkill_the_only_process_mid_flows_sqlite(tmp_path: Path) -> None:
    numbers = await _crash_run(
        tmp_path, "sqlite", replicas=1, flows=200, concurrency=24, kill_at=0.4
    )
    print("crash:", numbers)


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.postgres
@pytest.mark.parametrize("kill_at", [0.1, 0.5, 0.9])
async def test_soak_sigkill_mid_flows_postgres(tmp_path: Path, kill_at: float) -> None:
    numbers = await _crash_run(
        tmp_path, "postgres", replicas=2, flows=3000, concurrency=128, kill_at=kill_at
    )
    print("crash soak:", numbers)
