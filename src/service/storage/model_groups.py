"""Model groups repository: a group and its ordered models."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.domain.errors import AlreadyExists, FailedPrecondition, model_group_not_found
from service.domain.models import ModelGroup
from service.providers.base import ModelSpec
from service.storage.db import Database
from service.storage.rows import as_utc, ids_by_name, new_id, utcnow
from service.storage.schema import (
    access_group_model_groups,
    model_group_models,
    model_groups,
    team_model_groups,
)


def _group(row: Any, models: list[ModelSpec]) -> ModelGroup:
    m = row._mapping
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
    )


async def load_groups(conn: AsyncConnection, names: Sequence[str] | None) -> list[ModelGroup]:
    """Groups by name (all when names is None), ordered by name, with their
    models in priority order."""
    q = select(model_groups).order_by(model_groups.c.group_name)
    if names is not None:
        if not names:
            return []
        q = q.where(model_groups.c.group_name.in_(list(names)))
    rows = (await conn.execute(q)).all()
    if not rows:
        return []
    ids = [r._mapping["model_group_id"] for r in rows]
    mrows = (
        await conn.execute(
            select(model_group_models)
            .where(model_group_models.c.model_group_id.in_(ids))
            .order_by(model_group_models.c.model_group_id, model_group_models.c.priority)
        )
    ).all()
    by_group: dict[str, list[ModelSpec]] = defaultdict(list)
    for mr in mrows:
        mm = mr._mapping
        by_group[mm["model_group_id"]].append(
            ModelSpec(
                model_name=mm["model_name"], priority=mm["priority"], config=mm["config"] or {}
            )
        )
    return [_group(r, by_group[r._mapping["model_group_id"]]) for r in rows]


async def resolve_group_ids(conn: AsyncConnection, names: Sequence[str]) -> list[str]:
    """Model group ids by name, in order; NOT_FOUND for an unknown name."""
    return await ids_by_name(
        conn, model_groups.c.group_name, model_groups.c.model_group_id, names, model_group_not_found
    )


async def _insert_models(conn: AsyncConnection, gid: str, models: Sequence[ModelSpec]) -> None:
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


class ModelGroupRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
    ) -> ModelGroup:
        now = utcnow()
        gid = new_id()
        try:
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
                    )
                )
                await _insert_models(conn, gid, models)
        except IntegrityError as exc:
            raise AlreadyExists(f"Model group '{group_name}' already exists") from exc
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
        )

    async def get(self, group_name: str) -> ModelGroup | None:
        async with self.db.tx() as conn:
            groups = await load_groups(conn, [group_name])
        return groups[0] if groups else None

    async def list_all(self, names: Sequence[str] | None = None) -> list[ModelGroup]:
        async with self.db.tx() as conn:
            return await load_groups(conn, names)

    async def update(
        self,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
    ) -> ModelGroup | None:
        """Replace a group's fields and models in one transaction."""
        try:
            return await self._update(group_name, display_name, description, models, metadata)
        finally:
            # Teams' cached groups (storage/teams.py) must not serve the old models.
            self.db.config_changed()

    async def _update(
        self,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
    ) -> ModelGroup | None:
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

    async def delete(self, group_name: str) -> bool:
        """Delete an unused group; FAILED_PRECONDITION while a team or an
        access group refers to it."""
        async with self.db.tx() as conn:
            gid = (
                await conn.execute(
                    select(model_groups.c.model_group_id).where(
                        model_groups.c.group_name == group_name
                    )
                )
            ).scalar()
            if gid is None:
                return False
            users = (
                await conn.execute(
                    select(func.count())
                    .select_from(team_model_groups)
                    .where(team_model_groups.c.model_group_id == gid)
                )
            ).scalar_one() + (
                await conn.execute(
                    select(func.count())
                    .select_from(access_group_model_groups)
                    .where(access_group_model_groups.c.model_group_id == gid)
                )
            ).scalar_one()
            if users:
                raise FailedPrecondition(
                    f"Model group '{group_name}' is assigned to {users} team(s) or access "
                    "group(s); unassign it first",
                    reason="MODEL_GROUP_IN_USE",
                )
            await conn.execute(
                delete(model_group_models).where(model_group_models.c.model_group_id == gid)
            )
            await conn.execute(delete(model_groups).where(model_groups.c.model_group_id == gid))
        return True
