"""Organizations, model groups and model access groups (domain/ports.py Catalog)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update

from service.domain.models import AccessGroup, ModelGroup, Organization
from service.providers.base import ModelSpec
from service.storage.database import Connection, Database
from service.storage.rows import as_utc, ids_by_name, new_id, utcnow
from service.storage.schema import (
    access_group_model_groups,
    access_groups,
    model_group_models,
    model_groups,
    organizations,
    team_model_groups,
)
from service.storage.sql import in_list, prepared

_GROUPS_BY_NAME = prepared(
    select(model_groups)
    .where(in_list(model_groups.c.group_name, "p_names"))
    .order_by(model_groups.c.group_name)
)
_ALL_GROUPS = prepared(select(model_groups).order_by(model_groups.c.group_name))
_MODELS_OF = prepared(
    select(model_group_models)
    .where(in_list(model_group_models.c.model_group_id, "p_ids"))
    .order_by(model_group_models.c.model_group_id, model_group_models.c.priority)
)


def _organization(m: Any) -> Organization:
    return Organization(
        organization_id=m["organization_id"],
        name=m["name"],
        status=m["status"],
        metadata=m["metadata"] or {},
        created_at=as_utc(m["created_at"]),
        updated_at=as_utc(m["updated_at"]),
    )


def _group(m: Any, models: list[ModelSpec]) -> ModelGroup:
    return ModelGroup(
        model_group_id=m["model_group_id"],
        group_name=m["group_name"],
        display_name=m["display_name"],
        description=m["description"],
        status=m["status"],
        models=models,
        metadata=m["metadata"] or {},
        created_at=as_utc(m["created_at"]),
        updated_at=as_utc(m["updated_at"]),
        cache_ttl_seconds=int(m["cache_ttl_seconds"] or 0),
    )


async def load_groups(conn: Connection, names: Sequence[str] | None) -> list[ModelGroup]:
    """Groups by name (all when names is None), ordered by name, with their
    models in priority order."""
    if names is None:
        rows = (await conn.execute(_ALL_GROUPS)).all()
    elif not names:
        return []
    else:
        rows = (await conn.execute(_GROUPS_BY_NAME, {"p_names": list(names)})).all()
    if not rows:
        return []
    ids = [r._mapping["model_group_id"] for r in rows]
    by_group: dict[str, list[ModelSpec]] = defaultdict(list)
    for mr in await conn.execute(_MODELS_OF, {"p_ids": ids}):
        mm = mr._mapping
        by_group[mm["model_group_id"]].append(
            ModelSpec(
                model_name=mm["model_name"], priority=mm["priority"], config=mm["config"] or {}
            )
        )
    return [_group(r._mapping, by_group[r._mapping["model_group_id"]]) for r in rows]


async def resolve_group_ids(conn: Connection, names: Sequence[str]) -> list[str]:
    """Model group ids by name, in order; UnknownReference for an unknown name."""
    return await ids_by_name(
        conn, model_groups.c.group_name, model_groups.c.model_group_id, names, "model_group"
    )


async def resolve_access_group_ids(conn: Connection, names: Sequence[str]) -> list[str]:
    """Access group ids by name, in order; UnknownReference for an unknown name."""
    return await ids_by_name(
        conn, access_groups.c.group_name, access_groups.c.access_group_id, names, "access_group"
    )


async def _insert_models(conn: Connection, gid: str, models: Sequence[ModelSpec]) -> None:
    await conn.execute(
        model_group_models.insert(),
        [
            {
                "model_group_id": gid,
                "model_name": m.model_name,
                "priority": m.priority,
                "config": dict(m.config),
            }
            for m in models
        ],
    )


_ACCESS_MEMBERS = prepared(
    select(model_groups.c.group_name)
    .join(
        access_group_model_groups,
        access_group_model_groups.c.model_group_id == model_groups.c.model_group_id,
    )
    .where(access_group_model_groups.c.access_group_id == bindparam("p_id"))
    .order_by(access_group_model_groups.c.position)
)


async def _load_access_groups(conn: Connection, name: str | None) -> list[AccessGroup]:
    q = select(access_groups).order_by(access_groups.c.group_name)
    if name is not None:
        q = q.where(access_groups.c.group_name == name)
    out = []
    for r in (await conn.execute(q)).all():
        m = r._mapping
        members = (await conn.execute(_ACCESS_MEMBERS, {"p_id": m["access_group_id"]})).scalars()
        out.append(
            AccessGroup(
                group_name=m["group_name"],
                description=m["description"],
                model_groups=list(members),
                created_at=as_utc(m["created_at"]),
            )
        )
    return out


class CatalogRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # Organizations ---------------------------------------------------------------------------

    async def create_organization(
        self, organization_id: str, name: str, metadata: dict[str, Any]
    ) -> Organization:
        now = utcnow()
        org = Organization(
            organization_id=organization_id,
            name=name,
            status="active",
            metadata=metadata,
            created_at=now,
            updated_at=now,
        )
        async with self.db.tx() as conn:
            await conn.execute(organizations.insert().values(**dataclasses.asdict(org)))
        return org

    async def get_organization(self, organization_id: str) -> Organization | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(organizations).where(organizations.c.organization_id == organization_id)
                )
            ).first()
        return None if row is None else _organization(row._mapping)

    async def list_organizations(self, limit: int, offset: int) -> tuple[list[Organization], int]:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(organizations)
                    .order_by(organizations.c.organization_id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            total = (
                await conn.execute(select(func.count()).select_from(organizations))
            ).scalar_one()
        return [_organization(r._mapping) for r in rows], int(total)

    # Model groups ----------------------------------------------------------------------------

    async def create_model_group(
        self,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
        *,
        cache_ttl_seconds: int = 0,
    ) -> ModelGroup:
        now = utcnow()
        gid = new_id()
        async with self.db.tx() as conn:
            await conn.execute(
                model_groups.insert().values(
                    model_group_id=gid,
                    group_name=group_name,
                    display_name=display_name,
                    description=description,
                    status="active",
                    metadata=metadata,
                    created_at=now,
                    updated_at=now,
                    cache_ttl_seconds=cache_ttl_seconds,
                )
            )
            await _insert_models(conn, gid, models)
        return ModelGroup(
            model_group_id=gid,
            group_name=group_name,
            display_name=display_name,
            description=description,
            status="active",
            models=sorted(models, key=lambda m: m.priority),
            metadata=metadata,
            created_at=now,
            updated_at=now,
            cache_ttl_seconds=cache_ttl_seconds,
        )

    async def get_model_group(self, group_name: str) -> ModelGroup | None:
        async with self.db.read() as conn:
            groups = await load_groups(conn, [group_name])
        return groups[0] if groups else None

    async def list_model_groups(self) -> list[ModelGroup]:
        async with self.db.read() as conn:
            return await load_groups(conn, None)

    async def update_model_group(
        self,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
        *,
        cache_ttl_seconds: int = 0,
    ) -> ModelGroup | None:
        """Replace a group's fields and models in one transaction."""
        try:
            async with self.db.tx() as conn:
                row = (
                    await conn.execute(
                        update(model_groups)
                        .where(model_groups.c.group_name == group_name)
                        .values(
                            display_name=display_name,
                            description=description,
                            metadata=metadata,
                            updated_at=utcnow(),
                            cache_ttl_seconds=cache_ttl_seconds,
                        )
                        .returning(model_groups.c.model_group_id)
                    )
                ).first()
                if row is None:
                    return None
                gid = row[0]
                await conn.execute(
                    delete(model_group_models).where(model_group_models.c.model_group_id == gid)
                )
                await _insert_models(conn, gid, models)
                return (await load_groups(conn, [group_name]))[0]
        finally:
            # Teams' cached groups (storage/teams.py) must not serve the old models.
            self.db.config_changed()

    async def rewrite_model_configs(
        self, rewrite: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> int:
        """Apply `rewrite` to every model's config in one transaction (rows locked), storing
        each config it returns (None: unchanged); how many changed. Used by the encryption key
        rotation (service/rotation.py), which must re-seal every stored secret or none."""
        try:
            async with self.db.tx() as conn:
                rows = (
                    await conn.execute(
                        select(model_group_models.c.id, model_group_models.c.config)
                        .order_by(model_group_models.c.id)
                        .with_for_update()
                    )
                ).all()
                changed = 0
                for row_id, config in rows:
                    new = rewrite(dict(config or {}))
                    if new is not None:
                        await conn.execute(
                            update(model_group_models)
                            .where(model_group_models.c.id == row_id)
                            .values(config=new)
                        )
                        changed += 1
                return changed
        finally:
            self.db.config_changed()

    async def delete_model_group(self, group_name: str) -> int | None:
        async with self.db.tx() as conn:
            gid = (
                await conn.execute(
                    select(model_groups.c.model_group_id).where(
                        model_groups.c.group_name == group_name
                    )
                )
            ).scalar()
            if gid is None:
                return None
            users = int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(team_model_groups)
                        .where(team_model_groups.c.model_group_id == gid)
                    )
                ).scalar_one()
            ) + int(
                (
                    await conn.execute(
                        select(func.count())
                        .select_from(access_group_model_groups)
                        .where(access_group_model_groups.c.model_group_id == gid)
                    )
                ).scalar_one()
            )
            if users:
                return users
            await conn.execute(
                delete(model_group_models).where(model_group_models.c.model_group_id == gid)
            )
            await conn.execute(delete(model_groups).where(model_groups.c.model_group_id == gid))
        return 0

    # Model access groups ---------------------------------------------------------------------

    async def create_access_group(
        self, group_name: str, description: str, model_groups: Sequence[str]
    ) -> AccessGroup:
        now = utcnow()
        aid = new_id()
        async with self.db.tx() as conn:
            group_ids = await resolve_group_ids(conn, model_groups)
            await conn.execute(
                access_groups.insert().values(
                    access_group_id=aid,
                    group_name=group_name,
                    description=description,
                    created_at=now,
                )
            )
            if group_ids:
                await conn.execute(
                    access_group_model_groups.insert(),
                    [
                        {"access_group_id": aid, "model_group_id": gid, "position": i}
                        for i, gid in enumerate(group_ids)
                    ],
                )
        return AccessGroup(group_name, description, list(model_groups), now)

    async def list_access_groups(self) -> list[AccessGroup]:
        async with self.db.read() as conn:
            return await _load_access_groups(conn, None)

    async def get_access_group(self, group_name: str) -> AccessGroup | None:
        async with self.db.read() as conn:
            found = await _load_access_groups(conn, group_name)
        return found[0] if found else None
