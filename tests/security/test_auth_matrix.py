"""The auth matrix, generated from the service descriptors: every RPC the server exposes x
{no key, malformed key, revoked key, another team's key, own team key, master key}, each with the
status the RULES table of service/api/auth.py implies. A new RPC gets its row automatically; one
without an auth rule fails here (and is refused by the server)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import MethodDescriptor

from service.api.auth import RULES, Access, Authenticator
from service.domain.errors import PermissionDenied
from tests.conftest import MASTER_KEY, Client
from tests.security.rpcs import (
    EXPOSED_SERVICES,
    all_methods,
    build_request,
    invoke,
    make_world,
    path_of,
    principals,
)

METHODS = all_methods()
OK = grpc.StatusCode.OK
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
# Public RPCs the server registers but does not implement (the generated base method).
UNIMPLEMENTED = {"/grpc.health.v1.Health/List"}
# The OpenAI-compatible API needs a team's key: the master key has no team and no budget.
TEAM_KEY_ONLY = "/saas_llm.v1.OpenAIService/"


def expected(access: Access, who: str, scoped: bool) -> set[grpc.StatusCode]:
    if access is Access.PUBLIC:
        return {OK}
    if who in ("no key", "malformed key", "revoked key"):
        return {UNAUTH}
    if who == "master key":
        return {OK}
    if access is Access.ADMIN:
        return {DENIED}
    if who == "own team key":
        return {OK}
    # Another team's key on this team's resources: refused without revealing anything; on an
    # unscoped read (list), answered with its own data only.
    return {DENIED, NOT_FOUND} if scoped else {OK}


def _scoped(m: MethodDescriptor) -> bool:
    names = {f.name for f in m.input_type.fields}
    return bool(names & {"team_id", "job_id", "group_name", "organization_id", "model"})


@pytest.mark.parametrize("method", METHODS, ids=path_of)
async def test_auth_matrix(sqlite_client: Client, method: MethodDescriptor) -> None:
    path = path_of(method)
    access = RULES.get(path)
    assert access is not None, f"{path} has no rule in service/api/auth.py RULES"
    c = sqlite_client
    w = await make_world(c)
    scoped = _scoped(method)
    failures = []
    for who, md in principals(w, MASTER_KEY):
        request = build_request(method, w)
        code = OK
        detail = ""
        responses = []
        try:
            responses = await invoke(c.channel, method, request, md)
        except grpc.aio.AioRpcError as e:
            code, detail = e.code(), e.details() or ""
        want = expected(access, who, scoped)
        if path.startswith(TEAM_KEY_ONLY) and who == "master key":
            want = {UNAUTH}
        if path in UNIMPLEMENTED:
            want = {grpc.StatusCode.UNIMPLEMENTED}
        if code not in want:
            failures.append(
                f"{who}: got {code.name} ({detail}), want {sorted(x.name for x in want)}"
            )
            continue
        if who == "another team's key" and access is Access.TENANT:
            # Nothing of team A in what B gets back: not in an answer, not in an error.
            text = "".join(text_format.MessageToString(r) for r in responses) + detail
            leaks = [i for i in w.ids if i in text and not (code != OK and i in _echoed(request))]
            if leaks:
                failures.append(f"{who}: answer reveals {leaks}: {text[:500]}")
        if code == UNAUTH:
            # Error messages never echo the key that was sent.
            assert w.key not in detail and w.revoked_key not in detail
    assert not failures, f"{path} ({access.value}):\n" + "\n".join(failures)


def _echoed(request: object) -> str:
    """The identifiers the caller itself sent (an error may name them back)."""
    return text_format.MessageToString(request)  # type: ignore[arg-type]


def test_every_exposed_rpc_has_a_rule_and_every_rule_an_rpc() -> None:
    exposed = {path_of(m) for m in METHODS}
    missing = sorted(exposed - set(RULES))
    assert not missing, f"RPCs without an auth rule: {missing}"
    # Kept ahead of time: grpcio-reflection serves v1 besides v1alpha in newer versions.
    ahead = {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}
    stale = sorted(set(RULES) - exposed - ahead)
    assert not stale, f"auth rules for RPCs that do not exist: {stale}"


def test_client_streaming_rpcs_are_public() -> None:
    """The interceptor authenticates unary and server-streaming RPCs; a client-streaming RPC
    would bypass it, so only public ones (server reflection) may exist."""
    for m in METHODS:
        if m.client_streaming:
            assert RULES[path_of(m)] is Access.PUBLIC, path_of(m)


async def test_server_exposes_exactly_the_matrix_services(sqlite_client: Client) -> None:
    """What reflection lists is what the matrix covers, so a service added to the server but not
    to SERVICE_NAMES cannot escape the matrix."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(sqlite_client.channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    listed: set[str] = set()
    async for r in call:
        listed = {s.name for s in r.list_services_response.service}
        break
    call.cancel()
    assert listed <= set(EXPOSED_SERVICES), listed - set(EXPOSED_SERVICES)
    assert {s for s in EXPOSED_SERVICES if "reflection" not in s} <= listed


async def test_an_rpc_without_a_rule_is_refused() -> None:
    auth = Authenticator(MASTER_KEY, teams=None)  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied) as e:
        await auth.authenticate("/saas_llm.v1.JobService/NewUnlistedRpc", f"Bearer {MASTER_KEY}")
    assert e.value.reason == "NO_ACCESS_RULE"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer    ",
        "Basic dXNlcjpwYXNz",
        "sk-no-scheme-" + "a" * 40,
        "Bearer sk-short",
        "Bearer sk-" + "A" * 5000,
        "Bearer " + MASTER_KEY + "x",
        "Bearer " + MASTER_KEY[:-1],
        "Bearer not-a-key",
    ],
)
async def test_malformed_and_wrong_keys_are_unauthenticated(
    sqlite_client: Client, header: str
) -> None:
    from saas_llm.v1 import credit_service_pb2 as cr_pb

    md = (("authorization", header),) if header else ()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await sqlite_client.credits.GetCreditBalance(
            cr_pb.GetCreditBalanceRequest(team_id="team_x"), metadata=md
        )
    assert e.value.code() == UNAUTH, e.value
    assert MASTER_KEY not in (e.value.details() or "")
