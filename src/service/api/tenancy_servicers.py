"""Servicers of OrganizationService, ModelGroupService and TeamService: proto
in, domain call, proto out. Rules live in domain/tenancy.py."""

from __future__ import annotations

from saas_llm.v1 import (
    access_group_service_pb2 as ag_pb,
)
from saas_llm.v1 import (
    access_group_service_pb2_grpc as ag_grpc,
)
from saas_llm.v1 import (
    common_pb2,
)
from saas_llm.v1 import (
    model_group_service_pb2 as mg_pb,
)
from saas_llm.v1 import (
    model_group_service_pb2_grpc as mg_grpc,
)
from saas_llm.v1 import (
    organization_service_pb2 as org_pb,
)
from saas_llm.v1 import (
    organization_service_pb2_grpc as org_grpc,
)
from saas_llm.v1 import (
    team_service_pb2 as team_pb,
)
from saas_llm.v1 import (
    team_service_pb2_grpc as team_grpc,
)
from service.api.context import Ctx, principal
from service.api.convert import from_struct, saturated_int32, struct, ts
from service.domain.models import (
    AccessGroup,
    DirectUsageRow,
    ModelGroup,
    Organization,
    Team,
    UsageRow,
)
from service.domain.tenancy import TenancyService, budget_usd
from service.domain.usage import MarginRow, UsageService
from service.providers.base import ModelSpec


def organization_pb(o: Organization) -> org_pb.Organization:
    return org_pb.Organization(
        organization_id=o.organization_id,
        name=o.name,
        status=o.status,
        metadata=struct(o.metadata),
        created_at=ts(o.created_at),
        updated_at=ts(o.updated_at),
    )


def team_pb_of(t: Team) -> team_pb.Team:
    c = t.credits
    return team_pb.Team(
        team_id=t.team_id,
        organization_id=t.organization_id,
        team_alias=t.team_alias,
        status=t.status,
        credits=common_pb2.CreditSummary(
            credits_allocated=c.allocated,
            credits_used=c.used,
            credits_reserved=c.reserved,
            credits_remaining=c.remaining,
        ),
        model_groups=t.model_groups,
        allowed_models=t.allowed_models,
        access_groups=t.access_groups,
        max_budget_usd=budget_usd(c.allocated),
        key_prefix=t.key_prefix,
        metadata=struct(t.metadata),
        created_at=ts(t.created_at),
        updated_at=ts(t.updated_at),
        rpm_limit=t.limits.rpm_limit,
        tpm_limit=t.limits.tpm_limit,
        max_calls_per_job=t.limits.max_calls_per_job,
        max_tokens_per_job=t.limits.max_tokens_per_job,
        max_job_cost_usd=t.limits.max_job_cost_usd,
    )


def limits_given(
    request: team_pb.CreateTeamRequest | team_pb.UpdateTeamLimitsRequest,
) -> dict[str, int | float | None]:
    """The limit fields the request sets (proto3 `optional`: presence), None for the others."""
    return {
        "rpm_limit": request.rpm_limit if request.HasField("rpm_limit") else None,
        "tpm_limit": request.tpm_limit if request.HasField("tpm_limit") else None,
        "max_calls_per_job": request.max_calls_per_job
        if request.HasField("max_calls_per_job")
        else None,
        "max_tokens_per_job": request.max_tokens_per_job
        if request.HasField("max_tokens_per_job")
        else None,
        "max_job_cost_usd": request.max_job_cost_usd
        if request.HasField("max_job_cost_usd")
        else None,
    }


def models_pb(models: list[ModelSpec]) -> list[mg_pb.ModelGroupModel]:
    return [
        mg_pb.ModelGroupModel(
            model_name=m.model_name, priority=m.priority, config=struct(dict(m.config))
        )
        for m in models
    ]


def group_pb(g: ModelGroup) -> mg_pb.ModelGroup:
    return mg_pb.ModelGroup(
        model_group_id=g.model_group_id,
        group_name=g.group_name,
        display_name=g.display_name,
        description=g.description,
        status=g.status,
        models=models_pb(g.models),
        metadata=struct(g.metadata),
        created_at=ts(g.created_at),
        updated_at=ts(g.updated_at),
        cache_ttl_seconds=g.cache_ttl_seconds,
    )


