"""Helpers to set up tenants through the real gRPC API."""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf import struct_pb2

from saas_llm.v1 import (
    common_pb2,
)
from saas_llm.v1 import (
    job_service_pb2 as job_pb,
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


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def struct(d: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


def user_msg(text: str) -> common_pb2.ChatMessage:
    return common_pb2.ChatMessage(role="user", content=struct_pb2.Value(string_value=text))


async def make_group(
    c: Client, models: list[tuple[str, dict[str, Any]]], name: str | None = None
) -> str:
    name = name or uid("grp")
    await c.groups.CreateModelGroup(
        mg_pb.CreateModelGroupRequest(
            group_name=name,
            models=[
                mg_pb.ModelGroupModel(model_name=m, priority=i, config=struct(cfg))
                for i, (m, cfg) in enumerate(models)
            ],
        ),
        metadata=admin(),
    )
    return name


async def make_team(
    c: Client, credits: int = 10, groups: list[str] | None = None, org: str | None = None
) -> tuple[str, str]:
    """(team_id, virtual_key)."""
    org = org or uid("org")
    try:
        await c.orgs.CreateOrganization(
            org_pb.CreateOrganizationRequest(organization_id=org, name="Org"), metadata=admin()
        )
    except Exception as exc:  # already exists
        if "already exists" not in str(exc):
            raise
    if groups is None:
        groups = [await make_group(c, [("simulator/fast", {})])]
    team_id = uid("team")
    r = await c.teams.CreateTeam(
        team_pb.CreateTeamRequest(
            organization_id=org, team_id=team_id, model_groups=groups, credits_allocated=credits
        ),
        metadata=admin(),
    )
    return team_id, r.virtual_key


async def run_flow(
    c: Client, team_id: str, key: str, *, group: str = "", status: str = "completed"
) -> job_pb.CompleteJobResponse:
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="flow"), metadata=bearer(key)
    )
    await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job.job_id, model_group=group, messages=[user_msg("hi")]),
        metadata=bearer(key),
    )
    return await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job.job_id, status=status), metadata=bearer(key)
    )
