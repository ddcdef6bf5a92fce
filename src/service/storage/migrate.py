"""Apply Alembic migrations from code (no alembic.ini needed).

`migrate(url)` is blocking and must not run inside a running event loop (on PostgreSQL it
starts its own). Callers in async code use `await asyncio.to_thread(migrate, url)`.

Migrations connect through SQLAlchemy on the same driver as the service: the standard
library's sqlite3, and asyncpg.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

T = TypeVar("T")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # '%' must be escaped in ConfigParser values (passwords may contain it).
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def with_connection(url: str, fn: Callable[[Connection], T]) -> T:
    """fn(connection) inside one transaction of a SQLAlchemy connection to `url` (blocking)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed.set(drivername="sqlite"), poolclass=NullPool)
        try:
            with engine.begin() as conn:
                return fn(conn)
        finally:
            engine.dispose()

    async def run() -> T:
        engine = create_async_engine(
            parsed.set(drivername="postgresql+asyncpg"), poolclass=NullPool
        )
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()

    return asyncio.run(run())
