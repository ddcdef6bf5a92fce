"""Organizations, model groups and teams: the admin side of the gateway."""

from __future__ import annotations

import math
from dataclasses import replace
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
from service.domain.models import (
    LIMIT_FIELDS,
    AccessGroup,
    ModelGroup,
    Organization,
    Team,
    TeamLimits,
)
from service.domain.ports import (
    Catalog,
    ConstraintViolation,
    NewTeam,
    TeamDirectory,
    UnknownReference,
)
from service.domain.principal import Principal
from service.encryption import EncryptionKeyError
from service.providers.base import ModelSpec
from service.providers.credentials import CredentialError, CredentialPolicy

BUDGET_USD_PER_CREDIT = 0.10
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
        for k in _NUMERIC_CONFIG:
            val = m.config.get(k)
            if val is not None and (
                isinstance(val, bool) or not isinstance(val, int | float) or val < 0
            ):
                raise InvalidArgument(
                    f"models.config.{k} must be a non-negative number", field=f"models.config.{k}"
                )
    return sorted(models, key=lambda m: m.priority)


# Upper bounds of the limits (int32 columns and contract fields).
_LIMIT_MAX: dict[str, float] = {
    "rpm_limit": 1_000_000_000,
    "tpm_limit": 2_000_000_000,
    "max_calls_per_job": 1_000_000_000,
    "max_tokens_per_job": 2_000_000_000,
    "max_job_cost_usd": 1_000_000,
}


def validate_limits(values: dict[str, int | float | None]) -> dict[str, int | float]:
    """The limits given (None = not given), checked: 0 (none) up to their maximum."""
    checked: dict[str, int | float] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name not in LIMIT_FIELDS:
            raise InvalidArgument(f"unknown limit {name}", field=name)
        top = _LIMIT_MAX[name]
        if isinstance(value, bool) or not math.isfinite(value) or not 0 <= value <= top:
            raise InvalidArgument(f"{name} must be between 0 and {top:g} (0 = none)", field=name)
        checked[name] = float(value) if name == "max_job_cost_usd" else int(value)
    return checked


def unknown(ref: UnknownReference) -> NotFound:
    """The client-facing error of a name a write referred to that does not exist."""
    if ref.kind == "organization":
        return organization_not_found(ref.name)
    if ref.kind == "access_group":
        return access_group_not_found(ref.name)
    return model_group_not_found(ref.name)


