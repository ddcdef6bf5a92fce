"""Organizations, model groups and teams: the admin side of the gateway."""

from __future__ import annotations

import re
from typing import Any

from saas_llm.v1.reasons import Reason
from service.domain import validation as v
from service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    access_group_not_found,
    model_group_access_denied,
    model_group_not_found,
    organization_not_found,
    team_not_found,
)
from service.domain.keys import new_team_key
from service.domain.models import AccessGroup, ModelGroup, Organization, Team
from service.domain.ports import (
    Catalog,
    ConstraintViolation,
    NewTeam,
    TeamDirectory,
    UnknownReference,
)
from service.domain.principal import Principal
from service.providers.base import ModelSpec

BUDGET_USD_PER_CREDIT = 0.10
ENV_REF = "os.environ/"
# Model config keys that hold credentials (LiteLLM forwards them to the provider): accepted only
# as "os.environ/NAME" references, so that no secret is stored or returned by a read.
# Header names that carry credentials (Authorization, X-Api-Key, ...).
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|password", re.IGNORECASE)
SECRET_CONFIG = ("api_key", "aws_secret_access_key", "aws_session_token", "vertex_credentials")
_NUMERIC_CONFIG = (
    "timeout",
    "input_cost_per_token",
    "output_cost_per_token",
    "latency_ms",
    "tokens_per_second",
    "failure_rate",
)


def budget_usd(credits_allocated: int) -> float:
    return round(credits_allocated * BUDGET_USD_PER_CREDIT, 2)


def _dedup(names: list[str], field: str) -> list[str]:
    if len(names) > v.MAX_GROUPS_PER_TEAM:
        raise InvalidArgument(f"{field} has more than {v.MAX_GROUPS_PER_TEAM} entries", field=field)
    for n in names:
        v.require_id(n, field)
    return list(dict.fromkeys(names))


def validate_models(models: list[ModelSpec]) -> list[ModelSpec]:
    if not models:
        raise InvalidArgument("models must list at least one model", field="models")
    if len(models) > v.MAX_MODELS_PER_GROUP:
        raise InvalidArgument(
            f"models has more than {v.MAX_MODELS_PER_GROUP} entries", field="models"
        )
    seen: set[int] = set()
    for m in models:
        v.text(m.model_name, "models.model_name", max_len=256, required=True)
        if not 0 <= m.priority <= 1000:
            raise InvalidArgument("models.priority must be between 0 and 1000", field="models")
        if m.priority in seen:
            raise InvalidArgument(
                f"models has two entries with priority {m.priority}", field="models"
            )
        seen.add(m.priority)
        v.metadata(dict(m.config), "models.config")
        for secret in SECRET_CONFIG:
            key = m.config.get(secret)
            if key is not None and not (isinstance(key, str) and key.startswith(ENV_REF)):
                # Secrets are never stored: the config names the env var holding it.
                raise InvalidArgument(
                    f"models.config.{secret} must reference an environment variable, "
                    'like "os.environ/OPENAI_API_KEY"',
                    field=f"models.config.{secret}",
                )
        headers = m.config.get("extra_headers")
        if headers is not None:
            if not isinstance(headers, dict):
                raise InvalidArgument(
                    "models.config.extra_headers must be an object",
                    field="models.config.extra_headers",
                )
            for name, value in headers.items():
                if _SECRET_HEADER.search(name) and not (
                    isinstance(value, str) and value.startswith(ENV_REF)
                ):
                    raise InvalidArgument(
                        f"models.config.extra_headers.{name} looks like a credential: it must "
                        'reference an environment variable, like "os.environ/PROXY_TOKEN"',
                        field="models.config.extra_headers",
                    )
        for k in _NUMERIC_CONFIG:
            val = m.config.get(k)
            if val is not None and (
                isinstance(val, bool) or not isinstance(val, int | float) or val < 0
            ):
                raise InvalidArgument(
                    f"models.config.{k} must be a non-negative number", field=f"models.config.{k}"
                )
    return sorted(models, key=lambda m: m.priority)


def unknown(ref: UnknownReference) -> NotFound:
    """The client-facing error of a name a write referred to that does not exist."""
    if ref.kind == "organization":
        return organization_not_found(ref.name)
    if ref.kind == "access_group":
        return access_group_not_found(ref.name)
    return model_group_not_found(ref.name)