def usage_pb(r: UsageRow) -> common_pb2.UsageSummary:
    return common_pb2.UsageSummary(
        total_jobs=r.total_jobs,
        successful_jobs=r.successful_jobs,
        failed_jobs=r.failed_jobs,
        total_cost_usd=r.total_cost_usd,
        total_tokens=saturated_int32(r.total_tokens),
        avg_cost_per_job=round(r.total_cost_usd / r.total_jobs, 6) if r.total_jobs else 0.0,
    )


def direct_usage_pb(r: DirectUsageRow) -> common_pb2.DirectUsage:
    return common_pb2.DirectUsage(
        total_calls=r.total_calls,
        successful_calls=r.successful_calls,
        total_tokens=r.total_tokens,
        total_cost_usd=r.total_cost_usd,
    )


def job_types_pb(rows: dict[str, UsageRow]) -> dict[str, common_pb2.JobTypeUsage]:
    return {
        k: common_pb2.JobTypeUsage(count=r.total_jobs, cost_usd=r.total_cost_usd)
        for k, r in rows.items()
    }


def margin_pb(r: MarginRow) -> team_pb.JobTypeMargin:
    return team_pb.JobTypeMargin(
        jobs=saturated_int32(r.jobs),
        credits_charged=saturated_int32(r.credits_charged),
        revenue_usd=r.revenue_usd,
        provider_cost_usd=r.provider_cost_usd,
        margin_usd=r.margin_usd,
    )


class OrganizationServicer(org_grpc.OrganizationServiceServicer):
    def __init__(self, tenancy: TenancyService, usage: UsageService) -> None:
        self.tenancy = tenancy
        self.usage = usage

    async def CreateOrganization(
        self, request: org_pb.CreateOrganizationRequest, context: Ctx
    ) -> org_pb.Organization:
        org = await self.tenancy.create_organization(
            principal(), request.organization_id, request.name, from_struct(request.metadata)
        )
        return organization_pb(org)

    async def ListOrganizations(
        self, request: org_pb.ListOrganizationsRequest, context: Ctx
    ) -> org_pb.ListOrganizationsResponse:
        orgs, total = await self.tenancy.list_organizations(
            principal(), request.limit, request.offset
        )
        return org_pb.ListOrganizationsResponse(
            organizations=[organization_pb(o) for o in orgs], total_organizations=total
        )

    async def GetOrganization(
        self, request: org_pb.GetOrganizationRequest, context: Ctx
    ) -> org_pb.Organization:
        return organization_pb(
            await self.tenancy.get_organization(principal(), request.organization_id)
        )

    async def ListOrganizationTeams(
        self, request: org_pb.ListOrganizationTeamsRequest, context: Ctx
    ) -> org_pb.ListOrganizationTeamsResponse:
        teams = await self.tenancy.organization_teams(principal(), request.organization_id)
        return org_pb.ListOrganizationTeamsResponse(
            organization_id=request.organization_id,
            teams=[team_pb_of(t) for t in teams],
            total_teams=len(teams),
        )

    async def GetOrganizationUsage(
        self, request: org_pb.GetOrganizationUsageRequest, context: Ctx
    ) -> org_pb.GetOrganizationUsageResponse:
        report = await self.usage.organization(principal(), request.organization_id, request.period)
        return org_pb.GetOrganizationUsageResponse(
            organization_id=request.organization_id,
            period=report.period,
            summary=usage_pb(report.summary),
            job_types=job_types_pb(report.job_types),
            teams={k: usage_pb(r) for k, r in report.teams.items()},
            direct_calls=direct_usage_pb(report.direct_calls),
        )


