"""Limits, each at its boundary (the limit passes, one more is refused with INVALID_ARGUMENT or,
for the size of a whole request, RESOURCE_EXHAUSTED over gRPC and 413 through Envoy), and each
documented in the proto next to the field it bounds."""

from __future__ import annotations

import io
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest

from saas_llm.v1 import credit_service_pb2 as cr_pb
from saas_llm.v1 import job_service_pb2 as job_pb
from saas_llm.v1 import team_service_pb2 as team_pb
from service.domain import validation as v
from service.settings import Settings
from tests.conftest import MASTER_KEY, Client, admin, bearer
from tests.flows import make_group, make_team, uid, user_msg
from tests.support.envoy import start_envoy

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto" / "saas_llm" / "v1"
INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def _code(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def _metadata_of_size(n: int) -> dict[str, str]:
    """A JSON object whose compact serialization is exactly n bytes."""
    d = {"p": "x" * (n - len(orjson.dumps({"p": ""})))}
    assert len(orjson.dumps(d)) == n
    return d


def _id(n: int) -> str:
    return ("id_" + "a" * n)[:n]


Case = tuple[str, Callable[[Client, dict[str, str], Any], Awaitable[Any]], Any, Any]


async def _create_team(c: Client, w: dict[str, str], team_id: Any) -> Any:
    return await c.teams.CreateTeam(
        team_pb.CreateTeamRequest(organization_id=w["org"], team_id=team_id, credits_allocated=0),
        metadata=admin(),
    )


async def _create_job(c: Client, w: dict[str, str], **fields: Any) -> Any:
    md = fields.pop("metadata", None)
    req = job_pb.CreateJobRequest(team_id=w["team"], job_type=fields.pop("job_type", "t"), **fields)
    if md is not None:
        req.metadata.update(md)
    return await c.jobs.CreateJob(req, metadata=bearer(w["key"]))


async def _call(c: Client, w: dict[str, str], n_messages: int) -> Any:
    job = await _create_job(c, w)
    return await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("m")] * n_messages),
        metadata=bearer(w["key"]),
    )


CASES: list[Case] = [
    ("team_id length", _create_team, _id(128), _id(129)),
    ("request_id length", lambda c, w, x: _create_job(c, w, request_id=x), _id(128), _id(129)),
    ("job_type length", lambda c, w, x: _create_job(c, w, job_type=x), "j" * 128, "j" * 129),
    ("user_id length", lambda c, w, x: _create_job(c, w, user_id=x), "u" * 256, "u" * 257),
    (
        "metadata size",
        lambda c, w, x: _create_job(c, w, metadata=x),
        _metadata_of_size(v.MAX_METADATA_BYTES),
        _metadata_of_size(v.MAX_METADATA_BYTES + 1),
    ),
    ("messages per call", _call, v.MAX_MESSAGES, v.MAX_MESSAGES + 1),
    (
        "transactions page size",
        lambda c, w, x: c.credits.ListCreditTransactions(
            cr_pb.ListCreditTransactionsRequest(team_id=w["team"], limit=x),
            metadata=bearer(w["key"]),
        ),
        v.MAX_PAGE,
        v.MAX_PAGE + 1,
    ),
    (
        "jobs page size",
        lambda c, w, x: c.jobs.ListTeamJobs(
            job_pb.ListTeamJobsRequest(team_id=w["team"], limit=x), metadata=bearer(w["key"])
        ),
        v.MAX_PAGE,
        v.MAX_PAGE + 1,
    ),
    (
        "error_message length",
        lambda c, w, x: _complete_with_error(c, w, x),
        "e" * 4096,
        "e" * 4097,
    ),
]


async def _complete_with_error(c: Client, w: dict[str, str], message: str) -> Any:
    job = await _create_job(c, w)
    return await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job.job_id, status="failed", error_message=message),
        metadata=bearer(w["key"]),
    )


@pytest.fixture
async def world(sqlite_client: Client) -> dict[str, str]:
    c = sqlite_client
    org = uid("org")
    group = await make_group(c, [("simulator/ok", {})])
    team, key = await make_team(c, credits=100, groups=[group], org=org)
    return {"org": org, "team": team, "key": key, "group": group}


@pytest.mark.parametrize(
    ("name", "call", "at_limit", "over_limit"), CASES, ids=[c[0] for c in CASES]
)
async def test_limit_at_the_boundary(
    sqlite_client: Client,
    world: dict[str, str],
    name: str,
    call: Any,
    at_limit: Any,
    over_limit: Any,
) -> None:
    assert await _code(call(sqlite_client, world, at_limit)) == grpc.StatusCode.OK, name
    code = await _code(call(sqlite_client, world, over_limit))
    assert code == INVALID, (name, code)


