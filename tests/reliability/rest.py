"""Job flows over REST through Envoy (aiohttp), for the replica, crash and shutdown tests."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.conftest import MASTER_KEY


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclass
class Rest:
    session: aiohttp.ClientSession
    base_url: str
    # Status codes seen, for the "no 5xx except where expected" checks.
    statuses: dict[int, int] = field(default_factory=dict)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        key: str | None = MASTER_KEY,
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with self.session.request(
            method,
            self.base_url + path,
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            raw = await resp.read()
            self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
            try:
                data = await resp.json(content_type=None) if raw else None
            except ValueError:
                data = raw.decode(errors="replace")
            return resp.status, data

    async def ok(
        self, method: str, path: str, body: Any = None, key: str | None = MASTER_KEY
    ) -> Any:
        status, data = await self.call(method, path, body, key)
        assert status == 200, (method, path, status, data)
        return data


async def make_tenant(
    rest: Rest, credits: int, model: str = "simulator/ok", config: dict[str, Any] | None = None
) -> tuple[str, str, str]:
    """(team_id, virtual_key, group_name) created through the REST API with the master key."""
    org = uid("org")
    group = uid("grp")
    team = uid("team")
    await rest.ok("POST", "/api/organizations/create", {"organization_id": org, "name": "Org"})
    await rest.ok(
        "POST",
        "/api/model-groups/create",
        {
            "group_name": group,
            "models": [{"model_name": model, "priority": 0, "config": config or {}}],
        },
    )
    created = await rest.ok(
        "POST",
        "/api/teams/create",
        {
            "organization_id": org,
            "team_id": team,
            "model_groups": [group],
            "credits_allocated": credits,
        },
    )
    return team, created["virtual_key"], group


def _expired(status: int, data: Any) -> bool:
    """The sweeper expired the job (idle past JOB_TIMEOUT while its replica was down)."""
    return status == 400 and ("JOB_NOT_OPEN" in str(data) or "expired" in str(data))


@dataclass
class FlowResult:
    outcome: str  # refused | charged | released | broken (a transport error mid-flow)
    job_id: str | None = None
    detail: str = ""


async def rest_flow(
    rest: Rest,
    team_id: str,
    key: str,
    group: str,
    i: int,
    *,
    duplicate_completes: int = 2,
    fail_every: int = 0,
    create_retries: int = 0,
    tolerate_errors: bool = False,
) -> FlowResult:
    """create -> llm-call -> complete (duplicated, concurrently). Every `fail_every`-th flow
    completes as "failed" (its credit is released); a refused create is retried
    `create_retries` times (released credits are spent again). With tolerate_errors, a
    5xx/transport error (a replica killed mid-flow), or a job the sweeper expired meanwhile, ends
    the flow as "broken" instead of failing."""
    job_id: str | None = None
    try:
        for attempt in range(create_retries + 1):
            status, data = await rest.call(
                "POST", "/api/jobs/create", {"team_id": team_id, "job_type": "flow"}, key
            )
            if not (status == 400 and "Insufficient credits" in str(data)):
                break
            if attempt == create_retries:
                return FlowResult("refused")
            await asyncio.sleep(0.02 + 0.03 * (i % 5))
        if status != 200:
            if tolerate_errors and status >= 500:
                return FlowResult("broken", None, f"create {status}")
            raise AssertionError(("create", status, data))
        job_id = data["job_id"]
        status, data = await rest.call(
            "POST",
            f"/api/jobs/{job_id}/llm-call",
            {"model_group": group, "messages": [{"role": "user", "content": f"flow {i}"}]},
            key,
        )
        if tolerate_errors and (status >= 500 or _expired(status, data)):
            return FlowResult("broken", job_id, f"call {status}")
        assert status == 200, ("call", status, data)
        final = "failed" if fail_every and i % fail_every == 0 else "completed"
        results = await asyncio.gather(
            *(
                rest.call("POST", f"/api/jobs/{job_id}/complete", {"status": final}, key)
                for _ in range(duplicate_completes)
            )
        )
        ok = [d for s, d in results if s == 200]
        bad = [s for s, d in results if s != 200]
        tolerated = [s >= 500 or _expired(s, d) for s, d in results if s != 200]
        if bad and not (tolerate_errors and all(tolerated)):
            raise AssertionError(("complete", results))
        if not ok:
            return FlowResult("broken", job_id, f"complete {bad}")
        applied = {d["costs"]["credit_applied"] for d in ok}
        assert len(applied) == 1, results  # duplicates agree: one settlement
        charged = applied.pop()
        assert charged == (final == "completed"), (final, results)
        return FlowResult("charged" if charged else "released", job_id)
    except (aiohttp.ClientError, TimeoutError) as exc:
        if tolerate_errors:
            return FlowResult("broken", job_id, type(exc).__name__)
        raise
