"""Organizations, model groups, teams and credits through real gRPC stubs,
on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from saas_llm.v1 import (
    credit_service_pb2 as cr_pb,
)
from saas_llm.v1 import (
    model_group_service_pb2 as mg_pb,
)
from saas_llm.v1 import (
    organization_service_pb2 as org_pb,
)
from saas_llm.v1 import (
    team_service_pb2 as team_pb,
)
from tests.conftest import Client, admin, bearer
from tests.flows import make_group, make_team, run_flow, struct, uid


def error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    for k, v in exc.trailing_metadata() or ():
        if k == "grpc-status-details-bin":
            st = status_pb2.Status.FromString(v)
            info = error_details_pb2.ErrorInfo()
            st.details[0].Unpack(info)
            return info
    raise AssertionError("no ErrorInfo detail")


async def test_seed_quick_start(client: Client) -> None:
    org = await client.orgs.CreateOrganization(
        org_pb.CreateOrganizationRequest(
            organization_id="org_your_company",
            name="Your Company",
            metadata=struct({"tier": "premium"}),
        ),
        metadata=admin(),
    )
    assert (org.organization_id, org.name, org.status) == (
        "org_your_company",
        "Your Company",
        "active",
    )
    assert dict(org.metadata) == {"tier": "premium"}
    g = await client.groups.CreateModelGroup(
        mg_pb.CreateModelGroupRequest(
            group_name="ChatAgent",
            display_name="Chat Agent",
            description="General purpose chat",
            models=[
                mg_pb.ModelGroupModel(model_name="gpt-3.5-turbo", priority=0),
                mg_pb.ModelGroupModel(model_name="gpt-4", priority=1),
            ],
        ),
        metadata=admin(),
    )
    assert g.status == "active" and len(g.model_group_id) == 36
    assert [m.model_name for m in g.models] == ["gpt-3.5-turbo", "gpt-4"]
    t = await client.teams.CreateTeam(
        team_pb.CreateTeamRequest(
            organization_id="org_your_company",
            team_id="team_engineering",
            team_alias="Engineering Team",
            model_groups=["ChatAgent"],
            credits_allocated=1000,
            metadata=struct({"department": "engineering"}),
        ),
        metadata=admin(),
    )
    assert t.virtual_key.startswith("sk-") and len(t.virtual_key) >= 35
    assert (t.credits_allocated, t.credits_remaining) == (1000, 1000)
    assert list(t.model_groups) == ["ChatAgent"]
    assert list(t.allowed_models) == ["gpt-3.5-turbo", "gpt-4"]
    assert t.max_budget_usd == pytest.approx(100.0)
    assert t.message == "Team created successfully with LiteLLM integration"

    got = await client.teams.GetTeam(
        team_pb.GetTeamRequest(team_id="team_engineering"), metadata=bearer(t.virtual_key)
    )
    assert got.credits.credits_allocated == 1000 and got.credits.credits_remaining == 1000
    assert list(got.model_groups) == ["ChatAgent"]
    assert got.key_prefix == t.virtual_key[:10]

    teams = await client.orgs.ListOrganizationTeams(
        org_pb.ListOrganizationTeamsRequest(organization_id="org_your_company"), metadata=admin()
    )
    assert teams.total_teams == 1 and teams.teams[0].team_id == "team_engineering"
    models = await client.groups.GetModelGroupModels(
        mg_pb.GetModelGroupModelsRequest(group_name="ChatAgent"), metadata=admin()
    )
    assert [m.priority for m in models.models] == [0, 1]
    lst = await client.groups.ListModelGroups(mg_pb.ListModelGroupsRequest(), metadata=admin())
    assert lst.total == 1


async def test_allowed_models_dedup_and_assign(client: Client) -> None:
    a = await make_group(client, [("gpt-3.5-turbo", {}), ("gpt-4", {})])
    b = await make_group(client, [("gpt-4-turbo", {}), ("gpt-4", {}), ("claude-3-sonnet", {})])
    team_id, key = await make_team(client, groups=[a, b, a])
    t = await client.teams.GetTeam(team_pb.GetTeamRequest(team_id=team_id), metadata=bearer(key))
    assert list(t.model_groups) == [a, b]
    assert list(t.allowed_models) == ["gpt-3.5-turbo", "gpt-4", "gpt-4-turbo", "claude-3-sonnet"]
    t2 = await client.teams.AssignModelGroups(
        team_pb.AssignModelGroupsRequest(team_id=team_id, model_groups=[b]), metadata=admin()
    )
    assert list(t2.model_groups) == [b]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.teams.AssignModelGroups(
            team_pb.AssignModelGroupsRequest(team_id=team_id, model_groups=["nope"]),
            metadata=admin(),
        )
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # Team keys see only their groups.
    lst = await client.groups.ListModelGroups(mg_pb.ListModelGroupsRequest(), metadata=bearer(key))
    assert [g.group_name for g in lst.model_groups] == [b]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.groups.GetModelGroup(
            mg_pb.GetModelGroupRequest(group_name=a), metadata=bearer(key)
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_credits_balance_add_check_transactions(client: Client) -> None:
    team_id, key = await make_team(client, credits=5)
    bal = await client.credits.GetCreditBalance(
        cr_pb.GetCreditBalanceRequest(team_id=team_id), metadata=bearer(key)
    )
    assert (bal.credits_allocated, bal.credits_used, bal.credits_remaining) == (5, 0, 5)
    assert bal.credit_limit.WhichOneof("kind") == "null_value" and bal.auto_refill is False
    added = await client.credits.AddCredits(
        cr_pb.AddCreditsRequest(
            team_id=team_id,
            credits_amount=500,
            reason="Monthly refill",
            metadata=struct({"invoice_id": "INV-123"}),
        ),
        metadata=admin(),
    )
    assert (added.credits_added, added.credits_allocated, added.credits_remaining) == (
        500,
        505,
        505,
    )
    chk = await client.credits.CheckCredits(
        cr_pb.CheckCreditsRequest(team_id=team_id, credits_required=1), metadata=bearer(key)
    )
    assert chk.available and chk.credits_remaining == 505
    chk = await client.credits.CheckCredits(
        cr_pb.CheckCreditsRequest(team_id=team_id, credits_required=506), metadata=bearer(key)
    )
    assert not chk.available
    await run_flow(client, team_id, key)
    tx = await client.credits.ListCreditTransactions(
        cr_pb.ListCreditTransactionsRequest(team_id=team_id, limit=50), metadata=bearer(key)
    )
    kinds = [t.transaction_type for t in tx.transactions]
    assert kinds == ["deduction", "reservation", "addition", "allocation"]
    assert tx.total_transactions == 4
    d = tx.transactions[0]
    assert d.credits_amount == 1 and d.balance_after == 504
    assert d.reason == "Job flow completed successfully"
    assert d.job_id.string_value
    assert tx.transactions[3].job_id.WhichOneof("kind") == "null_value"
    page = await client.credits.ListCreditTransactions(
        cr_pb.ListCreditTransactionsRequest(team_id=team_id, limit=2, offset=2),
        metadata=bearer(key),
    )
    assert [t.transaction_type for t in page.transactions] == ["addition", "allocation"]
    assert page.total_transactions == 4


async def test_add_credits_idempotent(client: Client) -> None:
    team_id, _ = await make_team(client, credits=0)
    req = cr_pb.AddCreditsRequest(team_id=team_id, credits_amount=7, request_id="inv-1")
    a = await client.credits.AddCredits(req, metadata=admin())
    b = await client.credits.AddCredits(req, metadata=admin())
    assert a.transaction_id == b.transaction_id and b.credits_allocated == 7
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.credits.AddCredits(
            cr_pb.AddCreditsRequest(team_id=team_id, credits_amount=8, request_id="inv-1"),
            metadata=admin(),
        )
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(e.value).reason == "IDEMPOTENCY_KEY_REUSED"


async def test_duplicates_are_conflicts(client: Client) -> None:
    team_id, _ = await make_team(client)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.orgs.CreateOrganization(
            org_pb.CreateOrganizationRequest(organization_id="dup", name="x"), metadata=admin()
        ) and await client.orgs.CreateOrganization(
            org_pb.CreateOrganizationRequest(organization_id="dup", name="x"), metadata=admin()
        )
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    t = await client.teams.GetTeam(team_pb.GetTeamRequest(team_id=team_id), metadata=admin())
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.teams.CreateTeam(
            team_pb.CreateTeamRequest(organization_id=t.organization_id, team_id=team_id),
            metadata=admin(),
        )
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (
            lambda: org_pb.CreateOrganizationRequest(organization_id="bad id!", name="x"),
            "organization_id",
        ),
        (lambda: org_pb.CreateOrganizationRequest(organization_id="", name="x"), "organization_id"),
        (
            lambda: org_pb.CreateOrganizationRequest(organization_id="o" * 129, name="x"),
            "organization_id",
        ),
        (lambda: org_pb.CreateOrganizationRequest(organization_id="ok", name=""), "name"),
        (
            lambda: org_pb.CreateOrganizationRequest(
                organization_id="ok", name="x", metadata=struct({"k": "v" * 20000})
            ),
            "metadata",
        ),
    ],
)
async def test_bad_input_is_invalid_argument(sqlite_client: Client, make, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await sqlite_client.orgs.CreateOrganization(make(), metadata=admin())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(e.value)
    assert info.reason == "INVALID_ARGUMENT" and info.metadata["field"] == field
    assert info.domain == "saas-llm.gateway"


async def test_bad_credit_amounts_and_groups(sqlite_client: Client) -> None:
    c = sqlite_client
    team_id, _ = await make_team(c)
    for amount in (0, -5, 2_000_000_000):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.credits.AddCredits(
                cr_pb.AddCreditsRequest(team_id=team_id, credits_amount=amount), metadata=admin()
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad_groups = [
        mg_pb.CreateModelGroupRequest(group_name=uid("g")),  # no models
        mg_pb.CreateModelGroupRequest(
            group_name=uid("g"),
            models=[
                mg_pb.ModelGroupModel(model_name="a", priority=0),
                mg_pb.ModelGroupModel(model_name="b", priority=0),
            ],
        ),
        mg_pb.CreateModelGroupRequest(
            group_name=uid("g"),
            models=[
                mg_pb.ModelGroupModel(
                    model_name="a", priority=0, config=struct({"api_key": "sk-literal-secret"})
                )
            ],
        ),
    ]
    for req in bad_groups:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.groups.CreateModelGroup(req, metadata=admin())
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.credits.ListCreditTransactions(
            cr_pb.ListCreditTransactionsRequest(team_id=team_id, limit=5000), metadata=admin()
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_api_key_never_returned(sqlite_client: Client) -> None:
    c = sqlite_client
    name = await make_group(c, [("gpt-4o", {"api_key": "os.environ/OPENAI_API_KEY"})])
    g = await c.groups.GetModelGroup(mg_pb.GetModelGroupRequest(group_name=name), metadata=admin())
    assert g.models[0].config["api_key"] == "os.environ/OPENAI_API_KEY"


async def test_auth_matrix(sqlite_client: Client) -> None:
    c = sqlite_client
    team_a, key_a = await make_team(c)
    _team_b, key_b = await make_team(c)
    get_a = team_pb.GetTeamRequest(team_id=team_a)
    cases = [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Basic abc"),), grpc.StatusCode.UNAUTHENTICATED),
        (bearer("sk-" + "z" * 43), grpc.StatusCode.UNAUTHENTICATED),
        (bearer(key_b), grpc.StatusCode.PERMISSION_DENIED),
    ]
    for md, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.teams.GetTeam(get_a, metadata=md)
        assert e.value.code() == code, md
    assert (await c.teams.GetTeam(get_a, metadata=bearer(key_a))).team_id == team_a
    assert (await c.teams.GetTeam(get_a, metadata=admin())).team_id == team_a
    # A team key on admin operations.
    admin_calls = [
        c.orgs.CreateOrganization(
            org_pb.CreateOrganizationRequest(organization_id="x", name="x"), metadata=bearer(key_a)
        ),
        c.credits.AddCredits(
            cr_pb.AddCreditsRequest(team_id=team_a, credits_amount=100), metadata=bearer(key_a)
        ),
        c.teams.AssignModelGroups(
            team_pb.AssignModelGroupsRequest(team_id=team_a), metadata=bearer(key_a)
        ),
        c.groups.CreateModelGroup(
            mg_pb.CreateModelGroupRequest(group_name="x"), metadata=bearer(key_a)
        ),
    ]
    for call in admin_calls:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(e.value).reason == "ADMIN_REQUIRED"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.credits.GetCreditBalance(
            cr_pb.GetCreditBalanceRequest(team_id=team_a), metadata=bearer(key_b)
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_every_rpc_has_an_auth_rule() -> None:
    from google.protobuf import descriptor_pool

    from service.api.auth import RULES
    from service.server import SERVICE_NAMES

    pool = descriptor_pool.Default()
    for svc in SERVICE_NAMES:
        for m in pool.FindServiceByName(svc).methods:
            assert f"/{svc}/{m.name}" in RULES, m.full_name


async def test_credential_headers_must_reference_env(sqlite_client: Client) -> None:
    """Every extra_headers value is a credential (issue 21 item 8: a name rule missed
    X-Credential): without ENCRYPTION_KEY (this server has none) each must be a reference."""
    c = sqlite_client
    for headers in (
        {"Authorization": "Bearer literal"},
        {"x-api-key": "abc"},
        {"X-Auth-Token": "t"},
        {"X-Credential": "c"},
        {"x-team": "a"},
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.groups.CreateModelGroup(
                mg_pb.CreateModelGroupRequest(
                    group_name=uid("g"),
                    models=[
                        mg_pb.ModelGroupModel(
                            model_name="anthropic/x",
                            priority=0,
                            config=struct({"extra_headers": headers}),
                        )
                    ],
                ),
                metadata=admin(),
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ok = await make_group(
        c,
        [
            (
                "anthropic/x",
                {
                    "extra_headers": {
                        "x-api-key": "os.environ/PROXY_API_KEY",
                        "x-team": "os.environ/T_TOKEN",
                    }
                },
            )
        ],
    )
    assert ok


async def test_additions_stop_at_the_team_total_cap(client: Client) -> None:
    """Each addition is valid on its own; the one that would take the team's total past
    MAX_TOTAL_CREDITS is refused whole, and the totals stay as they were."""
    from service.domain.credits import MAX_TOTAL_CREDITS
    from service.domain.validation import MAX_CREDITS

    team_id, key = await make_team(client, credits=0)
    step = MAX_CREDITS  # the largest single addition
    for _ in range(MAX_TOTAL_CREDITS // step):
        await client.credits.AddCredits(
            cr_pb.AddCreditsRequest(team_id=team_id, credits_amount=step), metadata=admin()
        )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await client.credits.AddCredits(
            cr_pb.AddCreditsRequest(team_id=team_id, credits_amount=1), metadata=admin()
        )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert e.value.details() == (
        f"Adding 1 credits would take the team's total to {MAX_TOTAL_CREDITS + 1}; "
        f"the limit is {MAX_TOTAL_CREDITS}"
    )
    assert error_info(e.value).reason == "CREDIT_TOTAL_LIMIT"
    balance = await client.credits.GetCreditBalance(
        cr_pb.GetCreditBalanceRequest(team_id=team_id), metadata=bearer(key)
    )
    assert balance.credits_allocated == MAX_TOTAL_CREDITS
