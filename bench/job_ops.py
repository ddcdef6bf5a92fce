"""CPU per job create, call record and job complete, in-process, on SQLite and (when
reachable) PostgreSQL.

`python -m bench.job_ops` prints JSON. It runs one process without gRPC, Envoy or the load
generator, so that it measures our code alone: "storage" calls the single writer of each money
operation through JobRepository (storage/money_*.py), "domain" the same operations through
JobsService (validation, tenancy, the writer, the answer). Each mode creates, records one call
for and completes the same number of jobs after a warmup, timed with `time.process_time`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.inprocess import insert_team, start_app
from service.domain.ports import JobClaim, NewCall, NewJob
from service.domain.principal import ADMIN
from service.server import App

KEY = "sk-master-bench-jobs-" + "j" * 16
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _team(app: App) -> str:
    team_id = "team_" + uuid.uuid4().hex[:8]
    await insert_team(app, "org_" + team_id, team_id, allocated=1_000_000)
    return team_id


def _call(job_id: str, team_id: str) -> NewCall:
    return NewCall(
        job_id=job_id,
        team_id=team_id,
        model_group="g",
        model="openai/m",
        purpose="",
        status="success",
        streamed=False,
        prompt_tokens=3,
        completion_tokens=4,
        usage_estimated=False,
        cost_usd=0.0001,
        latency_ms=5,
        ttft_ms=None,
        error=None,
        attempts=[{"model": "openai/m", "error": None, "latency_ms": 5}],
    )


async def _measure(app: App, jobs: int, layer: str) -> dict[str, float]:
    repo, svc = app.jobs_repo, app.jobs
    team_id = await _team(app)
    totals = [0.0, 0.0, 0.0]
    for round_ in ("warmup", "measured"):
        totals = [0.0, 0.0, 0.0]
        for _ in range(jobs if round_ == "measured" else jobs // 4):
            t0 = time.process_time()
            if layer == "storage":
                job_id = str(uuid.uuid4())
                await repo.create_job(
                    NewJob(job_id, team_id, "", "bench", {"k": "v"}, None, None, _now())
                )
            else:
                job, _ = await svc.create(
                    ADMIN,
                    team_id=team_id,
                    user_id="",
                    job_type="bench",
                    metadata={"k": "v"},
                    request_id="",
                )
                job_id = job.job_id
            t1 = time.process_time()
            await repo.record_call(_call(job_id, team_id))
            t2 = time.process_time()
            if layer == "storage":
                await repo.complete_job(JobClaim(job_id, "completed", {}, None, None))
            else:
                await svc.complete(ADMIN, job_id, "completed", {}, "")
            t3 = time.process_time()
            totals[0] += t1 - t0
            totals[1] += t2 - t1
            totals[2] += t3 - t2
    create_s, record_s, complete_s = totals
    return {
        "create_ms": round(create_s * 1000 / jobs, 3),
        "record_call_ms": round(record_s * 1000 / jobs, 3),
        "complete_ms": round(complete_s * 1000 / jobs, 3),
    }


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


async def _database(url: str, jobs: int) -> dict[str, Any]:
    app = await start_app(url, KEY)
    try:
        return {layer: await _measure(app, jobs, layer) for layer in ("storage", "domain")}
    finally:
        await app.stop(grace=0)


async def _postgres(jobs: int) -> dict[str, Any]:
    import asyncpg

    name = "gw_bench_jobs_" + uuid.uuid4().hex[:8]
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        return {"skipped": f"PostgreSQL not reachable: {exc}"}
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            return await _database(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", jobs)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def run(jobs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = await _database(f"sqlite+aiosqlite:///{Path(tmp) / 'jobs.db'}", jobs)
    return {"jobs": jobs, "sqlite": sqlite, "postgresql": await _postgres(jobs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per mode (default 1000)")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.jobs)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
