"""Usage reports at scale: a team with 100,000 jobs (and one call each) on
SQLite, then GET-usage latency through the real gRPC server.

`python -m bench.usage_scale` prints JSON; `make bench` includes it. The rows
are bulk-inserted with SQL (creating 100k jobs through the API would measure
job creation, not the report).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from bench.inprocess import insert_team, start_app
from saas_llm.v1 import team_service_pb2, team_service_pb2_grpc
from service.server import App
from service.storage.schema import jobs, llm_calls

JOBS = 100_000
REPEAT = 20
KEY = "sk-master-bench-usage-" + "u" * 16


async def _fill(app: App, team_id: str, period_start: datetime) -> None:
    await insert_team(app, "org_bench", team_id, allocated=JOBS, used=JOBS // 2)
    batch = 5000
    for start in range(0, JOBS, batch):
        job_rows: list[dict[str, Any]] = []
        call_rows: list[dict[str, Any]] = []
        for i in range(start, min(start + batch, JOBS)):
            # Spread over three months; the middle one is reported.
            created = period_start + timedelta(days=(i % 90) - 30, seconds=i)
            jid = str(uuid.uuid4())
            ok = i % 10 != 0
            job_rows.append(
                {
                    "job_id": jid,
                    "team_id": team_id,
                    "user_id": "",
                    "job_type": f"type_{i % 7}",
                    "status": "completed" if ok else "failed",
                    "metadata": {},
                    "result_metadata": None,
                    "error_message": None,
                    "credit_applied": ok,
                    "credits_remaining_after": 0,
                    "request_id": None,
                    "request_hash": None,
                    "replay_response": None,
                    "total_tokens": 150,
                    "total_cost_usd": 0.0002,
                    "created_at": created,
                    "updated_at": created,
                    "completed_at": created,
                }
            )
            call_rows.append(
                {
                    "call_id": str(uuid.uuid4()),
                    "job_id": jid,
                    "team_id": team_id,
                    "model_group": "g",
                    "model": "m",
                    "purpose": "",
                    "status": "success" if ok else "failed",
                    "streamed": False,
                    "prompt_tokens": 100,
                    "completion_tokens": 50,
                    "usage_estimated": False,
                    "cost_usd": 0.0002,
                    "latency_ms": 10,
                    "ttft_ms": None,
                    "error": None,
                    "attempts": [],
                    "created_at": created,
                }
            )
        async with app.db.tx() as conn:
            await conn.execute(jobs.insert(), job_rows)
            await conn.execute(llm_calls.insert(), call_rows)


async def run(tmp: Path) -> dict[str, Any]:
    app = await start_app(f"sqlite+aiosqlite:///{tmp / 'usage.db'}", KEY)
    period_start = datetime(2026, 6, 1, tzinfo=UTC)
    t0 = time.perf_counter()
    await _fill(app, "team_bench", period_start)
    fill_s = time.perf_counter() - t0
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as ch:
            stub = team_service_pb2_grpc.TeamServiceStub(ch)
            md = (("authorization", f"Bearer {KEY}"),)
            req = team_service_pb2.GetTeamUsageRequest(team_id="team_bench", period="2026-06")
            first = await stub.GetTeamUsage(req, metadata=md)
            times = []
            for _ in range(REPEAT):
                s = time.perf_counter()
                await stub.GetTeamUsage(req, metadata=md)
                times.append((time.perf_counter() - s) * 1000)
    finally:
        await app.stop(grace=0)
    times.sort()
    return {
        "scenario": "team usage, 100k jobs (SQLite)",
        "team_jobs": JOBS,
        "jobs_in_period": first.summary.total_jobs,
        "fill_seconds": round(fill_s, 1),
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[-1], 2),
        "target_ms": 200,
        "met": times[-1] < 200,
    }


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(Path(tmp)))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
