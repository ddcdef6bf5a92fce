"""CPU per job create and per job complete, in-process, with and without the raw-driver fast
path (storage/fastpath.py), on SQLite and (when reachable) PostgreSQL.

`python -m bench.job_ops` prints JSON. It calls JobRepository directly in one process, without
gRPC, Envoy or the load generator, so that it measures the storage code alone. Each mode creates
and completes the same number of jobs after a warmup, timed with `time.process_time`. The
"sqlalchemy" mode is the same repository with the fast path switched off: the code every
non-happy case (no credits, replays) still takes.
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
from service.server import App

KEY = "sk-master-bench-jobs-" + "j" * 16
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _team(app: App) -> str:
    team_id = "team_" + uuid.uuid4().hex[:8]
    await insert_team(app, "org_" + team_id, team_id, allocated=1_000_000)
    return team_id


async def _measure(app: App, jobs: int) -> dict[str, float]:
    repo = app.jobs_repo
    team_id = await _team(app)
    create_s = complete_s = 0.0
    for round_ in ("warmup", "measured"):
        create_s = complete_s = 0.0
        for _ in range(jobs if round_ == "measured" else jobs // 4):
            t0 = time.process_time()
            job, _ = await repo.create(
                team_id=team_id,
                user_id="",
                job_type="bench",
                metadata={"k": "v"},
                request_id=None,
                request_hash=None,
            )
            t1 = time.process_time()
            await repo.complete(job.job_id, "completed", {}, None)
            create_s += t1 - t0
            complete_s += time.process_time() - t1
    return {
        "create_ms": round(create_s * 1000 / jobs, 3),
        "complete_ms": round(complete_s * 1000 / jobs, 3),
    }


async def _database(url: str, jobs: int) -> dict[str, Any]:
    app = await start_app(url, KEY)
    try:
        fast = app.db.fast
        result = {"fast_path": await _measure(app, jobs)}
        app.db.fast = None
        try:
            result["sqlalchemy"] = await _measure(app, jobs)
        finally:
            app.db.fast = fast
    finally:
        await app.stop(grace=0)
    return result


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
