"""Model-group changes, access groups, team suspension and key rotation,
job metadata patches (issue 6), on both databases."""

from __future__ import annotations

import grpc
import pytest

from saas_llm.v1 import (
    access_group_service_pb2 as ag_pb,
)
from saas_llm.v1 import (
    access_group_service_pb2_grpc as ag_grpc,
)
from saas_llm.v1 import (
    credit_service_pb2 as cr_pb,
)
from saas_llm.v1 import (
    job_service_pb2 as job_pb,
)
from saas_llm.v1 import (
    model_group_service_pb2 as mg_pb,
)
from saas_llm.v1 import (
    team_service_pb2 as team_pb,
)
from service.audit import audit
from tests.api.test_tenancy import error_info
from tests.conftest import Client, admin, bearer
from tests.flows import make_group, make_team, struct, uid, user_msg


async def test_update_and_delete_model_group(client: Client) -> None:
    c = client
    name = await make_group(c, [("simulator/v1", {"response": "old"})])
    team_id, key = await make_team(c, groups=[name])
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    r = await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("x")]), metadata=bearer(key)
    )
    assert r.response.content == "old"
    g = await c.groups.UpdateModelGroup(
        mg_pb.UpdateModelGroupRequest(
            group_name=name,
            display_name="New",
            description="d",
            models=[
                mg_pb.ModelGroupModel(
                    model_name="simulator/v2", priority=0, config=struct({"response": "new"})
                ),
                mg_pb.ModelGroupModel(model_name="simulator/v3", priority=5),
            ],
        ),
        metadata=admin(),
    )
    assert [m.model_name for m in g.models] == [
        "simulator/v2",
        "simulator/v3",
    ] and g.display_name == "New"
    r = await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("x")]), metadata=bearer(key)
    )
    assert r.response.content == "new"  # the next call uses the new models
    res = await c.groups.ResolveModelGroup(
        mg_pb.ResolveModelGroupRequest(group_name=name, team_id=team_id), metadata=bearer(key)
    )
    assert (res.primary_model, list(res.fallback_models), res.team_has_access) == (
        "simulator/v2",
        ["simulator/v3"],
        True,
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.groups.DeleteModelGroup(
            mg_pb.DeleteModelGroupRequest(group_name=name), metadata=admin()
        )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await c.teams.AssignModelGroups(
        team_pb.AssignModelGroupsRequest(team_id=team_id), metadata=admin()
    )
    d = await c.groups.DeleteModelGroup(
        mg_pb.DeleteModelGroupRequest(group_name=name), metadata=admin()
    )
    assert d.deleted
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.groups.GetModelGroup(mg_pb.GetModelGroupRequest(group_name=name), metadata=admin())
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_resolve_access_rules(sqlite_client: Client) -> None:
    c = sqlite_client
    mine = await make_group(c, [("gpt-4o", {}), ("gpt-4-turbo", {}), ("gpt-3.5-turbo", {})])
    other = await make_group(c, [("claude-3", {})])
    team_id, key = await make_team(c, groups=[mine])
    other_team, _ = await make_team(c, groups=[other])
    r = await c.groups.ResolveModelGroup(
        mg_pb.ResolveModelGroupRequest(group_name=mine, team_id=team_id), metadata=bearer(key)
    )
    assert r.primary_model == "gpt-4o" and list(r.fallback_models) == [
        "gpt-4-turbo",
        "gpt-3.5-turbo",
    ]
    a = await c.groups.ResolveModelGroup(
        mg_pb.ResolveModelGroupRequest(group_name=other, team_id=team_id), metadata=admin()
    )
    assert a.team_has_access is False
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.groups.ResolveModelGroup(
            mg_pb.ResolveModelGroupRequest(group_name=other, team_id=team_id), metadata=bearer(key)
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.groups.ResolveModelGroup(
            mg_pb.ResolveModelGroupRequest(group_name=mine, team_id=other_team),
            metadata=bearer(key),
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_access_groups(client: Client) -> None:
    c = client
    ag = ag_grpc.ModelAccessGroupServiceStub(c.channel)
    g1 = await make_group(c, [("simulator/a", {"response": "via access group"}), ("gpt-4", {})])
    g2 = await make_group(c, [("gpt-4", {}), ("claude-3", {})])
    name = uid("gpt-models")
    created = await ag.CreateModelAccessGroup(
        ag_pb.CreateModelAccessGroupRequest(
            group_name=name, description="GPT models", model_groups=[g1, g2]
        ),
        metadata=admin(),
    )
    assert list(created.model_groups) == [g1, g2]
    got = await ag.GetModelAccessGroup(
        ag_pb.GetModelAccessGroupRequest(group_name=name), metadata=admin()
    )
    assert got.description == "GPT models"
    lst = await ag.ListModelAccessGroups(ag_pb.ListModelAccessGroupsRequest(), metadata=admin())
    assert name in [a.group_name for a in lst.access_groups]
    org = uid("org")
    await make_team(c, org=org)  # creates the org
    t = await c.teams.CreateTeam(
        team_pb.CreateTeamRequest(
            organization_id=org, team_id=uid("acme"), access_groups=[name], credits_allocated=5
        ),
        metadata=admin(),
    )
    assert list(t.model_groups) == [g1, g2] and list(t.access_groups) == [name]
    assert list(t.allowed_models) == ["simulator/a", "gpt-4", "claude-3"]
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=t.team_id, job_type="t"), metadata=bearer(t.virtual_key)
    )
    r = await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("x")]),
        metadata=bearer(t.virtual_key),
    )
    assert r.response.content == "via access group"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.teams.CreateTeam(
            team_pb.CreateTeamRequest(
                organization_id=org, team_id=uid("t"), access_groups=["missing"]
            ),
            metadata=admin(),
        )
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await ag.CreateModelAccessGroup(
            ag_pb.CreateModelAccessGroupRequest(group_name=name), metadata=admin()
        )
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await ag.ListModelAccessGroups(
            ag_pb.ListModelAccessGroupsRequest(), metadata=bearer(t.virtual_key)
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_suspend_resume_rotate(client: Client) -> None:
    c = client
    team_id, key = await make_team(c, credits=5)
    open_job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    t = await c.teams.SuspendTeam(
        team_pb.SuspendTeamRequest(team_id=team_id, reason="unpaid"), metadata=admin()
    )
    assert (
        t.status == "suspended"
        and t.credits.credits_reserved == 0
        and t.credits.credits_remaining == 5
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.CreateJob(
            job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
        )
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert e.value.details() == f"Team '{team_id}' is suspended"
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.CreateJob(
            job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=admin()
        )
    assert error_info(e.value).reason == "TEAM_SUSPENDED"
    job = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=open_job.job_id), metadata=admin())
    assert job.status == "failed" and job.error_message.string_value == "Team suspended: unpaid"
    await c.teams.ResumeTeam(team_pb.ResumeTeamRequest(team_id=team_id), metadata=admin())
    await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t"), metadata=bearer(key)
    )
    rot = await c.teams.RotateTeamKey(
        team_pb.RotateTeamKeyRequest(team_id=team_id), metadata=admin()
    )
    assert rot.virtual_key != key and rot.virtual_key.startswith(rot.key_prefix)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.credits.GetCreditBalance(
            cr_pb.GetCreditBalanceRequest(team_id=team_id), metadata=bearer(key)
        )
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    bal = await c.credits.GetCreditBalance(
        cr_pb.GetCreditBalanceRequest(team_id=team_id), metadata=bearer(rot.virtual_key)
    )
    assert bal.credits_reserved == 1
    for call in (
        c.teams.SuspendTeam(
            team_pb.SuspendTeamRequest(team_id=team_id), metadata=bearer(rot.virtual_key)
        ),
        c.teams.RotateTeamKey(
            team_pb.RotateTeamKeyRequest(team_id=team_id), metadata=bearer(rot.virtual_key)
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    report = await audit(c.app.db)
    assert report.ok, report.violations


async def test_job_metadata_patch(client: Client) -> None:
    c = client
    team_id, key = await make_team(c)
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="t", metadata=struct({"a": 1, "b": "x"})),
        metadata=bearer(key),
    )
    from google.protobuf import struct_pb2

    patch = struct({"c": True})
    patch.fields["b"].CopyFrom(struct_pb2.Value(null_value=struct_pb2.NULL_VALUE))
    j = await c.jobs.UpdateJobMetadata(
        job_pb.UpdateJobMetadataRequest(job_id=job.job_id, metadata=patch), metadata=bearer(key)
    )
    assert dict(j.metadata) == {"a": 1, "c": True}
    await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job.job_id, status="failed"), metadata=bearer(key)
    )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.jobs.UpdateJobMetadata(
            job_pb.UpdateJobMetadataRequest(job_id=job.job_id, metadata=patch), metadata=bearer(key)
        )
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