class ModelGroupServicer(mg_grpc.ModelGroupServiceServicer):
    def __init__(self, tenancy: TenancyService) -> None:
        self.tenancy = tenancy

    async def CreateModelGroup(
        self, request: mg_pb.CreateModelGroupRequest, context: Ctx
    ) -> mg_pb.ModelGroup:
        models = [
            ModelSpec(model_name=m.model_name, priority=m.priority, config=from_struct(m.config))
            for m in request.models
        ]
        group = await self.tenancy.create_model_group(
            principal(),
            request.group_name,
            request.display_name,
            request.description,
            models,
            from_struct(request.metadata),
            request.cache_ttl_seconds,
        )
        return group_pb(group)

    async def UpdateModelGroup(
        self, request: mg_pb.UpdateModelGroupRequest, context: Ctx
    ) -> mg_pb.ModelGroup:
        group = await self.tenancy.update_model_group(
            principal(),
            request.group_name,
            request.display_name,
            request.description,
            [
                ModelSpec(
                    model_name=m.model_name, priority=m.priority, config=from_struct(m.config)
                )
                for m in request.models
            ],
            from_struct(request.metadata),
            request.cache_ttl_seconds if request.HasField("cache_ttl_seconds") else None,
        )
        return group_pb(group)

    async def DeleteModelGroup(
        self, request: mg_pb.DeleteModelGroupRequest, context: Ctx
    ) -> mg_pb.DeleteModelGroupResponse:
        await self.tenancy.delete_model_group(principal(), request.group_name)
        return mg_pb.DeleteModelGroupResponse(group_name=request.group_name, deleted=True)

    async def ListModelGroups(
        self, request: mg_pb.ListModelGroupsRequest, context: Ctx
    ) -> mg_pb.ListModelGroupsResponse:
        groups = await self.tenancy.list_model_groups(principal())
        return mg_pb.ListModelGroupsResponse(
            model_groups=[group_pb(g) for g in groups], total=len(groups)
        )

    async def GetModelGroup(
        self, request: mg_pb.GetModelGroupRequest, context: Ctx
    ) -> mg_pb.ModelGroup:
        return group_pb(await self.tenancy.get_model_group(principal(), request.group_name))

    async def GetModelGroupModels(
        self, request: mg_pb.GetModelGroupModelsRequest, context: Ctx
    ) -> mg_pb.GetModelGroupModelsResponse:
        g = await self.tenancy.get_model_group(principal(), request.group_name)
        return mg_pb.GetModelGroupModelsResponse(
            group_name=g.group_name, models=models_pb(g.models)
        )

    async def ResolveModelGroup(
        self, request: mg_pb.ResolveModelGroupRequest, context: Ctx
    ) -> mg_pb.ResolveModelGroupResponse:
        g, has_access = await self.tenancy.resolve_model_group(
            principal(), request.group_name, request.team_id
        )
        return mg_pb.ResolveModelGroupResponse(
            group_name=g.group_name,
            primary_model=g.models[0].model_name if g.models else "",
            fallback_models=[m.model_name for m in g.models[1:]],
            team_has_access=has_access,
        )