class TenancyService:
    def __init__(
        self,
        catalog: Catalog,
        teams: TeamDirectory,
        credentials: CredentialPolicy | None = None,
        default_limits: TeamLimits | None = None,
    ) -> None:
        self.catalog = catalog
        self.teams = teams
        # A new team's limits where its create request gives none (settings DEFAULT_*).
        self.default_limits = default_limits or TeamLimits()
        # Seals pasted provider keys on write, hides them on read (providers/credentials.py).
        self.credentials = credentials or CredentialPolicy()

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

    async def list_organizations(
        self, who: Principal, limit: int, offset: int
    ) -> tuple[list[Organization], int]:
        who.require_admin()
        limit, offset = v.page(limit, offset, default_limit=100)
        return await self.catalog.list_organizations(limit, offset)

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
        cache_ttl_seconds: int = 0,
    ) -> ModelGroup:
        name, display, desc, checked, meta = _group_fields(
            who, group_name, display_name, description, models, metadata
        )
        ttl = _cache_ttl(cache_ttl_seconds)
        try:
            group = await self.catalog.create_model_group(
                name, display, desc, self._sealed(checked, []), meta, cache_ttl_seconds=ttl
            )
        except ConstraintViolation as exc:
            raise AlreadyExists(f"Model group '{group_name}' already exists") from exc
        return self._readable(who, group)

    async def update_model_group(
        self,
        who: Principal,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
        cache_ttl_seconds: int | None = None,
    ) -> ModelGroup:
        """Replace the group's fields; `cache_ttl_seconds` None keeps the current TTL."""
        name, display, desc, checked, meta = _group_fields(
            who, group_name, display_name, description, models, metadata
        )
        ttl = None if cache_ttl_seconds is None else _cache_ttl(cache_ttl_seconds)
        # The stored group: a redacted secret sent back as read keeps the secret it stands for.
        current = await self.catalog.get_model_group(name)
        if current is None:
            raise model_group_not_found(group_name)
        group = await self.catalog.update_model_group(
            name,
            display,
            desc,
            self._sealed(checked, current.models),
            meta,
            cache_ttl_seconds=current.cache_ttl_seconds if ttl is None else ttl,
        )
        if group is None:
            raise model_group_not_found(group_name)
        return self._readable(who, group)

    def _sealed(self, models: list[ModelSpec], previous: list[ModelSpec]) -> list[ModelSpec]:
        try:
            return self.credentials.seal_models(models, previous)
        except CredentialError as exc:
            raise InvalidArgument(exc.message, field=exc.field) from exc

    def _readable(self, who: Principal, group: ModelGroup) -> ModelGroup:
        """The group as `who` may read it: secrets as hints for the master key, no credential
        at all for a team key."""
        show = self.credentials.for_admin if who.is_admin else self.credentials.for_team
        return replace(group, models=[replace(m, config=show(m.config)) for m in group.models])

    async def verify_stored_credentials(self) -> int:
        """Open every sealed provider credential of every group; how many. EncryptionKeyError
        (naming the group, never a value) when one does not open with ENCRYPTION_KEY."""
        n = 0
        for group in await self.catalog.list_model_groups():
            for m in group.models:
                try:
                    n += self.credentials.verify(m.config)
                except EncryptionKeyError as exc:
                    raise EncryptionKeyError(
                        f"model group '{group.group_name}', model '{m.model_name}': {exc}"
                    ) from exc
        return n

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
            groups = await self.catalog.list_model_groups()
        else:
            assert who.team_id is not None
            groups = sorted(await self.teams.groups_of(who.team_id), key=lambda g: g.group_name)
        return [self._readable(who, g) for g in groups]

    async def get_model_group(self, who: Principal, group_name: str) -> ModelGroup:
        """A team key gets PERMISSION_DENIED for any group it is not assigned, existing or not
        (issue 21 item 8: a 404 would tell it which names exist)."""
        v.require_id(group_name, "group_name")
        if not who.is_admin:
            assert who.team_id is not None
            names = {g.group_name for g in await self.teams.groups_of(who.team_id)}
            if group_name not in names:
                raise model_group_access_denied(who.team_id, group_name)
        group = await self.catalog.get_model_group(group_name)
        if group is None:
            raise model_group_not_found(group_name)
        return self._readable(who, group)

    async def resolve_model_group(
        self, who: Principal, group_name: str, team_id: str
    ) -> tuple[ModelGroup, bool]:
        """(group, team_has_access). A team key may only ask for its own team, and a group it
        lacks is PERMISSION_DENIED (seed 003: "returns error"), whether the group exists or not
        (issue 21 item 8: a 404 for absent groups would tell a team which names exist)."""
        v.require_id(group_name, "group_name")
        if not team_id:
            if who.is_admin:
                raise InvalidArgument("team_id is required", field="team_id")
            assert who.team_id is not None
            team_id = who.team_id
        v.require_id(team_id, "team_id")
        who.require_team(team_id)
        team = None
        if not who.is_admin:
            team = await self.teams.get_team(team_id)
            if team is None:
                raise team_not_found(team_id)
            if group_name not in team.model_groups:
                raise model_group_access_denied(team_id, group_name)
        group = await self.catalog.get_model_group(group_name)
        if group is None:
            raise model_group_not_found(group_name)
        team = team or await self.teams.get_team(team_id)
        if team is None:
            raise team_not_found(team_id)
        return self._readable(who, group), group_name in team.model_groups

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
        limits: dict[str, int | float | None] | None = None,
    ) -> tuple[Team, str]:
        """Returns the team and its virtual key (shown once). `limits`: those given (None =
        the default)."""
        who.require_admin()
        v.require_id(organization_id, "organization_id")
        v.require_id(team_id, "team_id")
        v.text(team_alias, "team_alias", max_len=256)
        groups = _dedup(model_groups, "model_groups")
        access = _dedup(access_groups, "access_groups")
        v.credits(credits_allocated, "credits_allocated", allow_zero=True)
        given: dict[str, Any] = dict(validate_limits(limits or {}))
        team_limits = replace(self.default_limits, **given)
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
            limits=team_limits,
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

    async def update_team_limits(
        self, who: Principal, team_id: str, limits: dict[str, int | float | None]
    ) -> Team:
        """Set the limits given (None = keep); 0 turns one off."""
        who.require_admin()
        v.require_id(team_id, "team_id")
        changes = validate_limits(limits)
        if not changes:
            return await self.get_team(who, team_id)
        team = await self.teams.set_limits(team_id, changes)
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


# The longest response cache TTL a group may have: a week.
MAX_CACHE_TTL_SECONDS = 7 * 24 * 3600


def _cache_ttl(seconds: int) -> int:
    if not 0 <= seconds <= MAX_CACHE_TTL_SECONDS:
        raise InvalidArgument(
            f"cache_ttl_seconds must be between 0 and {MAX_CACHE_TTL_SECONDS}",
            field="cache_ttl_seconds",
        )
    return seconds


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
