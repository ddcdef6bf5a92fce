"""Seed 003 (the "SaaS LiteLLM API Integration Guide") run against the real gateway: its Quick
Start curl commands, its Python and Node.js clients, its model-resolution client and its
monitoring curl examples, each unchanged except for the base URL and an added Authorization
header (see the header of each seed file in this directory). The answers must have the keys the
seed documents.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from tests.contract import seed003_agent_client, seed003_client
from tests.contract.conftest import (
    HERE,
    admin_of,
    assert_verbatim,
    authorized,
    in_thread,
    node_or_skip,
    run_process,
    run_script,
    seed_text,
)
from tests.rest.real_service import UUID_RE, RestClient, RestService, serve_subprocess, user

pytestmark = pytest.mark.envoy

SEED_URL = "https://llm-saas.usegittie.com"
DOCUMENT = "Jane Doe. Senior engineer, ten years of Python."

# The keys seed 003 prints for each answer, in its order.
ORGANIZATION_KEYS = ["organization_id", "name", "status", "metadata", "created_at", "updated_at"]
MODEL_GROUP_KEYS = [
    "model_group_id",
    "group_name",
    "display_name",
    "description",
    "status",
    "models",
    "created_at",
]
TEAM_CREATE_KEYS = [
    "team_id",
    "organization_id",
    "model_groups",
    "credits_allocated",
    "credits_remaining",
    "virtual_key",
    "message",
]
LLM_CALL_KEYS = ["call_id", "response", "metadata"]
COMPLETE_KEYS = ["job_id", "status", "completed_at", "costs", "calls"]
COSTS_KEYS = [
    "total_calls",
    "successful_calls",
    "failed_calls",
    "total_tokens",
    "total_cost_usd",
    "avg_latency_ms",
    "credit_applied",
    "credits_remaining",
]
CALL_KEYS = ["call_id", "purpose", "model_group", "tokens", "latency_ms", "error"]
# The seed's keys, then ours: the OpenAI-compatible API's calls (issue 15).
USAGE_KEYS = ["team_id", "period", "summary", "job_types", "direct_calls"]
SUMMARY_KEYS = [
    "total_jobs",
    "successful_jobs",
    "failed_jobs",
    "total_cost_usd",
    "total_tokens",
    "avg_cost_per_job",
]
TRANSACTION_KEYS = [
    "transaction_id",
    "team_id",
    "transaction_type",
    "credits_amount",
    "balance_after",
    "reason",
    "job_id",
    "created_at",
]


def has_seed_keys(data: dict[str, Any], seed_keys: list[str]) -> bool:
    """All the keys the seed shows, in the seed's order (the gateway may add others)."""
    return [k for k in data if k in seed_keys] == seed_keys


async def seed_tenant(api: RestClient, groups: dict[str, list[str]] | None = None) -> str:
    """What the examples expect to exist: org_your_company, the model groups (simulator models by
    default, so that calls need no provider key), team_engineering with 1000 credits. Returns
    the team's virtual key."""
    groups = groups or {
        "ResumeAgent": ["simulator/gpt-4o", "simulator/gpt-4-turbo"],
        "ChatAgent": ["simulator/gpt-3.5-turbo", "simulator/gpt-4"],
    }
    await api.ok(
        "POST",
        "/api/organizations/create",
        json={"organization_id": "org_your_company", "name": "Your Company"},
    )
    for name, models in groups.items():
        await api.ok(
            "POST",
            "/api/model-groups/create",
            json={
                "group_name": name,
                "models": [{"model_name": m, "priority": i} for i, m in enumerate(models)],
            },
        )
    team = await api.ok(
        "POST",
        "/api/teams/create",
        json={
            "organization_id": "org_your_company",
            "team_id": "team_engineering",
            "team_alias": "Engineering Team",
            "model_groups": list(groups),
            "credits_allocated": 1000,
        },
    )
    return str(team["virtual_key"])


# --------------------------------------------------------------------------- (a) Quick Start


