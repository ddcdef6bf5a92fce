"""Issue 16 "done when": a team on 2 replicas (separate `python -m service serve` processes on
one PostgreSQL, behind one Envoy, sharing Redis) with `rpm_limit: 60` gets exactly 60 calls a
window across both, over REST, in two consecutive windows; the auditor passes. The window is
shortened with RATE_LIMIT_WINDOW_SECONDS so that the test does not wait a minute."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import fresh_database
from tests.limits.test_limits import needs_redis
from tests.reliability.harness import audit_cli
from tests.reliability.rest import Rest, make_tenant
from tests.reliability.test_cluster import upstream_requests
from tests.support.envoy import start_envoy
from tests.support.procs import start_services

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]

WINDOW_S = 6.0


@needs_redis
async def test_rpm_60_holds_across_two_replica_processes(tmp_path: Path) -> None:
    url = await fresh_database("postgres", tmp_path)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    procs = await start_services(
        url,
        tmp_path / "logs",
        2,
        REDIS_URL="redis://127.0.0.1:6379/0",
        REDIS_KEY_PREFIX=prefix,
        RATE_LIMIT_WINDOW_SECONDS=str(WINDOW_S),
    )
    envoy = await start_envoy([p.port for p in procs], direct_hosts=[p.direct_port for p in procs])
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
            rest = Rest(session, envoy.base_url)
            team, key, _group = await make_tenant(rest, 500, "simulator/ok", {"latency_ms": 5})
            await rest.ok("PATCH", f"/api/teams/{team}/limits", {"rpm_limit": 60})
            body = {
                "team_id": team,
                "job_type": "rl",
                "messages": [{"role": "user", "content": "hi"}],
            }
            before = await upstream_requests(envoy.admin_port, "service_http")
            for _window in range(2):
                # Start at the beginning of a window (the replicas' clock is this host's).
                await asyncio.sleep(WINDOW_S - time.time() % WINDOW_S + 0.05)
                results = await asyncio.gather(
                    *(
                        rest.call("POST", "/api/jobs/create-and-call", body, key=key)
                        for _ in range(90)
                    )
                )
                statuses = [s for s, _ in results]
                assert statuses.count(200) == 60, statuses
                assert statuses.count(429) == 30, statuses
                refused = [d for s, d in results if s == 429]
                assert all(d["details"][0]["reason"] == "RATE_LIMITED" for d in refused)
            after = await upstream_requests(envoy.admin_port, "service_http")
            served = {h: after[h] - before.get(h, 0) for h in after}
            assert len(served) == 2 and min(served.values()) > 20, served
            # Refused calls created no job and held no credit.
            balance = await rest.ok("GET", f"/api/credits/teams/{team}/balance", key=key)
            assert (balance["credits_used"], balance["credits_reserved"]) == (120, 0), balance
    finally:
        await envoy.stop()
        await asyncio.gather(*(p.stop() for p in procs))
    audit = await audit_cli(url)
    assert audit.returncode == 0, audit.stdout + audit.stderr
