"""SQLite transactions on a synchronous SQLAlchemy connection, on the event loop thread.

Through SQLAlchemy's asyncio layer every statement on aiosqlite costs several thread hops and
a greenlet switch: creating or completing a job (5-7 statements) cost ~5 ms of CPU, more than
the LLM call itself. SQLite answers these statements in microseconds from its page cache, so
running them directly on the loop thread is cheaper than handing them to a thread.

What must never happen is the loop waiting on another process's lock (a second replica, `make
audit`): the connection's busy_timeout is 0, and `BEGIN IMMEDIATE` (which takes the write lock
up front) is retried with an async backoff while another process holds it. Once it succeeds,
every later statement of the transaction runs without waiting: in WAL mode readers never block
the writer, and commit takes no further lock. Inside the process, `Database.tx()` already
serialises transactions with its lock, exactly as before.

`Bridge` offers the part of AsyncConnection the repositories use (`execute`, `stream`), so
their code is the same for SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import Result
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

from service.storage.fastpath import configure_sqlite

# Longest time to wait for another process's write lock, like the async engine's busy_timeout.
LOCK_WAIT_S = 10.0


class Bridge:
    """An open transaction; awaitable like AsyncConnection, synchronous underneath."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, statement: Any, parameters: Any = None) -> Result[Any]:
        if parameters is None:
            return self._conn.execute(statement)
        return self._conn.execute(statement, parameters)

    async def stream(self, statement: Any) -> AsyncIterator[Any]:
        return _rows(self._conn.execute(statement))


async def _rows(result: Result[Any]) -> AsyncIterator[Any]:
    for row in result:
        yield row


def _is_busy(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text


class SyncSqlite:
    """Transactions on one synchronous connection to the database file at `path`.

    The connection never checkpoints the WAL (a checkpoint copies pages and fsyncs, which must
    not happen on the loop thread): each commit calls `on_commit`, and the fast path's
    checkpointer (storage/fastpath.py) checkpoints in a worker thread.
    """

    def __init__(self, path: str, on_commit: Callable[[], None]) -> None:
        self.engine = _engine(path)
        self._on_commit = on_commit
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self.engine.connect()
        return self._conn

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Bridge]:
        conn = self._connection()
        await self._begin(conn)
        try:
            yield Bridge(conn)
        except BaseException:
            # SQLite may already have rolled back by itself (after some errors); the original
            # exception is what matters.
            with contextlib.suppress(OperationalError):
                conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("COMMIT")
        self._on_commit()

    async def _begin(self, conn: Connection) -> None:
        deadline = time.monotonic() + LOCK_WAIT_S
        delay = 0.001
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            # Another process holds the write lock: wait without blocking the loop.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.engine.dispose()


def _engine(path: str) -> Engine:
    engine = create_engine(
        f"sqlite:///{path}",
        poolclass=StaticPool,
        # We emit BEGIN IMMEDIATE / COMMIT / ROLLBACK ourselves.
        isolation_level="AUTOCOMMIT",
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        configure_sqlite(dbapi_conn, busy_timeout_ms=0, checkpoints=False)

    return engine
