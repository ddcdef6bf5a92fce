"""The job flow's REST paths served by the service's HTTP handler (api/rest_rpcs.py) answer
exactly as Envoy's transcoder answers them.

Two Envoys in front of the same real service: the project's config (the four paths go to the
HTTP handler) and the same config with that route removed (every path through the transcoder
to gRPC). Each request of a corpus (valid calls, nulls and unknown fields, path and body
disagreeing, malformed and mistyped bodies, missing and foreign keys, unknown and escaped job
ids) goes to both; the answers must have the same status, content type and JSON: the same keys
in the same order with values of the same types, equal wherever the value is not an id, a time
or a measurement. Envoy's own parse errors and ours differ only in their message text.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.envoy_config import render
from service.api.rest_rpcs import JOB_FLOW
from tests.conftest import MASTER_KEY
from tests.rest.real_service import (
    RestClient,
    RestService,
    create_group,
    create_team,
    uid,
    user,
)
from tests.support.envoy import Envoy, start_envoy

pytestmark = pytest.mark.envoy

# Values that differ between two identical requests (ids, times, measurements).
VOLATILE = {
    "job_id",
    "call_id",
    "created_at",
    "completed_at",
    "latency_ms",
    "avg_latency_ms",
    "credits_remaining",
}


# The Struct fields of the four answers.
STRUCTS = {"tool_calls", "metadata", "result_metadata"}


@pytest.fixture(scope="module")
async def transcoded(rest_sqlite: RestService) -> AsyncIterator[Envoy]:
    """A second Envoy in front of the same service, every job path through the transcoder."""
    client = rest_sqlite.app_client
    assert client is not None
    envoy = await start_envoy(
        client.app.port, direct_hosts=[client.app.direct_http_port], job_flow_over_http=False
    )
    try:
        yield envoy
    finally:
        await envoy.stop()


def same_shape(a: Any, b: Any, where: str = "$", ordered: bool = True) -> None:
    """Same JSON: keys in the same order (a message's fields; the keys of a Struct, such as a
    tool call, in any order: protobuf prints a map in no particular order), values of the same
    type, equal unless volatile."""
    assert type(a) is type(b), (where, a, b)
    if isinstance(a, dict):
        if ordered:
            assert list(a) == list(b), (where, list(a), list(b))
        else:
            assert sorted(a) == sorted(b), (where, list(a), list(b))
        for k in a:
            if k in VOLATILE and ordered:
                assert type(a[k]) is type(b[k]), (where, k, a[k], b[k])
            else:
                inner = ordered and k not in STRUCTS
                same_shape(a[k], b[k], f"{where}.{k}", inner)
    elif isinstance(a, list):
        assert len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_shape(x, y, f"{where}[{i}]", ordered)
    else:
        assert a == b, (where, a, b)


async def both(
    fast: RestClient, slow: RestClient, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    """The same request through both Envoys; asserts the answers agree, returns one."""
    a = await fast.call(method, path, **kwargs)
    b = await slow.call(method, path, **kwargs)
    assert a.status == b.status, (path, kwargs, a.status, a.text[:400], b.status, b.text[:400])
    assert a.headers.get("content-type") == b.headers.get("content-type") == "application/json"
    assert not [h for h in a.headers if h.startswith("grpc-")], a.headers
    ja, jb = a.json(), b.json()
    if a.status != 200 and ja.get("details") == [] and jb.get("details") == []:
        # A body the parser refused: Envoy's words and ours differ, nothing else.
        assert (ja["code"], set(ja)) == (jb["code"], set(jb)) == (3, {"code", "message", "details"})
        assert ja["message"] and jb["message"]
    else:
        same_shape(ja, jb)
    return a.status, ja


async def sse(client: RestClient, path: str, body: Any) -> tuple[int, list[Any]]:
    """(status, the events' JSON) of a streamed answer."""
    resp = await client.call("POST", path, json=body)
    if resp.status != 200:
        return resp.status, [resp.json()]
    assert resp.headers.get("content-type") == "text/event-stream", resp.headers
    chunks = resp.body.split(b"\n\n")
    assert chunks[-1] == b"", chunks[-1]
    assert all(c.startswith(b"data: {") for c in chunks[:-1]), chunks
    return 200, [json.loads(c[len(b"data: ") :]) for c in chunks[:-1]]


async def test_the_handler_answers_as_the_transcoder(
    http: aiohttp.ClientSession, rest_sqlite: RestService, transcoded: Envoy
) -> None:
    admin_fast = RestClient(http, rest_sqlite.base_url, MASTER_KEY)
    group = await create_group(admin_fast)
    team, key = await create_team(admin_fast, credits=100, groups=[group])
    other_team, other_key = await create_team(admin_fast, credits=10)
    fast = admin_fast.with_key(key)
    slow = RestClient(http, transcoded.base_url, key)

    async def job() -> str:
        answer = await fast.ok("POST", "/api/jobs/create", json={"team_id": team, "job_type": "t"})
        return str(answer["job_id"])

    job_id = await job()
    call = f"/api/jobs/{job_id}/llm-call"
    ok_cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", call, {"json": {"messages": user("hi")}}),
        (
            "POST",
            call,
            {
                "json": {
                    "messages": [{"role": "user", "content": "hi", "name": None}],
                    "purpose": None,
                    "model_group": None,
                    "temperature": None,
                    "max_tokens": None,
                    "bogus": 1,
                    "nested": {"x": [1]},
                }
            },
        ),
        ("POST", call, {"json": {"job_id": job_id, "messages": user("same id")}}),
        ("POST", call, {"json": {"messages": user("q")}, "params": {"utm": "x"}}),
        (
            "POST",
            call,
            {"data": '{"messages": [{"role": "user", "content": "t"}]}', "headers": {}},
        ),
        (
            "POST",
            call,
            {
                "json": {
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]}],
                    "temperature": 0.5,
                    "max_tokens": 16,
                    "purpose": "p",
                }
            },
        ),
        (
            "POST",
            call,
            {
                "json": {
                    "messages": user("use the tool"),
                    "tools": [
                        {
                            "type": "function",
                            "function": {
                                "name": "lookup",
                                "parameters": {
                                    "type": "object",
                                    "properties": {"n": {"type": "integer"}},
                                    "required": ["n"],
                                },
                            },
                        }
                    ],
                    "tool_choice": "required",
                }
            },
        ),
        (
            "POST",
            "/api/jobs/create",
            {
                "json": {
                    "team_id": team,
                    "job_type": "t",
                    "user_id": None,
                    "metadata": {"a": [1, 2.5, None, True], "b": {"c": "d"}},
                    "request_id": None,
                }
            },
        ),
        (
            "POST",
            "/api/jobs/create-and-call",
            {"json": {"team_id": team, "job_type": "cc", "messages": user("one shot")}},
        ),
    ]
    for method, path, kwargs in ok_cases:
        status, _ = await both(fast, slow, method, path, **kwargs)
        assert status == 200, (path, kwargs)

    # Streams: the same events (Server-Sent Events, one message each), and the same refusals.
    stream_cases: list[tuple[str, dict[str, Any]]] = [
        (f"/api/jobs/{job_id}/llm-call-stream", {"messages": user("stream me")}),
        (
            "/api/jobs/create-and-call-stream",
            {"team_id": team, "job_type": "s", "messages": user("one shot stream")},
        ),
    ]
    for path, body in stream_cases:
        got = [await sse(c, path, body) for c in (fast, slow)]
        assert got[0][0] == got[1][0] == 200, got
        assert len(got[0][1]) == len(got[1][1]) >= 2, got
        for x, y in zip(got[0][1], got[1][1], strict=True):
            same_shape(x, y)
    for path, body in [
        (f"/api/jobs/{uid('job')}/llm-call-stream", {"messages": user("x")}),
        (f"/api/jobs/{job_id}/llm-call-stream", {"job_id": "other", "messages": user("x")}),
        (f"/api/jobs/{job_id}/llm-call-stream", {"messages": "no"}),
        ("/api/jobs/create-and-call-stream", {"team_id": other_team, "job_type": "s"}),
    ]:
        status, data = await both(fast, slow, "POST", path, json=body)
        assert status >= 400, (path, data)

    # Complete: a job of its own on each side, then the same replay on both.
    a_job, b_job = await job(), await job()
    for client, jid in ((fast, a_job), (slow, b_job)):
        await client.call("POST", f"/api/jobs/{jid}/llm-call", json={"messages": user("x")})
    done = {
        "status": "completed",
        "metadata": {"k": "v"},
        "error_message": None,
    }
    a = await fast.call("POST", f"/api/jobs/{a_job}/complete", json=done)
    b = await slow.call("POST", f"/api/jobs/{b_job}/complete", json=done)
    assert a.status == b.status == 200, (a.text, b.text)
    same_shape(a.json(), b.json())
    a = await fast.call("POST", f"/api/jobs/{a_job}/complete", json=done)
    b = await slow.call("POST", f"/api/jobs/{b_job}/complete", json=done)
    # A repeated complete replays the first answer.
    assert a.status == b.status == 200, (a.text, b.text)
    same_shape(a.json(), b.json())

    open_job = await job()
    refused: list[tuple[str, dict[str, Any], RestClient | None]] = [
        (call, {"json": {"job_id": "other", "messages": user("x")}}, None),
        (call, {"data": "{bad json", "headers": {"content-type": "application/json"}}, None),
        (call, {"data": "[1, 2]", "headers": {"content-type": "application/json"}}, None),
        (call, {"data": '"str"', "headers": {"content-type": "application/json"}}, None),
        (call, {"json": {"messages": "not a list"}}, None),
        (call, {"json": {"messages": user("x"), "max_tokens": "many"}}, None),
        (call, {"json": {"messages": user("x"), "temperature": [1]}}, None),
        (call, {"json": {}}, None),
        (call, {"data": "", "headers": {}}, None),
        (call, {"json": {"messages": [{"role": "user", "content": "a\u0000b"}]}}, None),
        (call, {"json": {"messages": user("x"), "model_group": "no-such-group"}}, None),
        (call, {"json": {"messages": user("x")}}, fast.with_key(None)),
        (call, {"json": {"messages": user("x")}}, fast.with_key("sk-not-a-key")),
        (call, {"json": {"messages": user("x")}}, fast.with_key(other_key)),
        (f"/api/jobs/{uid('job')}/llm-call", {"json": {"messages": user("x")}}, None),
        ("/api/jobs/a%20b/llm-call", {"json": {"messages": user("x")}}, None),
        (f"/api/jobs/{open_job}/complete", {"json": {"status": "bogus"}}, None),
        (f"/api/jobs/{open_job}/complete", {"json": {"status": "failed", "metadata": 5}}, None),
        ("/api/jobs/create", {"json": {"team_id": other_team, "job_type": "t"}}, None),
        ("/api/jobs/create", {"json": {"team_id": team}}, None),
        ("/api/jobs/create", {"json": {"team_id": team, "job_type": "t", "metadata": [1]}}, None),
        (
            "/api/jobs/create-and-call",
            {"json": {"team_id": team, "job_type": "t", "messages": user("x"), "model_group": "x"}},
            None,
        ),
    ]
    # An escaped "/" in the path: both refuse the job id (400, INVALID_ARGUMENT, field job_id);
    # the transcoder binds it to something other than what x-envoy-original-path decodes to, so
    # its message is the path-wins check's, ours the id rule's.
    answers = [
        (await c.call("POST", "/api/jobs/a%2Fb/llm-call", json={"messages": user("x")})).json()
        for c in (fast, slow)
    ]
    assert [(d["code"], d["details"][0]["metadata"]) for d in answers] == [
        (3, {"field": "job_id"}),
        (3, {"field": "job_id"}),
    ], answers
    for path, kwargs, as_client in refused:
        a_client = as_client or fast
        b_client = RestClient(http, transcoded.base_url, a_client.key)
        status, data = await both(a_client, b_client, "POST", path, **kwargs)
        assert status >= 400, (path, kwargs, data)


