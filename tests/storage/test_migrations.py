"""Migrations are the only way the schema changes: applied from nothing they
produce exactly the tables of storage/schema.py, on both databases, with one
head, and they downgrade and upgrade again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.storage.migrate import alembic_config, with_connection
from service.storage.schema import metadata
from tests.conftest import fresh_database


def _diff(sync_conn: Any) -> list[Any]:
    ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, metadata))


async def test_migrations_match_the_models(db_kind: str, tmp_path: Path) -> None:
    url = await fresh_database(db_kind, tmp_path)
    assert await asyncio.to_thread(with_connection, url, _diff) == []


def test_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite:///:memory:"))
    assert len(script.get_heads()) == 1


async def test_downgrade_and_upgrade_again(db_kind: str, tmp_path: Path) -> None:
    url = await fresh_database(db_kind, tmp_path)
    cfg = alembic_config(url)
    await asyncio.to_thread(command.downgrade, cfg, "base")
    await asyncio.to_thread(command.upgrade, cfg, "head")
    assert await asyncio.to_thread(with_connection, url, _diff) == []