async def test_grpc_request_size_at_the_boundary(sqlite_client: Client) -> None:
    """The whole gRPC request: max_message_bytes (1 MiB) passes, one byte more is refused by
    the transport before any handler runs."""
    limit = Settings().max_message_bytes
    assert limit == 1024 * 1024

    def request(size: int) -> job_pb.GetJobRequest:
        # GetJob with an oversized id: small fixed overhead, exact size.
        r = job_pb.GetJobRequest(job_id="")
        r.job_id = "x" * (size - 4)
        while r.ByteSize() < size:
            r.job_id += "x"
        while r.ByteSize() > size:
            r.job_id = r.job_id[:-1]
        assert r.ByteSize() == size
        return r

    ok = await _code(sqlite_client.jobs.GetJob(request(limit), metadata=admin()))
    assert ok == INVALID  # reached the handler: the id is too long, the size was fine
    over = await _code(sqlite_client.jobs.GetJob(request(limit + 1), metadata=admin()))
    assert over == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.envoy
async def test_rest_body_size_at_the_boundary(sqlite_client: Client, world: dict[str, str]) -> None:
    """Through Envoy: a body of exactly 1 MiB is transcoded (and refused by the domain for its
    16 KiB metadata), one byte more is 413 with the JSON error shape."""
    envoy = await start_envoy(
        sqlite_client.app.port, direct_hosts=[sqlite_client.app.direct_http_port]
    )
    try:
        async with aiohttp.ClientSession() as s:

            async def post(size: int) -> tuple[int, Any]:
                body = orjson.dumps(
                    {"team_id": world["team"], "job_type": "t", "metadata": {"p": ""}}
                )
                pad = size - len(body)
                body = orjson.dumps(
                    {"team_id": world["team"], "job_type": "t", "metadata": {"p": "x" * pad}}
                )
                assert len(body) == size
                async with s.post(
                    envoy.base_url + "/api/jobs/create",
                    data=io.BytesIO(body),
                    headers={
                        "Authorization": f"Bearer {MASTER_KEY}",
                        "Content-Type": "application/json",
                    },
                ) as r:
                    return r.status, await r.json(content_type=None)

            status, data = await post(1024 * 1024)
            assert status == 400 and "metadata" in data["message"], (status, data)
            status, data = await post(1024 * 1024 + 1)
            assert status == 413 and data["code"] == 3, (status, data)
            # And the metadata limit itself through REST, at the boundary.
            md_ok = _metadata_of_size(v.MAX_METADATA_BYTES)
            async with s.post(
                envoy.base_url + "/api/jobs/create",
                json={"team_id": world["team"], "job_type": "t", "metadata": md_ok},
                headers={"Authorization": f"Bearer {world['key']}"},
            ) as r:
                assert r.status == 200, await r.text()
    finally:
        await envoy.stop()


# --- Documented in the proto --------------------------------------------------------------------


def _proto_text() -> str:
    return "\n".join(p.read_text() for p in sorted(PROTO.glob("*.proto")))


def _field_comment(message: str, field: str) -> str:
    """The comment block right above `field` inside `message` in the protos."""
    for path in sorted(PROTO.glob("*.proto")):
        lines = path.read_text().splitlines()
        try:
            start = lines.index(f"message {message} {{")
        except ValueError:
            continue
        for i in range(start + 1, len(lines)):
            if lines[i].startswith("}"):
                break
            if re.search(rf"\b{field} = \d+( \[.*\])?;", lines[i]):
                j, block = i - 1, []
                while lines[j].strip().startswith("//"):
                    block.insert(0, lines[j].strip()[2:].strip())
                    j -= 1
                return " ".join(block)
        raise AssertionError(f"{message} has no field {field}")
    raise AssertionError(f"no message {message} in the protos")


@pytest.mark.parametrize(
    ("message", "field", "documented"),
    [
        ("LlmCallRequest", "messages", f"1-{v.MAX_MESSAGES} messages"),
        ("CreateJobRequest", "metadata", "at most 16 KiB"),
        ("CompleteJobRequest", "metadata", "at most 16 KiB"),
        ("CreateJobRequest", "request_id", "[A-Za-z0-9_.:-]{1,128}"),
        ("CreateTeamRequest", "team_id", "[A-Za-z0-9_.:-]{1,128}"),
        ("CreateJobRequest", "user_id", "at most 256 characters"),
        ("CreateJobRequest", "job_type", "at most 128"),
        ("CompleteJobRequest", "error_message", "at most 4096 characters"),
        ("ListTeamJobsRequest", "limit", f"1-{v.MAX_PAGE}"),
        ("ListCreditTransactionsRequest", "limit", f"1-{v.MAX_PAGE}"),
    ],
)
def test_limit_documented_in_the_proto(message: str, field: str, documented: str) -> None:
    comment = _field_comment(message, field)
    assert documented in comment, (message, field, comment)


def test_validation_constants_match_the_documented_numbers() -> None:
    assert v.MAX_MESSAGES == 256
    assert v.MAX_METADATA_BYTES == 16 * 1024
    assert v.ID_PATTERN.pattern == r"[A-Za-z0-9_.:\-]{1,128}"
    assert v.MAX_PAGE == 1000


def test_request_size_documented_in_the_proto() -> None:
    assert "1 MiB" in _proto_text()
