"""A PostgreSQL backend terminated in the middle of a statement (pg_terminate_backend, a failover,
a restart) is StorageUnavailable (the API's 503, retry later), in a transaction and on a plain
pooled connection alike, never an unexpected error (500); and the pool recovers by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from service.domain.ports import StorageUnavailable
from service.storage.database import Database, PostgresDatabase, is_lost_connection
from tests.conftest import _pg_admin, fresh_database

pytestmark = pytest.mark.postgres


async def _terminated_mid_statement(name: str, statement: Callable[[], Awaitable[object]]) -> None:
    """Run `statement` (a pg_sleep) and terminate its backend while it runs."""
    task = asyncio.create_task(statement())
    async with asyncio.timeout(10):
        while not task.done():
            await asyncio.sleep(0.05)
            await _pg_admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND query LIKE 'SELECT pg_sleep%'"
            )
    await task


async def test_a_terminated_backend_is_unavailable(tmp_path: Path) -> None:
    url = await fresh_database("postgres", tmp_path)
    name = url.rsplit("/", 1)[1]
    db = Database.open(url)
    assert isinstance(db, PostgresDatabase)
    try:

        async def in_transaction() -> None:
            async with db.transaction() as raw:
                await raw.fetchval("SELECT pg_sleep(5)")

        async def on_a_connection() -> None:
            async with db.connection() as raw:
                await raw.fetchval("SELECT pg_sleep(5)")

        for statement in (in_transaction, on_a_connection):
            with pytest.raises(StorageUnavailable):
                await _terminated_mid_statement(name, statement)
        async with db.connection() as raw:
            assert await raw.fetchval("SELECT 1") == 1
    finally:
        await db.dispose()


async def test_a_database_refusing_connections_is_unavailable(tmp_path: Path) -> None:
    """No connection can be made (here: the database takes none, asyncpg's
    ObjectNotInPrerequisiteStateError while connecting): StorageUnavailable, not a 500."""
    url = await fresh_database("postgres", tmp_path)
    name = url.rsplit("/", 1)[1]
    db = Database.open(url)
    assert isinstance(db, PostgresDatabase)
    try:
        async with db.connection() as raw:
            assert await raw.fetchval("SELECT 1") == 1
        await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await _pg_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        for _ in range(2):
            with pytest.raises(StorageUnavailable):
                async with db.connection() as raw:
                    await raw.fetchval("SELECT 1")
        await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        async with db.connection() as raw:
            assert await raw.fetchval("SELECT 1") == 1
    finally:
        await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await db.dispose()


def test_lost_connection_states() -> None:
    """Whatever asyncpg class reports it, a connection the server dropped is recognised by its
    SQLSTATE: class 08, and 57P01-57P03 (admin, crash and startup shutdowns)."""
    for state in ("08000", "08003", "08006", "57P01", "57P02", "57P03"):
        assert is_lost_connection(state), state
    for state in (None, "23505", "40001", "57014", "22021"):
        assert not is_lost_connection(state), state