async def test_the_routes_match_the_rpcs_served_over_http() -> None:
    """envoy.yaml sends exactly the RPCs of JOB_FLOW to the HTTP handler: each of their paths,
    POST only, and none of the other job paths."""
    text = render()
    streams, unary = re.findall(r'safe_regex: \{regex: "(/api/jobs/[^"]+)"\}', text)
    served = {
        "CreateJob": ("/api/jobs/create", unary),
        "LlmCall": ("/api/jobs/j1/llm-call", unary),
        "LlmCallStream": ("/api/jobs/j1/llm-call-stream", streams),
        "CompleteJob": ("/api/jobs/j1/complete", unary),
        "CreateAndCall": ("/api/jobs/create-and-call", unary),
        "CreateAndCallStream": ("/api/jobs/create-and-call-stream", streams),
    }
    assert set(served) == set(JOB_FLOW)
    for path, regex in served.values():
        assert re.fullmatch(regex, path), path
        other = unary if regex == streams else streams
        assert not re.fullmatch(other, path), path
    for path in ("/api/jobs/j1", "/api/jobs/j1/metadata", "/api/jobs/j1/llm-call/x"):
        assert not re.fullmatch(unary, path) and not re.fullmatch(streams, path), path
    # The stream route has no timeout (a stream lasts as long as the model writes).
    assert "timeout: 0s" in text[text.index(streams) : text.index(unary)]
    without = render(job_flow_over_http=False)
    assert unary not in without and streams not in without


async def test_a_body_over_the_limit_is_a_413_both_ways(
    http: aiohttp.ClientSession, rest_sqlite: RestService
) -> None:
    """Through Envoy its buffer limit answers; a client on the handler's own port (loopback)
    gets the same answer from the handler, not a 500."""
    client = rest_sqlite.app_client
    assert client is not None
    body = json.dumps({"team_id": "t", "job_type": "x", "metadata": {"blob": "x" * (1 << 21)}})
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"}
    direct = f"http://127.0.0.1:{client.app.direct_http_port}"
    for base in (rest_sqlite.base_url, direct):
        data_io = io.BytesIO(body.encode())
        async with http.post(base + "/api/jobs/create", data=data_io, headers=headers) as r:
            assert r.status == 413, (base, await r.text())
            assert r.headers["content-type"] == "application/json"
            data = await r.json()
            assert (data["code"], data["details"]) == (3, []), data
