"""Hostile clients through real Envoy in front of the real service (issue 21, items 2-5 and 10),
on SQLite and PostgreSQL: the same input gets the same clean 4xx on both databases, never a 500
with internals, and the ledger stays clean.

- 2: JSON nested past the documented depth (32 levels) in metadata, message content, tools and
  model config is 400 INVALID_ARGUMENT; 32 levels pass and read back.
- 3: usage of period 9999-12 answers (was 500 "year 10000 is out of range").
- 4: a NUL character anywhere in client JSON is 400 on both databases (PostgreSQL could not
  store it: 500 UntranslatableCharacterError).
- 5: a body or query field never overrides the path: a different value is 400, on every route
  with a path variable.
- 10: a refused request logs the caller's x-request-id.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from google.protobuf import descriptor_pool

from service.audit import audit
from service.domain.validation import MAX_JSON_DEPTH
from service.logs import JsonFormatter
from tests.rest.real_service import (
    RestClient,
    RestService,
    create_group,
    create_org,
    create_team,
    routes,
    uid,
    user,
)

pytestmark = pytest.mark.envoy


def nested(levels: int, leaf: Any = "leaf") -> Any:
    """`levels` JSON objects inside each other ({"k": {"k": ... leaf}})."""
    value = leaf
    for _ in range(levels):
        value = {"k": value}
    return value


async def ledger_ok(svc: RestService) -> None:
    assert svc.app_client is not None
    report = await audit(svc.app_client.app.db)
    assert report.ok, report.violations


def no_internals(data: dict[str, Any]) -> None:
    for word in ("DecodeError", "MaxDepth", "class", "Traceback", "protobuf", "upb"):
        assert word not in data["message"], data


# --------------------------------------------------------------------------- 2: depth


async def test_json_nested_past_the_limit_is_a_clean_400(
    api_any: RestClient, rest_any: RestService
) -> None:
    api = api_any
    group = await create_group(api)
    team_id, key = await create_team(api, groups=[group])
    tk = api.with_key(key)
    job = await tk.ok("POST", "/api/jobs/create", json={"team_id": team_id, "job_type": "t"})
    job_id = job["job_id"]
    # Past the limit: our validation (33), the service's protobuf decoder (34-99), Envoy's
    # JSON parser (100+). Each a 400 with INVALID_ARGUMENT and no internals.
    for levels in (MAX_JSON_DEPTH + 1, MAX_JSON_DEPTH + 2, 50, 99, 150):
        deep = nested(levels)
        requests: list[tuple[str, str, dict[str, Any], RestClient]] = [
            ("POST", "/api/jobs/create", {"team_id": team_id, "job_type": "t", "metadata": deep}, tk),
            ("POST", f"/api/jobs/{job_id}/llm-call", {"messages": [{"role": "user", "content": deep}]}, tk),
            ("POST", f"/api/jobs/{job_id}/llm-call", {"messages": user("x"), "tools": [deep]}, tk),
            ("PATCH", f"/api/jobs/{job_id}/metadata", {"metadata": deep}, tk),
            ("POST", "/api/organizations/create", {"organization_id": uid("o"), "name": "n", "metadata": deep}, api),
            (
                "POST",
                "/api/model-groups/create",
                {"group_name": uid("g"), "models": [{"model_name": "simulator/x", "priority": 0, "config": deep}]},
                api,
            ),
        ]  # fmt: skip
        for method, path, body, client in requests:
            resp = await client.call(method, path, json=body)
            assert resp.status == 400, (levels, path, resp.status, resp.text[:300])
            data = resp.json()
            assert data["code"] == 3, (levels, path, data)
            no_internals(data)
    # At the limit: accepted, and every read that carries it back answers.
    deep = nested(MAX_JSON_DEPTH)
    ok = await tk.ok(
        "POST", "/api/jobs/create", json={"team_id": team_id, "job_type": "t", "metadata": deep}
    )
    got = await tk.ok("GET", f"/api/jobs/{ok['job_id']}")
    assert got["metadata"] == deep
    page = await tk.ok("GET", f"/api/teams/{team_id}/jobs")
    assert any(j["metadata"] == deep for j in page["jobs"])
    await tk.ok("POST", f"/api/jobs/{job_id}/llm-call", json={"messages": user("x")})
    await ledger_ok(rest_any)


# --------------------------------------------------------------------------- 3: period


async def test_usage_of_the_last_representable_month(
    api_any: RestClient, rest_any: RestService
) -> None:
    api = api_any
    org = await create_org(api)
    team_id, _ = await create_team(api, org=org)
    zero = {
        "total_jobs": 0,
        "successful_jobs": 0,
        "failed_jobs": 0,
        "total_cost_usd": 0,
        "total_tokens": 0,
        "avg_cost_per_job": 0,
    }
    for path in (f"/api/teams/{team_id}/usage", f"/api/organizations/{org}/usage"):
        data = await api.ok("GET", path, params={"period": "9999-12"})
        assert (data["period"], data["summary"]) == ("9999-12", zero)
        for bad in ("10000-01", "9999-13", "1969-12"):
            await api.err("GET", path, 400, "INVALID_ARGUMENT", params={"period": bad})


# --------------------------------------------------------------------------- 4: NUL


async def test_nul_in_client_json_is_400_on_both_databases(
    api_any: RestClient, rest_any: RestService
) -> None:
    api = api_any
    org = await create_org(api)
    group = await create_group(api)
    team_id, key = await create_team(api, groups=[group], org=org)
    tk = api.with_key(key)
    job_id = (await tk.ok("POST", "/api/jobs/create", json={"team_id": team_id, "job_type": "t"}))[
        "job_id"
    ]
    nul = "a\x00b"
    cases: list[tuple[str, str, dict[str, Any], RestClient, str]] = [
        ("POST", "/api/jobs/create", {"team_id": team_id, "job_type": "t", "metadata": {"k": nul}}, tk, "metadata"),
        ("POST", "/api/jobs/create", {"team_id": team_id, "job_type": "t", "metadata": {nul: 1}}, tk, "metadata"),
        ("POST", "/api/jobs/create", {"team_id": team_id, "job_type": "t", "metadata": {"k": [{"x": nul}]}}, tk, "metadata"),
        ("PATCH", f"/api/jobs/{job_id}/metadata", {"metadata": {"k": nul}}, tk, "metadata"),
        ("POST", f"/api/jobs/{job_id}/llm-call", {"messages": user(nul)}, tk, "messages"),
        ("POST", f"/api/jobs/{job_id}/llm-call", {"messages": [{"role": "user", "content": [{"type": "text", "text": nul}]}]}, tk, "messages"),
        ("POST", f"/api/jobs/{job_id}/llm-call", {"messages": user("x"), "tools": [{"name": nul}]}, tk, "tools"),
        ("POST", "/api/jobs/create-and-call", {"team_id": team_id, "job_type": "t", "messages": user(nul)}, tk, "messages"),
        ("POST", "/api/organizations/create", {"organization_id": uid("o"), "name": "n", "metadata": {"k": nul}}, api, "metadata"),
        ("POST", "/api/teams/create", {"organization_id": org, "team_id": uid("t"), "metadata": {"k": nul}}, api, "metadata"),
        (
            "POST",
            "/api/model-groups/create",
            {"group_name": uid("g"), "models": [{"model_name": "simulator/x", "priority": 0, "config": {"response": nul}}]},
            api,
            "models.config",
        ),
        ("POST", f"/api/credits/teams/{team_id}/add", {"credits_amount": 1, "reason": "r", "metadata": {"k": nul}}, api, "metadata"),
    ]  # fmt: skip
    for method, path, body, client, field in cases:
        data = await client.err(method, path, 400, "INVALID_ARGUMENT", json=body)
        assert data["details"][0]["metadata"]["field"] == field, (path, data)
        assert "NUL" in data["message"], data
    done = await tk.ok(
        "POST",
        f"/api/jobs/{job_id}/complete",
        json={"status": "completed", "metadata": {"k": "fine"}},
    )
    assert done["status"] == "completed"
    second = (await tk.ok("POST", "/api/jobs/create", json={"team_id": team_id, "job_type": "t"}))[
        "job_id"
    ]
    await tk.err(
        "POST",
        f"/api/jobs/{second}/complete",
        400,
        "INVALID_ARGUMENT",
        json={"status": "completed", "metadata": {"k": nul}},
    )
    await ledger_ok(rest_any)


# --------------------------------------------------------------------------- 5: path wins


def _body_field(rpc: str) -> str:
    """The google.api.http `body` of an RPC ("*", a field name, or "")."""
    from google.api import annotations_pb2  # type: ignore[import-untyped]

    method = descriptor_pool.Default().FindMethodByName(rpc)
    return str(method.GetOptions().Extensions[annotations_pb2.http].body)


async def test_a_body_or_query_field_never_overrides_the_path(
    api_any: RestClient, rest_any: RestService
) -> None:
    """The issue's two reproductions, then every route with a path variable: a body (body "*")
    or query (other routes) value that differs from the path is 400 naming the field, before
    the RPC does anything."""
    api = api_any
    team_b, key_b = await create_team(api)
    team_c, _ = await create_team(api)
    before = await api.ok("GET", f"/api/credits/teams/{team_b}/balance")
    data = await api.err(
        "POST",
        f"/api/credits/teams/{team_c}/add",
        400,
        "INVALID_ARGUMENT",
        json={"team_id": team_b, "credits_amount": 500, "reason": "r"},
    )
    assert data["details"][0]["metadata"]["field"] == "team_id"
    assert await api.ok("GET", f"/api/credits/teams/{team_b}/balance") == before
    team_a, key_a = await create_team(api)
    await api.with_key(key_a).err(
        "GET", f"/api/teams/{team_a}/jobs", 400, "INVALID_ARGUMENT", params={"team_id": team_b}
    )
    # The same value in both places is fine.
    await api.ok(
        "POST",
        f"/api/credits/teams/{team_c}/add",
        json={"team_id": team_c, "credits_amount": 1, "reason": "r"},
    )
    await api.with_key(key_b).ok("GET", f"/api/teams/{team_b}/jobs", params={"team_id": team_b})

    checked = 0
    for route in routes():
        fields = [part[1:-1] for part in route.template.split("/") if part.startswith("{")]
        if not fields:
            continue
        path = route.template
        for name in fields:
            path = path.replace("{" + name + "}", uid("path"))
        body_field = _body_field(route.rpc)
        for name in fields:
            if body_field == "*":
                kwargs: dict[str, Any] = {"json": {name: "other"}}
            else:
                kwargs = {"params": {name: "other"}}
                if body_field:
                    kwargs["json"] = []
            data = await api.err(route.method, path, 400, "INVALID_ARGUMENT", **kwargs)
            assert data["details"][0]["metadata"]["field"] == name, (route, data)
            checked += 1
    assert checked >= 25
    await ledger_ok(rest_any)


# --------------------------------------------------------------------------- 10: request id


async def test_a_refused_request_logs_the_callers_request_id(api: RestClient) -> None:
    """The access line of a refused request carries the caller's x-request-id (formatted as the
    service formats it: the request context is read when the line is written)."""
    team_id, key = await create_team(api)
    cases = [
        (api.with_key(None), "GET", f"/api/teams/{team_id}", 401),
        (api.with_key("sk-" + "n" * 40), "GET", f"/api/teams/{team_id}", 401),
        (api.with_key(key), "POST", "/api/organizations/create", 403),
    ]
    lines: list[dict[str, Any]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter().format(record)))

    access = logging.getLogger("service.access")
    handler, level = Capture(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        for client, method, path, status in cases:
            rid = uid("rid")
            resp = await client.call(method, path, json={}, headers={"x-request-id": rid})
            assert resp.status == status, resp.text
            assert resp.headers["x-request-id"] == rid
            # The access line is written as the RPC's handler returns, a moment after the answer.
            async with asyncio.timeout(2):
                while not (logged := [x for x in lines if x.get("request_id") == rid]):
                    await asyncio.sleep(0.01)
            assert len(logged) == 1, logged
            assert logged[0]["code"] in ("UNAUTHENTICATED", "PERMISSION_DENIED"), logged[0]
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
