"""Engine factory. One engine per process; every unit of work is one short
transaction (`Database.tx()`), never held across an LLM call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from service.domain.errors import Unavailable
from service.storage import fastpath, sqlite_sync

# deadlock_detected, serialization_failure
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    for obj in (orig, getattr(orig, "__cause__", None)):
        code = getattr(obj, "sqlstate", None) or getattr(obj, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine = _sqlite_engine(url, echo=echo)
        else:
            self.engine = create_async_engine(
                url,
                echo=echo,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=False,
                pool_recycle=1800,
                # Statements are built once per process and reused: asyncpg
                # prepares them once per connection.
                connect_args={"server_settings": {"application_name": "saas-llm-gateway"}},
            )
        # SQLite: every write transaction of this process holds this lock, those of tx() and
        # those of the hot path's own connection (storage/fastpath.py) alike, so that they stay
        # serial as on one connection.
        self.sqlite_lock = asyncio.Lock()
        # The LLM call's two statements on the raw driver (None: use SQLAlchemy).
        self.fast = fastpath.create(url, sqlite_lock=self.sqlite_lock, pool_size=pool_size)
        # SQLite file databases (those the fast path serves): transactions run on a synchronous
        # SQLAlchemy connection on the event loop thread (storage/sqlite_sync.py), whose commits
        # count towards the fast path's WAL checkpoints; None: through the async engine.
        self._sync = (
            sqlite_sync.SyncSqlite(self.fast.path, on_commit=self.fast.note_commit)
            if isinstance(self.fast, fastpath.SqliteFastPath)
            else None
        )
        # Bumped after every committed change of teams' keys, statuses or model groups, so that
        # in-process caches of those (storage/teams.py) never serve an older value.
        self.config_version = 0

    def config_changed(self) -> None:
        self.config_version += 1

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[AsyncConnection]:
        """One database transaction (BEGIN IMMEDIATE on SQLite, so that two
        writers never deadlock on a lock upgrade)."""
        locked = False
        if self.is_sqlite:
            try:
                async with asyncio.timeout(fastpath.LOCK_WAIT_S):
                    await self.sqlite_lock.acquire()
            except TimeoutError as exc:
                raise Unavailable("Database busy, retry later") from exc
            locked = True
            if self._sync is not None:
                try:
                    async with self._sync.tx() as bridge:
                        # Same interface as AsyncConnection for what the
                        # repositories use (execute, stream).
                        yield cast(AsyncConnection, bridge)
                    return
                except (OperationalError, OSError) as exc:
                    raise Unavailable("Database unavailable, retry later") from exc
                finally:
                    self.sqlite_lock.release()
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (OperationalError, OSError) as exc:
            # Lost connections, a database that is down or locked for too
            # long: the client may retry. Constraint violations are
            # IntegrityError and propagate.
            raise Unavailable("Database unavailable, retry later") from exc
        except DBAPIError as exc:
            # The connection was lost mid-transaction (asyncpg's errors arrive as a plain
            # DBAPIError or InterfaceError, with SQLAlchemy's disconnect flag set).
            if exc.connection_invalidated or fastpath.is_lost_connection(_sqlstate(exc)):
                raise Unavailable("Database unavailable, retry later") from exc
            # PostgreSQL aborted the transaction to break a deadlock or a
            # serialization conflict: nothing was written, a retry succeeds.
            if _sqlstate(exc) in _RETRYABLE_SQLSTATES:
                raise Unavailable("Database conflict, retry later") from exc
            raise
        finally:
            if locked:
                self.sqlite_lock.release()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._sync is not None:
            self._sync.close()
        if self.fast is not None:
            await self.fast.close()
        await self.engine.dispose()


def _sqlite_engine(url: str, *, echo: bool) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url,
        echo=echo,
        poolclass=AsyncAdaptedQueuePool,
        # SQLite has one writer at a time anyway; a single connection makes
        # every transaction strictly serial inside the process and avoids
        # SQLITE_BUSY between our own connections. Other processes (the
        # auditor, a second replica) wait on busy_timeout.
        pool_size=1,
        max_overflow=0,
        pool_timeout=60,
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" hook below own transaction control.
        dbapi_conn.isolation_level = None
        fastpath.configure_sqlite(
            dbapi_conn, busy_timeout_ms=fastpath.SQLITE_BUSY_TIMEOUT_MS, checkpoints=True
        )

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
