"""Issue 16 on a real cluster: two `python -m service serve` replicas on one PostgreSQL database
and the real Redis, each behind an Envoy of its own (so that the test chooses the replica), the
fake OpenAI-compatible upstream counting what reaches a provider. A model that fails on one
replica is skipped by the other; an answer cached by one is served by the other; the JSON
answers say so (`"cached": true`, `GET /health` `breakers`); the auditor passes."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.api.test_cooldowns_and_cache import needs_redis, requests_to
from tests.conftest import fresh_database
from tests.reliability.harness import audit_cli
from tests.reliability.rest import Rest, uid
from tests.support.envoy import start_envoy
from tests.support.procs import start_services
from tests.support.upstream import FakeUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.envoy]


async def test_two_replicas_share_breakers_and_cached_answers(tmp_path: Path) -> None:
    needs_redis()
    url = await fresh_database("postgres", tmp_path)
    prefix = f"test16b:{uuid.uuid4().hex[:12]}:"
    procs = await start_services(
        url,
        tmp_path / "logs",
        2,
        REDIS_URL="redis://127.0.0.1:6379/0",
        REDIS_KEY_PREFIX=prefix,
        BREAKER_FAILURES=2,
        BREAKER_COOLDOWN_SECONDS=60,
        BREAKER_SYNC_SECONDS=0.2,
        LOG_LEVEL="WARNING",
    )
    envoys = []
    try:
        envoys = [await start_envoy([p.port], direct_hosts=[p.direct_port]) for p in procs]
        async with FakeUpstream() as upstream, aiohttp.ClientSession() as session:
            a, b = (Rest(session, e.base_url) for e in envoys)
            base = upstream.base_url
            upstream.set_behavior("flaky", status=502)
            upstream.set_behavior("steady", content="steady")
            upstream.set_behavior("cachy", content="cached once")
            org, team = uid("org"), uid("team")
            failing, cached = uid("grp"), uid("grp")
            await a.ok("POST", "/api/organizations/create", {"organization_id": org, "name": "O"})
            await a.ok(
                "POST",
                "/api/model-groups/create",
                {
                    "group_name": failing,
                    "models": [
                        {"model_name": "openai/flaky", "priority": 0, "config": {"api_base": base}},
                        {
                            "model_name": "openai/steady",
                            "priority": 1,
                            "config": {"api_base": base},
                        },
                    ],
                },
            )
            created = await a.ok(
                "POST",
                "/api/model-groups/create",
                {
                    "group_name": cached,
                    "models": [{"model_name": "openai/cachy", "config": {"api_base": base}}],
                    "cache_ttl_seconds": 60,
                },
            )
            assert created["cache_ttl_seconds"] == 60
            team_created = await a.ok(
                "POST",
                "/api/teams/create",
                {
                    "organization_id": org,
                    "team_id": team,
                    "model_groups": [failing, cached],
                    "credits_allocated": 5,
                },
            )
            key = team_created["virtual_key"]
            job = await a.ok(
                "POST", "/api/jobs/create", {"team_id": team, "job_type": "t"}, key=key
            )
            job_id = job["job_id"]

            async def llm_call(rest: Rest, group: str, text: str = "hi") -> dict[str, Any]:
                body = {
                    "model_group": group,
                    "messages": [{"role": "user", "content": text}],
                }
                answer: dict[str, Any] = await rest.ok(
                    "POST", f"/api/jobs/{job_id}/llm-call", body, key=key
                )
                return answer

            # Replica A: two failures in a row open the circuit.
            for _ in range(2):
                assert (await llm_call(a, failing))["response"]["content"] == "steady"
            assert requests_to(upstream, "flaky") == 2

            # Replica B learns it through Redis: its health shows it, its calls skip the model.
            deadline = time.monotonic() + 5
            while True:
                health = await b.ok("GET", "/health", key=None)
                if health["breakers"]:
                    break
                assert time.monotonic() < deadline, health
                await asyncio.sleep(0.1)
            (breaker,) = health["breakers"]
            assert breaker["model"].startswith("openai/flaky@")
            assert breaker["state"] == "open" and breaker["consecutive_failures"] == 2
            assert health["status"] == "healthy"
            for _ in range(3):
                assert (await llm_call(b, failing))["response"]["content"] == "steady"
            assert requests_to(upstream, "flaky") == 2

            # The response cache: A asks the provider, B answers from Redis.
            first = await llm_call(a, cached, "same")
            second = await llm_call(b, cached, "same")
            assert first["metadata"]["cached"] is False
            assert second["metadata"]["cached"] is True
            assert second["response"]["content"] == "cached once"
            assert requests_to(upstream, "cachy") == 1

            done = await b.ok(
                "POST", f"/api/jobs/{job_id}/complete", {"status": "completed"}, key=key
            )
            assert done["costs"]["total_calls"] == 7 and done["costs"]["credit_applied"]
        result = await audit_cli(url)
        assert result.returncode == 0 and not result.violations, result.stdout + result.stderr
    finally:
        for e in envoys:
            await e.stop()
        await asyncio.gather(*(p.stop() for p in procs))
        import redis.asyncio as aioredis

        r = aioredis.from_url("redis://127.0.0.1:6379/0")
        keys = [k async for k in r.scan_iter(match=prefix + "*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
