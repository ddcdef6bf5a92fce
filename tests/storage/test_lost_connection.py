"""A PostgreSQL backend terminated in the middle of a statement (pg_terminate_backend, a failover,
a restart) is Unavailable (the API's 503, retry later), on SQLAlchemy's connections
(Database.tx) and on the raw-driver fast path alike, never an unexpected error (500)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from service.domain.errors import Unavailable
from service.storage import fastpath
from service.storage.db import Database
from tests.conftest import _pg_admin, fresh_database

pytestmark = pytest.mark.postgres


async def _terminated_mid_statement(name: str, statement: Callable[[], Awaitable[object]]) -> None:
    """Run `statement` (a pg_sleep) and terminate its backend while it runs."""
    task = asyncio.create_task(statement())
    async with asyncio.timeout(10):
        while True:
            await asyncio.sleep(0.05)
            await _pg_admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND query LIKE 'SELECT pg_sleep%'"
            )
            if task.done():
                break
    await task


async def test_tx_and_fast_path_turn_a_lost_connection_into_unavailable(tmp_path: Path) -> None:
    url = await fresh_database("postgres", tmp_path)
    name = url.rsplit("/", 1)[1]
    db = Database(url)
    try:
        assert isinstance(db.fast, fastpath.PostgresFastPath)

        async def in_tx() -> None:
            async with db.tx() as conn:
                await conn.execute(text("SELECT pg_sleep(5)"))

        async def on_fast_path() -> None:
            assert isinstance(db.fast, fastpath.PostgresFastPath)
            await db.fast._query("fetchval", "SELECT pg_sleep(5)", ())

        for statement in (in_tx, on_fast_path):
            with pytest.raises(Unavailable):
                await _terminated_mid_statement(name, statement)
        # Both recover on new connections.
        async with db.tx() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        assert await db.fast._query("fetchval", "SELECT 1", ()) == 1
    finally:
        await db.dispose()


def test_lost_connection_states() -> None:
    for state in ("08000", "08003", "08006", "57P01", "57P02", "57P03"):
        assert fastpath.is_lost_connection(state), state
    for state in (None, "23505", "40001", "57014", "22021"):
        assert not fastpath.is_lost_connection(state), state
