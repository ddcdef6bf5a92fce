"""A service App in the bench's own process, for the measurements that call the service's code
directly instead of going through Envoy and the load generator (bench.usage_scale,
bench.job_ops)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from service.server import App
from service.settings import Settings
from service.storage.migrate import migrate
from service.storage.schema import organizations, teams


async def start_app(url: str, master_key: str) -> App:
    """A migrated database at `url` and a started App on it (gRPC on a free port)."""
    await asyncio.to_thread(migrate, url)
    app = App(
        Settings(
            database_url=url,
            master_key=master_key,
            grpc_host="127.0.0.1",
            grpc_port=0,
            log_level="WARNING",
        )
    )
    await app.start()
    return app


async def insert_team(
    app: App, organization_id: str, team_id: str, *, allocated: int, used: int = 0
) -> None:
    """An organization and one active team in it, written directly (no key worth using)."""
    now = datetime.now(UTC)
    async with app.db.tx() as conn:
        await conn.execute(
            organizations.insert().values(
                organization_id=organization_id,
                name="Bench",
                status="active",
                metadata={},
                created_at=now,
                updated_at=now,
            )
        )
        await conn.execute(
            teams.insert().values(
                team_id=team_id,
                organization_id=organization_id,
                team_alias="bench",
                status="active",
                metadata={},
                key_hash=uuid.uuid4().hex * 2,
                key_prefix="sk-bench",
                credits_allocated=allocated,
                credits_used=used,
                credits_reserved=0,
                created_at=now,
                updated_at=now,
            )
        )
