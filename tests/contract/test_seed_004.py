"""Seed 004 ("Integration Overview") run against the real gateway: the Quick Start setup (curl),
Pattern A (job-based calls without a model_group), Pattern B (Server-Sent Events read with
`requests.iter_lines`), "Make Your First API Call", "Using the Virtual Key" and "Streaming vs
Non-Streaming", unchanged except for the base URL and the key (seed004_client.py,
seed004_setup.sh).
"""

from __future__ import annotations

import re

import aiohttp
import pytest

from tests.contract import seed004_client
from tests.contract.conftest import (
    HERE,
    admin_of,
    assert_verbatim,
    in_thread,
    run_script,
    seed_text,
)
from tests.rest.real_service import UUID_RE, RestClient, RestService

pytestmark = pytest.mark.envoy

SEED_URL = "http://localhost:8003"


async def step_1(svc: RestService) -> str:
    """Seed 004 "Step 1: Set Up Organization and Team", literally; returns acme-corp's key."""
    org, access_group, team = await run_script(
        "seed004_setup.sh", SAAS_API_BASE=svc.base_url, MASTER_KEY=svc.master_key
    )
    assert (org["organization_id"], org["name"], org["status"]) == (
        "org_acme",
        "ACME Corporation",
        "active",
    )
    assert list(access_group) == ["group_name", "description", "model_groups", "created_at"]
    assert (access_group["group_name"], access_group["description"]) == ("gpt-models", "GPT models")
    # Seed 004 "Getting Your Virtual Key / Response": these keys.
    assert [
        k for k in team if k in ("team_id", "virtual_key", "credits_allocated", "credits_remaining")
    ] == [
        "team_id",
        "credits_allocated",
        "credits_remaining",
        "virtual_key",
    ]
    assert (team["team_id"], team["credits_allocated"], team["credits_remaining"]) == (
        "acme-corp",
        1000,
        1000,
    )
    assert team["access_groups"] == ["gpt-models"]
    assert re.fullmatch(r"sk-[A-Za-z0-9_-]{32,}", team["virtual_key"])
    return str(team["virtual_key"])


async def give_acme_a_model_group(api: RestClient, **config: object) -> None:
    """The step seed 004 leaves out: its access group "gpt-models" names no models, so the
    admin assigns acme-corp a model group (simulator models: no provider key needed)."""
    await api.ok(
        "POST",
        "/api/model-groups/create",
        json={
            "group_name": "ChatAgent",
            "models": [{"model_name": "simulator/gpt-4o-mini", "priority": 0, "config": config}],
        },
    )
    await api.ok("PUT", "/api/teams/acme-corp/model-groups", json=["ChatAgent"])


