"""Teams repository: teams, their virtual-key hashes and model-group
assignments. Creating a team writes its allocation to the ledger in the same
transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import bindparam, delete, literal, select, text, union_all, update

from service.domain.models import LIMIT_FIELDS, Credits, ModelGroup, Team, TeamAuth, TeamLimits
from service.domain.ports import NewTeam, UnknownReference
from service.storage.catalog import load_groups, resolve_access_group_ids, resolve_group_ids
from service.storage.database import Connection, Database
from service.storage.money import Money
from service.storage.rows import as_utc, credits_of, limits_of, utcnow
from service.storage.schema import (
    access_group_model_groups,
    access_groups,
    model_groups,
    organizations,
    team_access_groups,
    team_model_groups,
    teams,
)
from service.storage.sql import Prepared, prepared


def allowed_models(groups: Sequence[ModelGroup]) -> list[str]:
    """Models of the groups, deduplicated, in group then priority order."""
    seen: dict[str, None] = {}
    for g in groups:
        for m in g.models:
            seen.setdefault(m.model_name, None)
    return list(seen)


_P_TEAM: Any = bindparam("p_team_id")
_ACCESS_GROUPS_OF = prepared(
    select(access_groups.c.group_name)
    .join(
        team_access_groups,
        team_access_groups.c.access_group_id == access_groups.c.access_group_id,
    )
    .where(team_access_groups.c.team_id == _P_TEAM)
    .order_by(team_access_groups.c.position)
)


async def team_access_groups_of(conn: Connection, team_id: str) -> list[str]:
    return (await conn.execute(_ACCESS_GROUPS_OF, {"p_team_id": team_id})).scalars()


def _group_names_query() -> Prepared:
    direct = (
        select(
            model_groups.c.group_name,
            literal(0).label("src"),
            team_model_groups.c.position,
            literal(0).label("pos2"),
        )
        .join(
            team_model_groups, team_model_groups.c.model_group_id == model_groups.c.model_group_id
        )
        .where(team_model_groups.c.team_id == _P_TEAM)
    )
    via_access = (
        select(
            model_groups.c.group_name,
            literal(1).label("src"),
            team_access_groups.c.position,
            access_group_model_groups.c.position,
        )
        .join(
            access_group_model_groups,
            access_group_model_groups.c.model_group_id == model_groups.c.model_group_id,
        )
        .join(
            team_access_groups,
            team_access_groups.c.access_group_id == access_group_model_groups.c.access_group_id,
        )
        .where(team_access_groups.c.team_id == _P_TEAM)
    )
    return prepared(
        union_all(direct, via_access).order_by(text("src"), text("position"), text("pos2"))
    )


_GROUP_NAMES_OF = _group_names_query()


async def team_groups(conn: Connection, team_id: str) -> list[ModelGroup]:
    """The team's model groups: its own assignments in order, then those of
    its access groups (as they are now), without duplicates."""
    rows = (await conn.execute(_GROUP_NAMES_OF, {"p_team_id": team_id})).all()
    names = list(dict.fromkeys(r[0] for r in rows))
    by_name = {g.group_name: g for g in await load_groups(conn, names)}
    return [by_name[n] for n in names if n in by_name]


_LIMITS = prepared(
    select(*(teams.c[f] for f in LIMIT_FIELDS)).where(teams.c.team_id == bindparam("p_team_id"))
)


def _team(row: Any, groups: Sequence[ModelGroup], access: Sequence[str] = ()) -> Team:
    m = row._mapping
    return Team(
        team_id=m["team_id"],
        organization_id=m["organization_id"],
        team_alias=m["team_alias"],
        status=m["status"],
        metadata=m["metadata"] or {},
        key_prefix=m["key_prefix"],
        credits=credits_of(m),
        model_groups=[g.group_name for g in groups],
        allowed_models=allowed_models(groups),
        created_at=as_utc(m["created_at"]),
        updated_at=as_utc(m["updated_at"]),
        access_groups=list(access),
        limits=limits_of(m),
    )


async def _load_team(conn: Connection, team_id: str) -> Team | None:
    row = (await conn.execute(select(teams).where(teams.c.team_id == team_id))).first()
    if row is None:
        return None
    return _team(row, await team_groups(conn, team_id), await team_access_groups_of(conn, team_id))


async def _update_team(conn: Connection, team_id: str, **values: Any) -> bool:
    """Set columns of a team row (and its updated_at); False when there is no such team."""
    found = await conn.execute(
        update(teams)
        .where(teams.c.team_id == team_id)
        .values(updated_at=utcnow(), **values)
        .returning(teams.c.team_id)
    )
    return found.first() is not None


async def _assign(conn: Connection, team_id: str, group_ids: Sequence[str]) -> None:
    await conn.execute(delete(team_model_groups).where(team_model_groups.c.team_id == team_id))
    if group_ids:
        await conn.execute(
            team_model_groups.insert(),
            [
                {"team_id": team_id, "model_group_id": gid, "position": i}
                for i, gid in enumerate(group_ids)
            ],
        )


# Seconds a process keeps what it read of a key (its team and the team's status) and of a team's
# model groups. Changes made through this process are seen at once (Database.config_version);
# changes made through another replica within this time.
CACHE_TTL_S = 1.0
_CACHE_MAX = 10_000

K = TypeVar("K")
V = TypeVar("V")


class ReadCache(Generic[K, V]):
    """A short-lived cache of database reads. An entry is used until it expires or until
    Database.config_version changes (a write through this process); concurrent misses of one key
    share one read, so that an expiry under load costs one query, not one per request. None (not
    found) is never cached."""

    def __init__(self, db: Database, ttl: float) -> None:
        self.db = db
        self.ttl = ttl
        self._entries: dict[K, tuple[float, int, V]] = {}
        self._loading: dict[tuple[K, int], asyncio.Future[V | None]] = {}

    async def get(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        version = self.db.config_version
        hit = self._entries.get(key)
        if hit is not None and hit[1] == version and hit[0] > time.monotonic():
            return hit[2]
        if self.ttl <= 0:
            return await load()
        flight = (key, version)
        pending = self._loading.get(flight)
        if pending is None:
            pending = asyncio.ensure_future(self._load(key, version, load))
            self._loading[flight] = pending
        # Shielded: one waiter going away must not cancel the read the others wait for.
        return await asyncio.shield(pending)

    async def _load(
        self, key: K, version: int, load: Callable[[], Awaitable[V | None]]
    ) -> V | None:
        try:
            value = await load()
            if value is not None:
                if len(self._entries) >= _CACHE_MAX:
                    self._entries.clear()
                self._entries[key] = (time.monotonic() + self.ttl, version, value)
            return value
        finally:
            self._loading.pop((key, version), None)


class TeamRepository:
    """domain/ports.py TeamDirectory."""

    def __init__(self, db: Database, money: Money, cache_ttl: float = CACHE_TTL_S) -> None:
        self.db = db
        self.money = money
        self._auth_cache: ReadCache[str, TeamAuth] = ReadCache(db, cache_ttl)
        self._groups_cache: ReadCache[str, list[ModelGroup]] = ReadCache(db, cache_ttl)
        self._limits_cache: ReadCache[str, TeamLimits] = ReadCache(db, cache_ttl)

    async def create_team(self, team: NewTeam) -> Team:
        now = utcnow()
        async with self.db.tx() as conn:
            org = (
                await conn.execute(
                    select(organizations.c.organization_id).where(
                        organizations.c.organization_id == team.organization_id
                    )
                )
            ).first()
            if org is None:
                raise UnknownReference("organization", team.organization_id)
            group_ids = await resolve_group_ids(conn, team.group_names)
            access_ids = await resolve_access_group_ids(conn, team.access_group_names)
            await conn.execute(
                teams.insert().values(
                    team_id=team.team_id,
                    organization_id=team.organization_id,
                    team_alias=team.team_alias,
                    status="active",
                    metadata=team.metadata,
                    key_hash=team.key_hash,
                    key_prefix=team.key_prefix,
                    credits_allocated=team.credits_allocated,
                    credits_used=0,
                    credits_reserved=0,
                    created_at=now,
                    updated_at=now,
                    **{f: getattr(team.limits, f) for f in LIMIT_FIELDS},
                )
            )
            await _assign(conn, team.team_id, group_ids)
            if access_ids:
                await conn.execute(
                    team_access_groups.insert(),
                    [
                        {"team_id": team.team_id, "access_group_id": a, "position": i}
                        for i, a in enumerate(access_ids)
                    ],
                )
            if team.credits_allocated > 0:
                await self.money.allocate(conn, team.team_id, team.credits_allocated, now)
            groups = await team_groups(conn, team.team_id)
        return Team(
            team_id=team.team_id,
            organization_id=team.organization_id,
            team_alias=team.team_alias,
            status="active",
            metadata=team.metadata,
            key_prefix=team.key_prefix,
            credits=Credits(allocated=team.credits_allocated, used=0, reserved=0),
            model_groups=[g.group_name for g in groups],
            allowed_models=allowed_models(groups),
            created_at=now,
            updated_at=now,
            access_groups=list(team.access_group_names),
            limits=team.limits,
        )

    async def get_team(self, team_id: str) -> Team | None:
        async with self.db.read() as conn:
            return await _load_team(conn, team_id)

    async def groups_of(self, team_id: str) -> list[ModelGroup]:
        """The team's model groups (cached, see CACHE_TTL_S: every LLM call asks)."""

        async def load() -> list[ModelGroup]:
            async with self.db.read() as conn:
                return await team_groups(conn, team_id)

        return list(await self._groups_cache.get(team_id, load) or ())

    async def teams_of_organization(self, organization_id: str) -> list[Team]:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(teams)
                    .where(teams.c.organization_id == organization_id)
                    .order_by(teams.c.created_at, teams.c.team_id)
                )
            ).all()
            return [
                _team(
                    r,
                    await team_groups(conn, r._mapping["team_id"]),
                    await team_access_groups_of(conn, r._mapping["team_id"]),
                )
                for r in rows
            ]

    async def auth_by_key_hash(self, key_hash: str) -> TeamAuth | None:
        """The key's team and its status (cached, see CACHE_TTL_S: every request asks)."""

        async def load() -> TeamAuth | None:
            async with self.db.read() as conn:
                row = (await conn.execute(_AUTH, {"p_key_hash": key_hash})).first()
            return None if row is None else TeamAuth(team_id=row[0], status=row[1])

        return await self._auth_cache.get(key_hash, load)

    async def set_model_groups(self, team_id: str, group_names: Sequence[str]) -> Team | None:
        try:
            async with self.db.tx() as conn:
                if not await _update_team(conn, team_id):
                    return None
                await _assign(conn, team_id, await resolve_group_ids(conn, group_names))
                return await _load_team(conn, team_id)
        finally:
            self.db.config_changed()

    async def rotate_key(self, team_id: str, key_hash: str, key_prefix: str) -> bool:
        async with self.db.tx() as conn:
            found = await _update_team(conn, team_id, key_hash=key_hash, key_prefix=key_prefix)
        self.db.config_changed()
        return found

    async def limits_of(self, team_id: str) -> TeamLimits | None:
        """The team's limits (cached, see CACHE_TTL_S: every direct call asks)."""

        async def load() -> TeamLimits | None:
            async with self.db.read() as conn:
                row = (await conn.execute(_LIMITS, {"p_team_id": team_id})).first()
            return None if row is None else limits_of(row._mapping)

        return await self._limits_cache.get(team_id, load)

    async def set_limits(self, team_id: str, changes: dict[str, int | float]) -> Team | None:
        assert set(changes) <= set(LIMIT_FIELDS)
        try:
            async with self.db.tx() as conn:
                if not await _update_team(conn, team_id, **changes):
                    return None
                return await _load_team(conn, team_id)
        finally:
            self.db.config_changed()

    async def set_status(self, team_id: str, status: str, error_message: str) -> Team | None:
        try:
            if not await self.money.set_team_status(team_id, status, error_message, utcnow()):
                return None
        finally:
            self.db.config_changed()
        return await self.get_team(team_id)


_AUTH = prepared(
    select(teams.c.team_id, teams.c.status).where(teams.c.key_hash == bindparam("p_key_hash"))
)
