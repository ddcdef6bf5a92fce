"""The one connection stack of each database (storage/database.py) and SQLAlchemy Core run on
it (storage/sql.py): values round-trip as SQLAlchemy stores them, list parameters work on both
dialects, SQLite never blocks the event loop on another process's lock and gives up with
StorageUnavailable, a failed transaction leaves nothing, the WAL stays bounded, and the short
read caches never outlive a write of the same process."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import sqlite

from service.domain.ports import ConstraintViolation, StorageUnavailable
from service.storage import database as database_module
from service.storage.database import Database, SqliteDatabase
from service.storage.migrate import with_connection
from service.storage.money_sqlite import timestamp
from service.storage.rows import utcnow
from service.storage.schema import jobs, organizations
from service.storage.sql import in_list, one_of, prepared
from service.storage.teams import ReadCache
from tests.conftest import fresh_database

_ORG = prepared(select(organizations).where(organizations.c.organization_id == bindparam("p_id")))


async def _db(kind: str, tmp_path: Path) -> tuple[Database, str]:
    url = await fresh_database(kind, tmp_path)
    db = Database.open(url)
    now = utcnow()
    async with db.tx() as conn:
        await conn.execute(
            organizations.insert(),
            [
                {
                    "organization_id": oid,
                    "name": oid.upper(),
                    "status": "active",
                    "metadata": meta,
                    "created_at": now,
                    "updated_at": now,
                }
                for oid, meta in (("o", {"k": [1, "two", None], "b": True}), ("p", {}))
            ],
        )
    return db, url


async def test_values_round_trip(db_kind: str, tmp_path: Path) -> None:
    db, url = await _db(db_kind, tmp_path)
    try:
        async with db.read() as conn:
            row = (await conn.execute(_ORG, {"p_id": "o"})).one()
        m = row._mapping
        assert m["metadata"] == {"k": [1, "two", None], "b": True}
        created = m["created_at"]
        assert isinstance(created, datetime)
        assert abs((created.replace(tzinfo=UTC) - utcnow()).total_seconds()) < 60
        async with db.read() as conn:
            ids = (
                await conn.execute(
                    select(organizations.c.organization_id)
                    .where(in_list(organizations.c.organization_id, "ids"))
                    .order_by(organizations.c.organization_id),
                    {"ids": ["p", "o", "missing"]},
                )
            ).scalars()
            none = (
                await conn.execute(
                    select(organizations.c.organization_id).where(
                        in_list(organizations.c.organization_id, "ids")
                    ),
                    {"ids": []},
                )
            ).all()
            active = (
                await conn.execute(
                    select(organizations.c.organization_id).where(
                        one_of(organizations.c.status, ("active", "other"))
                    )
                )
            ).scalars()
        assert ids == ["o", "p"] and none == [] and sorted(active) == ["o", "p"]

        # SQLAlchemy itself (the migrations' engine) reads what we wrote, and the other way.
        def read_back(conn: Any) -> Any:
            conn.execute(
                update(organizations)
                .where(organizations.c.organization_id == "p")
                .values(metadata={"x": 1.5})
            )
            return conn.execute(
                select(organizations.c.metadata).where(organizations.c.organization_id == "o")
            ).scalar_one()

        assert await asyncio.to_thread(with_connection, url, read_back) == m["metadata"]
        async with db.read() as conn:
            p = (await conn.execute(_ORG, {"p_id": "p"})).one()._mapping
        assert p["metadata"] == {"x": 1.5}
    finally:
        await db.dispose()


async def test_constraint_violation_and_rollback(db_kind: str, tmp_path: Path) -> None:
    db, _ = await _db(db_kind, tmp_path)
    try:
        now = utcnow()
        with pytest.raises(ConstraintViolation):
            async with db.tx() as conn:
                await conn.execute(
                    update(organizations)
                    .where(organizations.c.organization_id == "o")
                    .values(name="changed")
                )
                await conn.execute(
                    organizations.insert().values(
                        organization_id="p",
                        name="dup",
                        status="active",
                        metadata={},
                        created_at=now,
                        updated_at=now,
                    )
                )
        with pytest.raises(RuntimeError):
            async with db.tx() as conn:
                await conn.execute(update(organizations).values(name="changed"))
                raise RuntimeError("boom")
        async with db.read() as conn:
            names = (await conn.execute(select(organizations.c.name))).scalars()
        assert sorted(names) == ["O", "P"]
    finally:
        await db.dispose()


async def test_sqlite_waits_for_another_writer_without_blocking_the_loop(tmp_path: Path) -> None:
    db, _ = await _db("sqlite", tmp_path)
    assert isinstance(db, SqliteDatabase)
    other = sqlite3.connect(db.path, isolation_level=None)  # another "process"
    other.execute("BEGIN IMMEDIATE")
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
        # Reads are not blocked by another process's write lock (WAL).
        async with db.read() as conn:
            assert (await conn.execute(_ORG, {"p_id": "o"})).one()._mapping["name"] == "O"
        other.execute("COMMIT")
        await asyncio.wait_for(task, 2)
        async with db.read() as conn:
            assert (await conn.execute(_ORG, {"p_id": "o"})).one()._mapping["name"] == "b"
    finally:
        other.close()
        await db.dispose()


async def test_sqlite_gives_up_with_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "LOCK_WAIT_S", 0.2)
    db, _ = await _db("sqlite", tmp_path)
    assert isinstance(db, SqliteDatabase)
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageUnavailable):
            async with db.tx() as conn:
                await conn.execute(select(organizations.c.name))
    finally:
        other.execute("ROLLBACK")
        other.close()
    # The connection is usable again afterwards.
    async with db.tx() as conn:
        assert len((await conn.execute(select(organizations.c.name))).all()) == 2
    await db.dispose()


async def test_sqlite_wal_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The loop thread's connection never checkpoints; a worker thread does every N commits.
    monkeypatch.setattr(database_module, "CHECKPOINT_EVERY", 50)
    db, _ = await _db("sqlite", tmp_path)
    assert isinstance(db, SqliteDatabase)
    try:
        for i in range(600):
            async with db.tx() as conn:
                await conn.execute(
                    update(organizations).values(name=f"name-{i}", metadata={"pad": "x" * 2000})
                )
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)  # the last checkpoint
        wal = Path(f"{db.path}-wal")
        # Without checkpoints: at least one 4 KB frame per commit, ~2.4 MB here.
        assert wal.stat().st_size < 1_000_000, wal.stat().st_size
    finally:
        await db.dispose()


async def test_postgres_lost_connections_are_unavailable(tmp_path: Path) -> None:
    db, url = await _db("postgres", tmp_path)
    try:
        import asyncpg

        name = url.rsplit("/", 1)[1]

        async def terminate() -> None:
            admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    name,
                )
            finally:
                await admin.close()

        # The connection is lost in the middle of a transaction.
        with pytest.raises(StorageUnavailable):
            async with db.tx() as conn:
                await conn.execute(_ORG, {"p_id": "o"})
                await terminate()
                await conn.execute(_ORG, {"p_id": "o"})
        # The pool replaces the connections it lost.
        async with db.read() as conn:
            assert (await conn.execute(_ORG, {"p_id": "o"})).one()._mapping["name"] == "O"
    finally:
        await db.dispose()


class _Db:
    config_version = 0


async def test_read_cache_shares_misses_and_obeys_writes() -> None:
    db: Any = _Db()
    cache: ReadCache[str, str] = ReadCache(db, ttl=0.2)
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.01)
        return f"v{loads}"

    assert await asyncio.gather(*(cache.get("k", load) for _ in range(20))) == ["v1"] * 20
    assert loads == 1
    assert await cache.get("k", load) == "v1"  # cached
    db.config_version += 1  # a write through this process
    assert await cache.get("k", load) == "v2"
    time.sleep(0.25)  # expiry
    assert await cache.get("k", load) == "v3"

    async def missing() -> str | None:
        return None

    assert await cache.get("absent", missing) is None
    assert await cache.get("absent", load) == "v4"  # "not found" is never cached


def test_sqlite_timestamps_are_stored_as_sqlalchemy_stores_them() -> None:
    to_text = sqlite.DATETIME().bind_processor(sqlite.dialect())
    assert to_text is not None
    for value in (
        datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC),
        datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1999, 12, 31, 0, 0, 0, 7, tzinfo=UTC),
    ):
        assert timestamp(value) == to_text(value.replace(tzinfo=None))


def test_constant_lists_refuse_quotes() -> None:
    with pytest.raises(ValueError, match="plain constants"):
        one_of(jobs.c.status, ("it's",))