async def test_literal_quick_start_needs_a_model_group(
    service: RestService, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run literally, seed 004's Quick Start gives acme-corp only an access group without
    models: "Make Your First API Call" then gets a clear 400 NO_MODEL_GROUP on its LLM call (and
    the snippet, which does not check statuses, fails on response['response'])."""
    key = await step_1(service)
    with pytest.raises(KeyError, match="response"):
        await in_thread(seed004_client.first_api_call, service.base_url, key)
    created = capsys.readouterr().out
    job_id = created.removeprefix("Created job: ").strip()
    assert UUID_RE.match(job_id), created
    api = admin_of(http, service)
    await api.with_key(key).err(
        "POST",
        f"/api/jobs/{job_id}/llm-call",
        400,
        "NO_MODEL_GROUP",
        message="Team 'acme-corp' has no model group assigned; pass model_group",
        json={"messages": [{"role": "user", "content": "Say hello!"}]},
    )


async def test_pattern_a_and_first_api_call(
    service_any: RestService, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    svc = service_any
    key = await step_1(svc)
    api = admin_of(http, svc)
    await give_acme_a_model_group(api)

    job, response, result = await in_thread(seed004_client.pattern_a, svc.base_url, key)
    assert capsys.readouterr().out == "Credits remaining: 999\n"
    assert (job["status"], UUID_RE.match(job["job_id"]) is not None) == ("pending", True)
    assert response["response"]["content"] == "Simulated response to: Analyze this..."
    assert response["metadata"]["model_group"] == "ChatAgent"  # no model_group: the team's first
    assert (result["status"], result["costs"]["credit_applied"]) == ("completed", True)

    await in_thread(seed004_client.first_api_call, svc.base_url, key)
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"Created job: [0-9a-f-]{36}", lines[0]), lines
    assert lines[1:] == ["Response: Simulated response to: Say hello!", "Credits remaining: 998"]

    answer = await in_thread(seed004_client.using_the_virtual_key, svc.base_url, key)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert list(answer.json()) == ["job_id", "status", "created_at"]

    jobs = await api.ok("GET", "/api/teams/acme-corp/jobs")
    assert [j["job_type"] for j in jobs["jobs"]] == ["analysis", "test", "document_analysis"]
    assert jobs["jobs"][1]["metadata"] == {"test": True}


async def test_pattern_b_streaming(
    service: RestService, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await step_1(service)
    api = admin_of(http, service)
    await give_acme_a_model_group(api, tokens_per_second=50)
    tk = api.with_key(key)
    job = await tk.ok(
        "POST", "/api/jobs/create", json={"team_id": "acme-corp", "job_type": "story"}
    )

    response = await in_thread(seed004_client.pattern_b, service.base_url, key, job["job_id"])
    response.close()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert capsys.readouterr().out == "Simulated response to: Tell me a story"
    done = await tk.ok("POST", f"/api/jobs/{job['job_id']}/complete", json={"status": "completed"})
    # "Full job tracking - Same credit model as non-streaming".
    assert (done["costs"]["credit_applied"], done["costs"]["credits_remaining"]) == (True, 999)
    assert done["calls"][0]["tokens"] > 0


async def test_streaming_vs_non_streaming(
    service: RestService, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await step_1(service)
    api = admin_of(http, service)
    await give_acme_a_model_group(api)
    tk = api.with_key(key)
    job = await tk.ok("POST", "/api/jobs/create", json={"team_id": "acme-corp", "job_type": "cmp"})
    messages = [{"role": "user", "content": "Compare both"}]
    content = await in_thread(
        seed004_client.streaming_vs_non_streaming, service.base_url, key, job["job_id"], messages
    )
    assert content == "Simulated response to: Compare both"
    # The streamed events print the same text ("" for events without content).
    assert capsys.readouterr().out == content
    got = await tk.ok("GET", f"/api/jobs/{job['job_id']}")
    assert [c["status"] for c in got["calls"]] == ["success", "success"]


VERBATIM = {
    "seed004_client.py": [
        [
            ('API = f"{base_url}/api"', f'API = "{SEED_URL}/api"'),
            ('f"Bearer {virtual_key}"', '"Bearer sk-your-virtual-key"'),
        ],
        [
            ('API = f"{base_url}/api"', f'API = "{SEED_URL}/api"'),
            ("VIRTUAL_KEY = virtual_key", 'VIRTUAL_KEY = "sk-your-virtual-key-here"'),
        ],
        [
            ('f"Bearer {virtual_key}"', '"Bearer sk-your-virtual-key-here"'),
            ('f"{base_url}/api/jobs/create"', f'"{SEED_URL}/api/jobs/create"'),
        ],
    ],
    "seed004_setup.sh": [[("$SAAS_API_BASE", SEED_URL)]],
}


@pytest.mark.parametrize("name", sorted(VERBATIM))
def test_examples_are_verbatim_from_the_seed(name: str) -> None:
    added = r'\n *-H "Authorization: Bearer \$MASTER_KEY" \\' if name.endswith(".sh") else None
    assert_verbatim(HERE / name, seed_text("004"), VERBATIM[name], added)
