"""Organizations repository."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from service.domain.errors import AlreadyExists
from service.domain.models import Organization
from service.storage.db import Database
from service.storage.rows import as_utc, utcnow
from service.storage.schema import organizations


def _org(row: Any) -> Organization:
    m = row._mapping
    return Organization(
        organization_id=m["organization_id"],
        name=m["name"],
        status=m["status"],
        metadata=m["metadata"] or {},
        created_at=as_utc(m["created_at"]),
        updated_at=as_utc(m["updated_at"]),
    )


class OrganizationRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, organization_id: str, name: str, metadata: dict[str, Any]
    ) -> Organization:
        now = utcnow()
        values = {
            "organization_id": organization_id,
            "name": name,
            "status": "active",
            "metadata": metadata,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self.db.tx() as conn:
                await conn.execute(organizations.insert().values(**values))
        except IntegrityError as exc:
            raise AlreadyExists(
                f"Organization '{organization_id}' already exists", reason="ALREADY_EXISTS"
            ) from exc
        return Organization(**values)  # type: ignore[arg-type]

    async def get(self, organization_id: str) -> Organization | None:
        async with self.db.tx() as conn:
            row = (
                await conn.execute(
                    select(organizations).where(organizations.c.organization_id == organization_id)
                )
            ).first()
        return None if row is None else _org(row)

    async def list_page(self, limit: int, offset: int) -> tuple[list[Organization], int]:
        """(a page of organizations ordered by id, how many there are in all)."""
        async with self.db.tx() as conn:
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
        return [_org(r) for r in rows], int(total)
