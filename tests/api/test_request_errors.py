"""Refused requests over native gRPC (issue 21, items 2 and 10): bytes that are not the RPC's
message are INVALID_ARGUMENT without internals; a refused request (no key, a bad key, a team key
on an admin RPC, a database lost during the key lookup) answers and logs the caller's
x-request-id; a lost database is UNAVAILABLE, not INTERNAL. Real grpc.aio server, SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from saas_llm.v1 import model_group_service_pb2 as mg_pb
from saas_llm.v1 import organization_service_pb2 as org_pb
from saas_llm.v1 import team_service_pb2 as team_pb
from service.audit import audit
from tests.api.test_tenancy import error_info
from tests.conftest import (
    Client,
    _pg_admin,
    admin,
    bearer,
    fresh_database,
    start_client,
    stop_client,
)
from tests.flows import make_team, uid

GARBAGE = (b"\xff\xff\xff\xff\x0f", b"\x0a\x05ab")  # a bad varint; a string cut short


def _raw(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    """A call that sends the given bytes as they are."""
    return channel.unary_unary(method)


async def test_garbage_protobuf_is_invalid_argument(client: Client) -> None:
    c = client
    _, key = await make_team(c)
    cases = [
        ("/saas_llm.v1.JobService/CreateJob", bearer(key)),
        ("/saas_llm.v1.TeamService/GetTeam", admin()),
        ("/grpc.health.v1.Health/Check", ()),
    ]
    for method, metadata in cases:
        for data in GARBAGE:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await _raw(c.channel, method)(data, metadata=metadata)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, e.value)
            assert "DecodeError" not in e.value.details() and "class" not in e.value.details()
            assert error_info(e.value).reason == "INVALID_ARGUMENT"
    # Server streaming.
    stream = c.channel.unary_stream("/saas_llm.v1.JobService/LlmCallStream")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in stream(GARBAGE[0], metadata=bearer(key)):
            pass
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Reflection (bidirectional streaming).
    bidi = c.channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in bidi(iter([GARBAGE[0]])):
            pass
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Good messages on the same RPCs still work.
    ok = await c.channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )(health_pb2.HealthCheckRequest())
    assert ok.status == health_pb2.HealthCheckResponse.SERVING
    listed = c.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    answers = [a async for a in listed]
    assert answers[0].list_services_response.service


def _trailing_rid(exc: grpc.aio.AioRpcError) -> str | None:
    return dict(exc.trailing_metadata() or ()).get("x-request-id")


async def test_refused_requests_carry_the_callers_request_id(client: Client) -> None:
    c = client
    team_id, key = await make_team(c)
    cases = [
        (c.teams.GetTeam(team_pb.GetTeamRequest(team_id=team_id), metadata=(("x-request-id", "r-none"),)), "r-none", "MISSING_API_KEY"),
        (c.teams.GetTeam(team_pb.GetTeamRequest(team_id=team_id), metadata=(*bearer("sk-" + "z" * 40), ("x-request-id", "r-bad"))), "r-bad", "INVALID_API_KEY"),
        (c.orgs.CreateOrganization(org_pb.CreateOrganizationRequest(organization_id="o", name="n"), metadata=(*bearer(key), ("x-request-id", "r-admin"))), "r-admin", "ADMIN_REQUIRED"),
    ]  # fmt: skip
    for call, rid, reason in cases:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        assert error_info(e.value).reason == reason
        assert _trailing_rid(e.value) == rid, e.value.trailing_metadata()


@pytest.mark.postgres
async def test_a_lost_database_is_unavailable_with_the_request_id(tmp_path: Path) -> None:
    """The database drops every connection of the service (pg_terminate_backend) and takes no
    new ones for a while: an admin read and a team key's first lookup are UNAVAILABLE (503) with
    the caller's request id, not INTERNAL "Internal error (request id -)"; once the database is
    back the service recovers by itself."""
    url = await fresh_database("postgres", tmp_path)
    name = url.rsplit("/", 1)[1]
    c = await start_client(url)
    try:
        team_id, key = await make_team(c)
        fresh_team, fresh_key = await make_team(c)  # its key was never looked up
        await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await _pg_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        for attempt in ("admin read", "key lookup"):
            rid = uid("rid")
            if attempt == "admin read":
                call = c.groups.ListModelGroups(
                    mg_pb.ListModelGroupsRequest(), metadata=(*admin(), ("x-request-id", rid))
                )
            else:
                call = c.teams.GetTeam(
                    team_pb.GetTeamRequest(team_id=fresh_team),
                    metadata=(*bearer(fresh_key), ("x-request-id", rid)),
                )
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE, (attempt, e.value)
            assert error_info(e.value).reason == "UNAVAILABLE"
            assert _trailing_rid(e.value) == rid
        await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        got = await c.teams.GetTeam(team_pb.GetTeamRequest(team_id=team_id), metadata=bearer(key))
        assert got.team_id == team_id
        report = await audit(c.app.db)
        assert report.ok, report.violations
    finally:
        await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await stop_client(c)