class TenancyService:
    def __init__(self, catalog: Catalog, teams: TeamDirectory) -> None:
        self.catalog = catalog
        self.teams = teams

    # Organizations ---------------------------------------------------------

    async def create_organization(
        self, who: Principal, organization_id: str, name: str, metadata: dict[str, Any]
    ) -> Organization:
        who.require_admin()
        v.require_id(organization_id, "organization_id")
        v.text(name, "name", max_len=256, required=True)
        try:
            return await self.catalog.create_organization(
                organization_id, name, v.metadata(metadata)
            )
        except ConstraintViolation as exc:
            raise AlreadyExists(
                f"Organization '{organization_id}' already exists", reason=Reason.ALREADY_EXISTS
            ) from exc

    async def get_organization(self, who: Principal, organization_id: str) -> Organization:
        who.require_admin()
        v.require_id(organization_id, "organization_id")
        org = await self.catalog.get_organization(organization_id)
        if org is None:
            raise organization_not_found(organization_id)
        return org

    async def organization_teams(self, who: Principal, organization_id: str) -> list[Team]:
        await self.get_organization(who, organization_id)
        return await self.teams.teams_of_organization(organization_id)

    # Model groups ----------------------------------------------------------

    async def create_model_group(
        self,
        who: Principal,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
    ) -> ModelGroup:
        fields = _group_fields(who, group_name, display_name, description, models, metadata)
        try:
            return await self.catalog.create_model_group(*fields)
        except ConstraintViolation as exc:
            raise AlreadyExists(f"Model group '{group_name}' already exists") from exc

    async def update_model_group(
        self,
        who: Principal,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
    ) -> ModelGroup:
        group = await self.catalog.update_model_group(
            *_group_fields(who, group_name, display_name, description, models, metadata)
        )
        if group is None:
            raise model_group_not_found(group_name)
        return group

    async def delete_model_group(self, who: Principal, group_name: str) -> None:
        who.require_admin()
        v.require_id(group_name, "group_name")
        users = await self.catalog.delete_model_group(group_name)
        if users is None:
            raise model_group_not_found(group_name)
        if users:
            raise FailedPrecondition(
                f"Model group '{group_name}' is assigned to {users} team(s) or access "
                "group(s); unassign it first",
                reason=Reason.MODEL_GROUP_IN_USE,
            )

    # Access groups ---------------------------------------------------------

    async def create_access_group(
        self, who: Principal, group_name: str, description: str, model_groups: list[str]
    ) -> AccessGroup:
        who.require_admin()
        v.require_id(group_name, "group_name")
        v.text(description, "description", max_len=4096)
        try:
            return await self.catalog.create_access_group(
                group_name, description, _dedup(model_groups, "model_groups")
            )
        except UnknownReference as exc:
            raise unknown(exc) from exc
        except ConstraintViolation as exc:
            raise AlreadyExists(f"Model access group '{group_name}' already exists") from exc

    async def list_access_groups(self, who: Principal) -> list[AccessGroup]:
        who.require_admin()
        return await self.catalog.list_access_groups()

    async def get_access_group(self, who: Principal, group_name: str) -> AccessGroup:
        who.require_admin()
        v.require_id(group_name, "group_name")
        found = await self.catalog.get_access_group(group_name)
        if found is None:
            raise access_group_not_found(group_name)
        return found

    async def list_model_groups(self, who: Principal) -> list[ModelGroup]:
        if who.is_admin:
            return await self.catalog.list_model_groups()
        assert who.team_id is not None
        return sorted(await self.teams.groups_of(who.team_id), key=lambda g: g.group_name)

    async def get_model_group(self, who: Principal, group_name: str) -> ModelGroup:
        v.require_id(group_name, "group_name")
        group = await self.catalog.get_model_group(group_name)
        if group is None:
            raise model_group_not_found(group_name)
        if not who.is_admin:
            assert who.team_id is not None
            names = {g.group_name for g in await self.teams.groups_of(who.team_id)}
            if group_name not in names:
                raise model_group_access_denied(who.team_id, group_name)
        return group

    async def resolve_model_group(
        self, who: Principal, group_name: str, team_id: str
    ) -> tuple[ModelGroup, bool]:
        """(group, team_has_access). A team key may only ask for its own team,
        and a group it lacks is PERMISSION_DENIED (seed 003: "returns error")."""
        v.require_id(group_name, "group_name")
        if not team_id:
            if who.is_admin:
                raise InvalidArgument("team_id is required", field="team_id")
            assert who.team_id is not None
            team_id = who.team_id
        v.require_id(team_id, "team_id")
        who.require_team(team_id)
        group = await self.catalog.get_model_group(group_name)
        if group is None:
            raise model_group_not_found(group_name)
        team = await self.teams.get_team(team_id)
        if team is None:
            raise team_not_found(team_id)
        has_access = group_name in team.model_groups
        if not has_access and not who.is_admin:
            raise model_group_access_denied(team_id, group_name)
        return group, has_access

    # Teams -----------------------------------------------------------------

    async def create_team(
        self,
        who: Principal,
        *,
        organization_id: str,
        team_id: str,
        team_alias: str,
        model_groups: list[str],
        access_groups: list[str],
        credits_allocated: int,
        metadata: dict[str, Any],
    ) -> tuple[Team, str]:
        """Returns the team and its virtual key (shown once)."""
        who.require_admin()
        v.require_id(organization_id, "organization_id")
        v.require_id(team_id, "team_id")
        v.text(team_alias, "team_alias", max_len=256)
        groups = _dedup(model_groups, "model_groups")
        access = _dedup(access_groups, "access_groups")
        v.credits(credits_allocated, "credits_allocated", allow_zero=True)
        key, key_hash, prefix = new_team_key()
        new = NewTeam(
            organization_id=organization_id,
            team_id=team_id,
            team_alias=team_alias or team_id,
            group_names=groups,
            access_group_names=access,
            credits_allocated=credits_allocated,
            metadata=v.metadata(metadata),
            key_hash=key_hash,
            key_prefix=prefix,
        )
        try:
            team = await self.teams.create_team(new)
        except UnknownReference as exc:
            raise unknown(exc) from exc
        except ConstraintViolation as exc:
            raise AlreadyExists(f"Team '{team_id}' already exists") from exc
        return team, key

    async def get_team(self, who: Principal, team_id: str) -> Team:
        v.require_id(team_id, "team_id")
        who.require_team(team_id)
        team = await self.teams.get_team(team_id)
        if team is None:
            raise team_not_found(team_id)
        return team

    async def assign_model_groups(
        self, who: Principal, team_id: str, model_groups: list[str]
    ) -> Team:
        who.require_admin()
        v.require_id(team_id, "team_id")
        try:
            team = await self.teams.set_model_groups(team_id, _dedup(model_groups, "model_groups"))
        except UnknownReference as exc:
            raise unknown(exc) from exc
        if team is None:
            raise team_not_found(team_id)
        return team

    async def set_team_status(
        self, who: Principal, team_id: str, status: str, reason: str = ""
    ) -> Team:
        who.require_admin()
        v.require_id(team_id, "team_id")
        v.text(reason, "reason", max_len=512)
        message = f"Team suspended: {reason}" if reason else "Team suspended"
        team = await self.teams.set_status(team_id, status, message)
        if team is None:
            raise team_not_found(team_id)
        return team

    async def rotate_team_key(self, who: Principal, team_id: str) -> tuple[str, str]:
        """(new key, display prefix). The old key stops working at once: auth
        looks the key hash up on every request."""
        who.require_admin()
        v.require_id(team_id, "team_id")
        key, key_hash, prefix = new_team_key()
        if not await self.teams.rotate_key(team_id, key_hash, prefix):
            raise team_not_found(team_id)
        return key, prefix


def _group_fields(
    who: Principal,
    group_name: str,
    display_name: str,
    description: str,
    models: list[ModelSpec],
    metadata: dict[str, Any],
) -> tuple[str, str, str, list[ModelSpec], dict[str, Any]]:
    """A model group's fields as create and update store them, checked the same way."""
    who.require_admin()
    v.require_id(group_name, "group_name")
    v.text(display_name, "display_name", max_len=256)
    v.text(description, "description", max_len=4096)
    return (
        group_name,
        display_name or group_name,
        description,
        validate_models(models),
        v.metadata(metadata),
    )
