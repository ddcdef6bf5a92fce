"""SQLite transactions run on the event loop thread (storage/sqlite_sync.py): they must never
block the loop on another process's lock, and they give up with UNAVAILABLE, not a hang."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from service.domain.errors import Unavailable
from service.storage import fastpath, sqlite_sync
from service.storage.db import Database
from service.storage.rows import utcnow
from service.storage.schema import organizations
from tests.conftest import fresh_database


async def _db(tmp_path: Path) -> tuple[Database, str]:
    url = await fresh_database("sqlite", tmp_path)
    db = Database(url)
    assert db._sync is not None  # the synchronous path is in use for file databases
    now = utcnow()
    async with db.tx() as conn:
        await conn.execute(
            organizations.insert().values(
                organization_id="o",
                name="a",
                status="active",
                metadata={},
                created_at=now,
                updated_at=now,
            )
        )
    return db, url.split("///", 1)[1]


async def test_waits_for_another_writer_without_blocking_the_loop(tmp_path: Path) -> None:
    db, path = await _db(tmp_path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another "process" holds the write lock
    try:

        async def write() -> None:
            async with db.tx() as conn:
                await conn.execute(
                    update(organizations)
                    .where(organizations.c.organization_id == "o")
                    .values(name="b")
                )

        task = asyncio.create_task(write())
        ticks = 0
        started = time.monotonic()
        while time.monotonic() - started < 0.3:
            await asyncio.sleep(0.01)
            ticks += 1
        assert not task.done()
        assert ticks >= 15  # the loop kept running while the write waited
        other.execute("COMMIT")
        await asyncio.wait_for(task, 2)
        async with db.tx() as conn:
            name = (await conn.execute(select(organizations.c.name))).scalar_one()
        assert name == "b"
    finally:
        other.close()
        await db.dispose()


async def test_gives_up_with_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_sync, "LOCK_WAIT_S", 0.2)
    db, path = await _db(tmp_path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Unavailable):
            async with db.tx() as conn:
                await conn.execute(select(organizations.c.name))
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The connection is usable again afterwards.
    async with db.tx() as conn:
        assert (await conn.execute(select(organizations.c.name))).scalar_one() == "a"
    await db.dispose()


async def test_rollback_on_error(tmp_path: Path) -> None:
    db, _ = await _db(tmp_path)
    with pytest.raises(RuntimeError):
        async with db.tx() as conn:
            await conn.execute(update(organizations).values(name="changed"))
            raise RuntimeError("boom")
    async with db.tx() as conn:
        assert (await conn.execute(select(organizations.c.name))).scalar_one() == "a"
    await db.dispose()


async def test_transactions_do_not_grow_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tx() commits count towards the fast path's checkpoints; their connection never
    # checkpoints on the loop thread itself.
    monkeypatch.setattr(fastpath, "CHECKPOINT_EVERY", 50)
    db, path = await _db(tmp_path)
    try:
        for i in range(600):
            async with db.tx() as conn:
                await conn.execute(
                    update(organizations).values(name=f"name-{i}", metadata={"pad": "x" * 2000})
                )
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)  # the last checkpoint
        wal = Path(f"{path}-wal")
        # Without checkpoints: at least one 4 KB frame per commit, ~2.4 MB here.
        assert wal.stat().st_size < 1_000_000, wal.stat().st_size
    finally:
        await db.dispose()