class TeamServicer(team_grpc.TeamServiceServicer):
    def __init__(self, tenancy: TenancyService, usage: UsageService) -> None:
        self.tenancy = tenancy
        self.usage = usage

    async def CreateTeam(
        self, request: team_pb.CreateTeamRequest, context: Ctx
    ) -> team_pb.CreateTeamResponse:
        team, key = await self.tenancy.create_team(
            principal(),
            organization_id=request.organization_id,
            team_id=request.team_id,
            team_alias=request.team_alias,
            model_groups=list(request.model_groups),
            access_groups=list(request.access_groups),
            credits_allocated=request.credits_allocated,
            metadata=from_struct(request.metadata),
            limits=limits_given(request),
        )
        return team_pb.CreateTeamResponse(
            team_id=team.team_id,
            organization_id=team.organization_id,
            team_alias=team.team_alias,
            model_groups=team.model_groups,
            allowed_models=team.allowed_models,
            credits_allocated=team.credits.allocated,
            credits_remaining=team.credits.remaining,
            max_budget_usd=budget_usd(team.credits.allocated),
            virtual_key=key,
            message="Team created successfully with LiteLLM integration",
            access_groups=team.access_groups,
        )

    async def SuspendTeam(self, request: team_pb.SuspendTeamRequest, context: Ctx) -> team_pb.Team:
        return team_pb_of(
            await self.tenancy.set_team_status(
                principal(), request.team_id, "suspended", request.reason
            )
        )

    async def ResumeTeam(self, request: team_pb.ResumeTeamRequest, context: Ctx) -> team_pb.Team:
        return team_pb_of(
            await self.tenancy.set_team_status(principal(), request.team_id, "active")
        )

    async def RotateTeamKey(
        self, request: team_pb.RotateTeamKeyRequest, context: Ctx
    ) -> team_pb.RotateTeamKeyResponse:
        key, prefix = await self.tenancy.rotate_team_key(principal(), request.team_id)
        return team_pb.RotateTeamKeyResponse(
            team_id=request.team_id, virtual_key=key, key_prefix=prefix
        )

    async def UpdateTeamLimits(
        self, request: team_pb.UpdateTeamLimitsRequest, context: Ctx
    ) -> team_pb.Team:
        team = await self.tenancy.update_team_limits(
            principal(), request.team_id, limits_given(request)
        )
        return team_pb_of(team)

    async def GetTeam(self, request: team_pb.GetTeamRequest, context: Ctx) -> team_pb.Team:
        return team_pb_of(await self.tenancy.get_team(principal(), request.team_id))

    async def AssignModelGroups(
        self, request: team_pb.AssignModelGroupsRequest, context: Ctx
    ) -> team_pb.Team:
        team = await self.tenancy.assign_model_groups(
            principal(), request.team_id, list(request.model_groups)
        )
        return team_pb_of(team)

    async def GetTeamUsage(
        self, request: team_pb.GetTeamUsageRequest, context: Ctx
    ) -> team_pb.GetTeamUsageResponse:
        report = await self.usage.team(principal(), request.team_id, request.period)
        return team_pb.GetTeamUsageResponse(
            team_id=request.team_id,
            period=report.period,
            summary=usage_pb(report.summary),
            job_types=job_types_pb(report.job_types),
            direct_calls=direct_usage_pb(report.direct_calls),
        )

    async def GetTeamMargin(
        self, request: team_pb.GetTeamMarginRequest, context: Ctx
    ) -> team_pb.GetTeamMarginResponse:
        report = await self.usage.team_margin(principal(), request.team_id, request.period)
        return team_pb.GetTeamMarginResponse(
            team_id=request.team_id,
            period=report.period,
            job_types={k: margin_pb(r) for k, r in report.job_types.items()},
            total=margin_pb(report.total),
            direct_cost_usd=report.direct_cost_usd,
        )


def access_group_pb(g: AccessGroup) -> ag_pb.ModelAccessGroup:
    return ag_pb.ModelAccessGroup(
        group_name=g.group_name,
        description=g.description,
        model_groups=g.model_groups,
        created_at=ts(g.created_at),
    )


class ModelAccessGroupServicer(ag_grpc.ModelAccessGroupServiceServicer):
    def __init__(self, tenancy: TenancyService) -> None:
        self.tenancy = tenancy

    async def CreateModelAccessGroup(
        self, request: ag_pb.CreateModelAccessGroupRequest, context: Ctx
    ) -> ag_pb.ModelAccessGroup:
        g = await self.tenancy.create_access_group(
            principal(), request.group_name, request.description, list(request.model_groups)
        )
        return access_group_pb(g)

    async def ListModelAccessGroups(
        self, request: ag_pb.ListModelAccessGroupsRequest, context: Ctx
    ) -> ag_pb.ListModelAccessGroupsResponse:
        groups = await self.tenancy.list_access_groups(principal())
        return ag_pb.ListModelAccessGroupsResponse(
            access_groups=[access_group_pb(g) for g in groups], total=len(groups)
        )

    async def GetModelAccessGroup(
        self, request: ag_pb.GetModelAccessGroupRequest, context: Ctx
    ) -> ag_pb.ModelAccessGroup:
        return access_group_pb(await self.tenancy.get_access_group(principal(), request.group_name))