async def quick_start(svc: RestService, http: aiohttp.ClientSession) -> None:
    org, group, team = await run_script(
        "seed003_quickstart_setup.sh", SAAS_API_BASE=svc.base_url, MASTER_KEY=svc.master_key
    )
    assert has_seed_keys(org, ORGANIZATION_KEYS), org
    assert (org["organization_id"], org["status"], org["metadata"]) == (
        "org_your_company",
        "active",
        {"tier": "premium"},
    )
    assert has_seed_keys(group, MODEL_GROUP_KEYS), group
    assert (group["group_name"], group["status"]) == ("ChatAgent", "active")
    assert [m["priority"] for m in group["models"]] == [0, 1]
    assert has_seed_keys(team, TEAM_CREATE_KEYS), team
    assert (team["team_id"], team["credits_allocated"], team["credits_remaining"]) == (
        "team_engineering",
        1000,
        1000,
    )
    assert team["model_groups"] == ["ChatAgent"]
    assert team["message"] == "Team created successfully with LiteLLM integration"
    assert re.fullmatch(r"sk-[A-Za-z0-9_-]{32,}", team["virtual_key"])

    call, done = await run_script(
        "seed003_quickstart_calls.sh", SAAS_API_BASE=svc.base_url, TEAM_KEY=team["virtual_key"]
    )
    assert has_seed_keys(call, LLM_CALL_KEYS), call
    assert call["response"]["content"] == "Simulated response to: Analyze this document..."
    assert call["response"]["finish_reason"] == "stop"
    assert call["metadata"]["model_group"] == "ChatAgent"
    assert has_seed_keys(done, COMPLETE_KEYS), done
    assert has_seed_keys(done["costs"], COSTS_KEYS), done
    assert (done["status"], done["costs"]["credit_applied"]) == ("completed", True)
    assert done["costs"]["credits_remaining"] == 999
    assert has_seed_keys(done["calls"][0], CALL_KEYS)
    assert done["calls"][0]["purpose"] == "initial_analysis"
    assert done["calls"][0]["error"] is None

    api = admin_of(http, svc)
    balance = await api.ok("GET", "/api/credits/teams/team_engineering/balance")
    assert (balance["credits_used"], balance["credits_remaining"]) == (1, 999)


async def test_quick_start_curl(service_any: RestService, http: aiohttp.ClientSession) -> None:
    await quick_start(service_any, http)


