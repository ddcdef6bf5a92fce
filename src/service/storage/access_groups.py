"""Model access groups: named bundles of model groups (seed 004)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.domain.errors import AlreadyExists, NotFound
from service.storage.db import Database
from service.storage.model_groups import resolve_group_ids
from service.storage.rows import as_utc, ids_by_name, new_id, utcnow
from service.storage.schema import access_group_model_groups, access_groups, model_groups


@dataclass(frozen=True, slots=True)
class AccessGroup:
    group_name: str
    description: str
    model_groups: list[str]
    created_at: datetime


def access_group_not_found(name: str) -> NotFound:
    return NotFound(f"Model access group '{name}' not found", reason="ACCESS_GROUP_NOT_FOUND")


async def resolve_access_group_ids(conn: AsyncConnection, names: Sequence[str]) -> list[str]:
    """Access group ids by name, in order; NOT_FOUND for an unknown name."""
    return await ids_by_name(
        conn,
        access_groups.c.group_name,
        access_groups.c.access_group_id,
        names,
        access_group_not_found,
    )


async def _load(conn: AsyncConnection, names: Sequence[str] | None) -> list[AccessGroup]:
    q = select(access_groups).order_by(access_groups.c.group_name)
    if names is not None:
        q = q.where(access_groups.c.group_name.in_(list(names)))
    rows = (await conn.execute(q)).all()
    out = []
    for r in rows:
        m = r._mapping
        members = (
            await conn.execute(
                select(model_groups.c.group_name)
                .join(
                    access_group_model_groups,
                    access_group_model_groups.c.model_group_id == model_groups.c.model_group_id,
                )
                .where(access_group_model_groups.c.access_group_id == m["access_group_id"])
                .order_by(access_group_model_groups.c.position)
            )
        ).scalars()
        out.append(
            AccessGroup(
                group_name=m["group_name"],
                description=m["description"],
                model_groups=list(members),
                created_at=as_utc(m["created_at"]),
            )
        )
    return out


class AccessGroupRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, name: str, description: str, group_names: Sequence[str]) -> AccessGroup:
        now = utcnow()
        aid = new_id()
        try:
            async with self.db.tx() as conn:
                group_ids = await resolve_group_ids(conn, group_names)
                await conn.execute(
                    access_groups.insert().values(
                        access_group_id=aid,
                        group_name=name,
                        description=description,
                        created_at=now,
                    )
                )
                if group_names:
                    await conn.execute(
                        access_group_model_groups.insert(),
                        [
                            {"access_group_id": aid, "model_group_id": gid, "position": i}
                            for i, gid in enumerate(group_ids)
                        ],
                    )
        except IntegrityError as exc:
            raise AlreadyExists(f"Model access group '{name}' already exists") from exc
        return AccessGroup(name, description, list(group_names), now)

    async def get(self, name: str) -> AccessGroup | None:
        async with self.db.tx() as conn:
            found = await _load(conn, [name])
        return found[0] if found else None

    async def list_all(self) -> list[AccessGroup]:
        async with self.db.tx() as conn:
            return await _load(conn, None)
