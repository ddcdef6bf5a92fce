"""Issue 16 limits through real Envoy (REST transcoding): PATCH /api/teams/{team_id}/limits, the
team JSON the admin dashboard reads, 400 JOB_LIMIT_EXCEEDED and 429 RATE_LIMITED as REST
clients see them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.rest.real_service import (
    RestClient,
    RestService,
    create_group,
    create_org,
    create_team,
    serve_real,
    uid,
    user,
)

pytestmark = pytest.mark.envoy

LIMITS = ("rpm_limit", "tpm_limit", "max_calls_per_job", "max_tokens_per_job", "max_job_cost_usd")


@pytest.fixture(scope="module")
async def svc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RestService]:
    async with serve_real("sqlite", tmp_path_factory.mktemp("limits")) as s:
        yield s


@pytest.fixture
async def api(svc: RestService) -> AsyncIterator[RestClient]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        yield RestClient(http, svc.base_url, svc.master_key)


async def test_patch_limits_and_get_team(api: RestClient) -> None:
    team_id, key = await create_team(api)
    team = await api.ok("GET", f"/api/teams/{team_id}")
    # The fields the admin dashboard renders (gateway/admin/teams.js LIMIT_FIELDS).
    assert {k: team[k] for k in LIMITS} == {
        "rpm_limit": 0,
        "tpm_limit": 0,
        "max_calls_per_job": 100,
        "max_tokens_per_job": 0,
        "max_job_cost_usd": 0,
    }
    patched = await api.ok(
        "PATCH", f"/api/teams/{team_id}/limits", json={"rpm_limit": 60, "max_job_cost_usd": 0.5}
    )
    assert (patched["rpm_limit"], patched["max_job_cost_usd"]) == (60, 0.5)
    patched = await api.ok("PATCH", f"/api/teams/{team_id}/limits", json={"tpm_limit": 1000})
    assert (patched["rpm_limit"], patched["tpm_limit"]) == (60, 1000)
    team = await api.ok("GET", f"/api/teams/{team_id}")
    assert (team["rpm_limit"], team["tpm_limit"], team["max_calls_per_job"]) == (60, 1000, 100)

    await api.err(
        "PATCH", f"/api/teams/{team_id}/limits", 400, "INVALID_ARGUMENT", json={"rpm_limit": -1}
    )
    await api.err(
        "PATCH",
        f"/api/teams/{team_id}/limits",
        400,
        "INVALID_ARGUMENT",
        json={"max_job_cost_usd": -0.5},
    )
    await api.with_key(key).err(
        "PATCH", f"/api/teams/{team_id}/limits", 403, "ADMIN_REQUIRED", json={"rpm_limit": 1}
    )
    await api.err(
        "PATCH", f"/api/teams/{uid('none')}/limits", 404, "TEAM_NOT_FOUND", json={"rpm_limit": 1}
    )


async def test_create_with_limits_then_refusals_over_rest(api: RestClient) -> None:
    org = await create_org(api)
    group = await create_group(api)
    team_id = uid("team")
    created = await api.ok(
        "POST",
        "/api/teams/create",
        json={
            "organization_id": org,
            "team_id": team_id,
            "model_groups": [group],
            "credits_allocated": 5,
            "max_calls_per_job": 1,
            "rpm_limit": 3,
        },
    )
    team_api = api.with_key(created["virtual_key"])
    job = await team_api.ok(
        "POST", "/api/jobs/create", json={"team_id": team_id, "job_type": "limits"}
    )
    path = f"/api/jobs/{job['job_id']}/llm-call"
    await team_api.ok("POST", path, json={"messages": user("hi")})
    body = await team_api.err(
        "POST", path, 400, "JOB_LIMIT_EXCEEDED", json={"messages": user("hi")}
    )
    assert "max_calls_per_job" in body["message"]

    job2 = await team_api.ok(
        "POST", "/api/jobs/create", json={"team_id": team_id, "job_type": "limits"}
    )
    await team_api.ok("POST", f"/api/jobs/{job2['job_id']}/llm-call", json={"messages": user("a")})
    # The refused call was not counted: the team has made 2 of its 3 calls this minute.
    job3 = await team_api.ok(
        "POST", "/api/jobs/create", json={"team_id": team_id, "job_type": "limits"}
    )
    await team_api.ok("POST", f"/api/jobs/{job3['job_id']}/llm-call", json={"messages": user("b")})
    job4 = await team_api.ok(
        "POST", "/api/jobs/create", json={"team_id": team_id, "job_type": "limits"}
    )
    body = await team_api.err(
        "POST",
        f"/api/jobs/{job4['job_id']}/llm-call",
        429,
        "RATE_LIMITED",
        json={"messages": user("c")},
    )
    meta = body["details"][0]["metadata"]
    assert meta["limit"] == "rpm" and 1 <= int(meta["retry_after_seconds"]) <= 60