async def test_quick_start_against_python_m_service(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The same Quick Start against the service as `make run` starts it: `python -m service
    migrate`, then `python -m service serve` configured by DATABASE_URL / MASTER_KEY /
    GRPC_PORT, behind Envoy."""
    async with serve_subprocess(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}") as svc:
        await quick_start(svc, http)


# --------------------------------------------------------------------------- (b) Python client


async def test_python_client_document_analysis(
    service_any: RestService, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    svc = service_any
    api = admin_of(http, svc)
    key = await seed_tenant(api)
    with authorized(seed003_client, key):
        await in_thread(seed003_client.document_analysis_workflow, svc.base_url, DOCUMENT)
        client = seed003_client.SaasLLMClient(base_url=svc.base_url, team_id="team_engineering")
        credits = await in_thread(client.get_credits)
    # The seed's workflow swallows errors (it completes the job as failed): what it printed
    # and what the gateway recorded say it succeeded.
    assert capsys.readouterr().out == "Job completed. Credits remaining: 999\n"
    assert (credits["credits_used"], credits["credits_remaining"]) == (1, 999)
    assert credits["credit_limit"] is None
    jobs = await api.ok("GET", "/api/teams/team_engineering/jobs")
    assert jobs["total_jobs"] == 1
    job = await api.ok("GET", f"/api/jobs/{jobs['jobs'][0]['job_id']}")
    assert (job["status"], job["job_type"], job["user_id"]) == (
        "completed",
        "document_analysis",
        "user_123",
    )
    assert job["metadata"] == {"document_id": "doc_456"}
    assert job["result_metadata"] == {"result": "success"}
    assert [c["purpose"] for c in job["calls"]] == ["parsing", "analysis"]
    assert all(c["status"] == "success" for c in job["calls"])


async def test_python_client_error_handling(
    service: RestService, http: aiohttp.ClientSession
) -> None:
    """Seed 003 "Best Practices / 4. Error Handling": the seed's client raises requests.HTTPError
    with the documented status codes."""
    api = admin_of(http, service)
    key = await seed_tenant(api)
    await api.ok(
        "POST",
        "/api/model-groups/create",
        json={"group_name": "Locked", "models": [{"model_name": "simulator/x", "priority": 0}]},
    )
    await api.ok(
        "POST",
        "/api/model-groups/create",
        json={
            "group_name": "Flaky",
            "models": [
                {"model_name": "simulator/down", "priority": 0, "config": {"fail_with": 503}}
            ],
        },
    )
    await api.ok("PUT", "/api/teams/team_engineering/model-groups", json=["ChatAgent", "Flaky"])
    messages = user("Hello")

    def scenario() -> dict[str, requests.Response]:
        client = seed003_client.SaasLLMClient(base_url=service.base_url, team_id="team_engineering")
        job_id = client.create_job(job_type="error_demo")
        calls = {
            "access": lambda: client.llm_call(job_id, "Locked", messages),
            "not_found": lambda: client.llm_call("no-such-job", "ChatAgent", messages),
            "llm": lambda: client.llm_call(job_id, "Flaky", messages),
        }
        errors: dict[str, requests.Response] = {}
        for name, call in calls.items():
            try:
                call()
            except requests.HTTPError as e:
                errors[name] = e.response
        client.complete_job(job_id, status="failed", error_message="demo")
        return errors

    with authorized(seed003_client, key):
        errors = await in_thread(scenario)
    assert errors["access"].status_code == 403
    assert errors["access"].json()["message"] == (
        "Team 'team_engineering' does not have access to model group 'Locked'"
    )
    assert errors["not_found"].status_code == 404
    assert errors["llm"].status_code == 500
    assert errors["llm"].json()["message"].startswith("LLM call failed: ")

    # The seed says a 500 may also mean "insufficient credits"; this gateway answers 400
    # (FAILED_PRECONDITION: retrying cannot help), with the seed's message.
    broke = await api.ok(
        "POST",
        "/api/teams/create",
        json={"organization_id": "org_your_company", "team_id": "team_broke"},
    )
    with authorized(seed003_client, broke["virtual_key"]):
        client = seed003_client.SaasLLMClient(base_url=service.base_url, team_id="team_broke")
        with pytest.raises(requests.HTTPError) as info:
            await in_thread(client.create_job, "t")
    assert info.value.response.status_code == 400
    assert info.value.response.json()["message"] == (
        "Insufficient credits. Required: 1, Available: 0"
    )


# --------------------------------------------------------------------------- (c) Node.js client


async def test_node_client_analyze_document(
    service: RestService, http: aiohttp.ClientSession
) -> None:
    node = node_or_skip()
    api = admin_of(http, service)
    key = await seed_tenant(api)
    code, out, err = await run_process(
        node,
        "seed003_client.js",
        DOCUMENT,
        env={"SAAS_API_BASE": service.base_url, "SAAS_API_KEY": key},
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Credits remaining: 999", out
    assert lines[1].startswith("Analysis: Simulated response to: Analyze: Simulated response to:")
    jobs = await api.ok("GET", "/api/teams/team_engineering/jobs?status=completed")
    job = await api.ok("GET", f"/api/jobs/{jobs['jobs'][0]['job_id']}")
    assert (job["user_id"], job["metadata"]) == ("user_123", {"document_id": "doc_456"})
    assert [c["purpose"] for c in job["calls"]] == ["parsing", "analysis"]


async def test_node_recommended_integration_pattern(
    service: RestService, http: aiohttp.ClientSession
) -> None:
    node = node_or_skip()
    api = admin_of(http, service)
    key = await seed_tenant(api)
    code, out, err = await run_process(
        node,
        "seed003_integration_flow.mjs",
        env={"SAAS_API_BASE": service.base_url, "SAAS_API_KEY": key},
    )
    assert code == 0, err
    assert out == "Credits remaining: 999\n", (out, err)
    jobs = await api.ok("GET", "/api/teams/team_engineering/jobs")
    assert [j["status"] for j in jobs["jobs"]] == ["completed"]
    job = jobs["jobs"][0]
    assert job["metadata"] == {"task_id": "task_123", "document_name": "resume.pdf"}
    assert job["result_metadata"] == {"result": "success", "calls_made": 2}


# --------------------------------------------------------------------------- (e) model resolution


async def test_agent_model_client_resolves_models(
    service: RestService, http: aiohttp.ClientSession
) -> None:
    """Seed 003 "Model Resolution API": `get_model_for_agent` (the OpenAI call of `chat()` needs
    a LiteLLM proxy, which this gateway is not: not run)."""
    api = admin_of(http, service)
    key = await seed_tenant(
        api,
        {
            "ResumeAgent": ["gpt-4o", "gpt-4-turbo", "gpt-3.5-turbo"],
            "ChatAgent": ["gpt-3.5-turbo", "gpt-4"],
            "AnalysisAgent": ["gpt-4-turbo", "claude-3-sonnet"],
        },
    )
    await api.ok(
        "POST",
        "/api/model-groups/create",
        json={"group_name": "LockedAgent", "models": [{"model_name": "o1", "priority": 0}]},
    )
    with authorized(seed003_agent_client, key) as session:
        seen: list[str] = []
        session.hooks["response"].append(lambda r, *args, **kwargs: seen.append(r.url))
        client, models = await in_thread(
            seed003_agent_client.multi_agent_session, service.base_url, key
        )
        try:
            # The seed's comments: ResumeAgent -> gpt-4o, ChatAgent -> gpt-3.5-turbo,
            # AnalysisAgent -> gpt-4-turbo.
            assert models == ("gpt-4o", "gpt-3.5-turbo", "gpt-4-turbo")
            assert len(seen) == 3
            assert seen[0] == (
                f"{service.base_url}/api/model-groups/ResumeAgent/resolve?team_id=team_engineering"
            )
            # Cached for the session: no second request.
            assert await in_thread(client.get_model_for_agent, "ResumeAgent") == "gpt-4o"
            assert len(seen) == 3
            # "Returns error if team doesn't have access": 403 for the team's own key.
            with pytest.raises(requests.HTTPError) as info:
                await in_thread(client.get_model_for_agent, "LockedAgent")
            assert info.value.response.status_code == 403
        finally:
            client.openai.close()
    # With the master key the answer is team_has_access: false, and the seed's code raises.
    with authorized(seed003_agent_client, service.master_key):
        admin_client, _ = await in_thread(
            seed003_agent_client.multi_agent_session, service.base_url, service.master_key
        )
        try:
            with pytest.raises(PermissionError, match="LockedAgent"):
                await in_thread(admin_client.get_model_for_agent, "LockedAgent")
        finally:
            admin_client.openai.close()


# --------------------------------------------------------------------------- (f) monitoring


async def test_monitoring_curl_examples(service: RestService, http: aiohttp.ClientSession) -> None:
    api = admin_of(http, service)
    key = await seed_tenant(api)
    tk = api.with_key(key)
    job = await tk.ok(
        "POST",
        "/api/jobs/create",
        json={"team_id": "team_engineering", "job_type": "document_analysis"},
    )
    await tk.ok("POST", f"/api/jobs/{job['job_id']}/llm-call", json={"messages": user("x")})
    await tk.ok("POST", f"/api/jobs/{job['job_id']}/complete", json={"status": "completed"})

    resolve, usage, transactions = await run_script(
        "seed003_monitoring.sh", SAAS_API_BASE=service.base_url, TEAM_KEY=key
    )
    assert resolve == {
        "group_name": "ResumeAgent",
        "primary_model": "simulator/gpt-4o",
        "fallback_models": ["simulator/gpt-4-turbo"],
        "team_has_access": True,
    }
    # The seed's literal period (2025-10) has no jobs here: every number is printed as 0.
    assert list(usage) == USAGE_KEYS
    assert (usage["team_id"], usage["period"]) == ("team_engineering", "2025-10")
    assert list(usage["summary"]) == SUMMARY_KEYS
    assert set(usage["summary"].values()) == {0}
    assert usage["job_types"] == {}
    assert list(transactions) == ["team_id", "total_transactions", "transactions"]
    assert transactions["total_transactions"] == 3
    assert all(list(t) == TRANSACTION_KEYS for t in transactions["transactions"])
    assert transactions["transactions"][0]["transaction_type"] == "deduction"
    assert transactions["transactions"][0]["credits_amount"] == 1
    assert transactions["transactions"][0]["job_id"] == job["job_id"]
    assert UUID_RE.match(transactions["transactions"][0]["transaction_id"])

    # The same request for the current month shows the seed's job_types shape.
    period = datetime.now(UTC).strftime("%Y-%m")
    now = await tk.ok("GET", f"/api/teams/team_engineering/usage?period={period}")
    assert now["summary"]["total_jobs"] == 1
    assert now["summary"]["successful_jobs"] == 1
    assert now["job_types"] == {"document_analysis": {"count": 1, "cost_usd": 0}}


# --------------------------------------------------------------------------- verbatim


MASTER_LINE = r'\n *-H "Authorization: Bearer \$MASTER_KEY" \\'
TEAM_LINE = r'\n *-H "Authorization: Bearer \$TEAM_KEY" \\'
VERBATIM = {
    "seed003_client.py": ([("base_url=base_url", f'base_url="{SEED_URL}"')], None),
    "seed003_agent_client.py": (
        [
            ("saas_api_url=saas_api_url", f'saas_api_url="{SEED_URL}"'),
            ("virtual_key=virtual_key", 'virtual_key="sk-xxx..."'),
        ],
        None,
    ),
    "seed003_client.js": ([("process.env.SAAS_API_BASE", f"'{SEED_URL}'")], None),
    "seed003_integration_flow.mjs": ([], None),
    "seed003_quickstart_setup.sh": (
        [
            ("$SAAS_API_BASE", SEED_URL),
            ('"model_name": "simulator/gpt-', '"model_name": "gpt-'),
        ],
        MASTER_LINE,
    ),
    "seed003_quickstart_calls.sh": ([("$SAAS_API_BASE", SEED_URL)], TEAM_LINE),
    "seed003_monitoring.sh": (
        [("$SAAS_API_BASE", SEED_URL)],
        r' -H "Authorization: Bearer \$TEAM_KEY"',
    ),
}


@pytest.mark.parametrize("name", sorted(VERBATIM))
def test_examples_are_verbatim_from_the_seed(name: str) -> None:
    replacements, added = VERBATIM[name]
    assert_verbatim(HERE / name, seed_text("003"), [replacements], added)
