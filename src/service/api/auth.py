"""Authentication: which key is calling. Tenancy rules (what that key may
touch) are applied by the domain through `Principal`."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from saas_llm.v1.reasons import Reason
from service.domain.errors import PermissionDenied, Unauthenticated
from service.domain.keys import KEY_PREFIX, hash_key, same_secret
from service.domain.ports import TeamDirectory
from service.domain.principal import ADMIN, Principal


class Access(Enum):
    PUBLIC = "public"  # no key needed
    ADMIN = "admin"  # master key only
    TENANT = "tenant"  # master key or a team key (scoped by the domain)


_S = "/saas_llm.v1."
# Every RPC the server exposes must be listed; an RPC missing here is refused
# (and a test fails), so that no endpoint is ever left open by accident.
RULES: Mapping[str, Access] = {
    _S + "HealthService/Check": Access.PUBLIC,
    _S + "HealthService/Live": Access.PUBLIC,
    "/grpc.health.v1.Health/Check": Access.PUBLIC,
    "/grpc.health.v1.Health/Watch": Access.PUBLIC,
    "/grpc.health.v1.Health/List": Access.PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Access.PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Access.PUBLIC,
    _S + "OrganizationService/CreateOrganization": Access.ADMIN,
    _S + "OrganizationService/ListOrganizations": Access.ADMIN,
    _S + "OrganizationService/GetOrganization": Access.ADMIN,
    _S + "OrganizationService/ListOrganizationTeams": Access.ADMIN,
    _S + "OrganizationService/GetOrganizationUsage": Access.ADMIN,
    _S + "ModelGroupService/CreateModelGroup": Access.ADMIN,
    _S + "ModelGroupService/UpdateModelGroup": Access.ADMIN,
    _S + "ModelGroupService/DeleteModelGroup": Access.ADMIN,
    _S + "ModelAccessGroupService/CreateModelAccessGroup": Access.ADMIN,
    _S + "ModelAccessGroupService/ListModelAccessGroups": Access.ADMIN,
    _S + "ModelAccessGroupService/GetModelAccessGroup": Access.ADMIN,
    _S + "TeamService/SuspendTeam": Access.ADMIN,
    _S + "TeamService/ResumeTeam": Access.ADMIN,
    _S + "TeamService/RotateTeamKey": Access.ADMIN,
    _S + "TeamService/UpdateTeamLimits": Access.ADMIN,
    _S + "JobService/UpdateJobMetadata": Access.TENANT,
    _S + "ModelGroupService/ListModelGroups": Access.TENANT,
    _S + "ModelGroupService/GetModelGroup": Access.TENANT,
    _S + "ModelGroupService/GetModelGroupModels": Access.TENANT,
    _S + "ModelGroupService/ResolveModelGroup": Access.TENANT,
    _S + "TeamService/CreateTeam": Access.ADMIN,
    _S + "TeamService/GetTeam": Access.TENANT,
    _S + "TeamService/AssignModelGroups": Access.ADMIN,
    _S + "TeamService/GetTeamUsage": Access.TENANT,
    _S + "TeamService/GetTeamMargin": Access.ADMIN,
    _S + "CreditService/GetCreditBalance": Access.TENANT,
    _S + "CreditService/AddCredits": Access.ADMIN,
    _S + "CreditService/CheckCredits": Access.TENANT,
    _S + "CreditService/ListCreditTransactions": Access.TENANT,
    _S + "JobService/CreateJob": Access.TENANT,
    _S + "JobService/LlmCall": Access.TENANT,
    _S + "JobService/LlmCallStream": Access.TENANT,
    _S + "JobService/CompleteJob": Access.TENANT,
    _S + "JobService/GetJob": Access.TENANT,
    _S + "JobService/ListTeamJobs": Access.TENANT,
    _S + "JobService/CreateAndCall": Access.TENANT,
    _S + "JobService/CreateAndCallStream": Access.TENANT,
    # The OpenAI-compatible API (gRPC and its REST paths): a team's key; the domain refuses the
    # master key (it has no team and no budget).
    _S + "OpenAIService/CreateChatCompletion": Access.TENANT,
    _S + "OpenAIService/StreamChatCompletion": Access.TENANT,
    _S + "OpenAIService/ListModels": Access.TENANT,
    _S + "OpenAIService/CreateEmbeddings": Access.TENANT,
}

ANONYMOUS = Principal(is_admin=False, team_id=None)


class Authenticator:
    def __init__(self, master_key: str | None, teams: TeamDirectory) -> None:
        self.master_key = master_key
        self.teams = teams

    async def authenticate(self, method: str, authorization: str | None) -> Principal:
        access = RULES.get(method)
        if access is None:
            raise PermissionDenied(f"No access rule for {method}", reason=Reason.NO_ACCESS_RULE)
        if access is Access.PUBLIC:
            return ANONYMOUS
        if not authorization:
            raise Unauthenticated(
                "Missing API key: send 'Authorization: Bearer <key>'", reason=Reason.MISSING_API_KEY
            )
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthenticated(
                "Malformed Authorization header: expected 'Bearer <key>'",
                reason=Reason.MISSING_API_KEY,
            )
        if self.master_key and same_secret(key, self.master_key):
            return ADMIN
        if access is Access.ADMIN:
            if key.startswith(KEY_PREFIX) and await self._team(key) is not None:
                raise PermissionDenied(
                    "This operation requires the admin master key", reason=Reason.ADMIN_REQUIRED
                )
            raise Unauthenticated("Invalid API key", reason=Reason.INVALID_API_KEY)
        team = await self._team(key)
        if team is None:
            raise Unauthenticated("Invalid API key", reason=Reason.INVALID_API_KEY)
        return team

    async def _team(self, key: str) -> Principal | None:
        if not key.startswith(KEY_PREFIX) or len(key) > 256:
            return None
        # Lookup by SHA-256: the hash is what is indexed, and comparing
        # hashes leaks nothing useful about the key.
        auth = await self.teams.auth_by_key_hash(hash_key(key))
        if auth is None:
            return None
        if auth.status != "active":
            raise PermissionDenied(
                f"Team '{auth.team_id}' is suspended", reason=Reason.TEAM_SUSPENDED
            )
        return Principal(is_admin=False, team_id=auth.team_id)
