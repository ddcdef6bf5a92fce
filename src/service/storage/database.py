"""The one connection stack of each database, and its transactions.

- SQLite: one sqlite3 connection per process, used on the event loop thread. SQLite answers our
  statements in microseconds from its page cache, so running them directly is cheaper than any
  hand-off to a thread (aiosqlite's thread hop alone costs ~40 µs per cursor operation). The loop
  must never wait on another process's lock (a second replica, `make audit`): the connection's
  busy_timeout is 0 and `BEGIN IMMEDIATE`, which takes the write lock up front, is retried with
  an async backoff. Once it succeeds no later statement of the transaction waits (WAL: readers
  never block the writer; commit takes no further lock). Inside the process one asyncio lock
  serialises transactions on the shared connection. The connection never checkpoints the WAL on
  the loop thread: a worker thread does, every CHECKPOINT_EVERY commits.
- PostgreSQL: one asyncpg pool (DB_POOL_SIZE connections). asyncpg prepares each statement once
  per connection; each money operation is one statement or one short transaction.

Statements are SQLAlchemy Core compiled for the dialect (storage/sql.py) or, for the money
writers (storage/money_*.py), SQL written for the dialect. Transactions are short and never held
across an LLM call. Errors are the store errors of domain/ports.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy import literal, select
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql.dml import Insert, Update
from sqlalchemy.sql.expression import ClauseElement

from service.domain.ports import ConstraintViolation, StorageUnavailable
from service.storage.sql import (
    POSTGRES,
    SQLITE,
    Compiled,
    Prepared,
    Result,
    Row,
    compile_for,
    prepared,
)

T = TypeVar("T")
log = logging.getLogger(__name__)

Statement = ClauseElement | Prepared
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None

# Seconds a transaction may wait for another process's write lock, or for this process's own.
LOCK_WAIT_S = 10.0
# After this many commits (~1000 WAL pages, SQLite's default wal_autocheckpoint) a worker thread
# checkpoints the WAL on a connection of its own.
CHECKPOINT_EVERY = 200
# deadlock_detected, serialization_failure: PostgreSQL rolled back, a retry succeeds.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
# A connection the server dropped (class 08, connection exception; the backend terminated by an
# administrator, a crash or a shutdown: 57P01-57P03), whatever asyncpg class reports it: a new
# connection may succeed, so it is unavailable (503), not an internal error.
_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_lost_connection(sqlstate: str | None) -> bool:
    return sqlstate is not None and (sqlstate.startswith("08") or sqlstate in _LOST_SQLSTATES)


_SELECT_1 = prepared(select(literal(1)))


class Connection(Protocol):
    """An open transaction (or, from `Database.read()`, a read-only session)."""

    # The driver's own connection (sqlite3.Connection, asyncpg.Connection), for the money
    # writers that run SQL written for the dialect inside a repository's transaction.
    raw: Any

    async def execute(self, statement: Statement, params: Params = None) -> Result: ...

    async def stream(self, statement: Statement) -> AsyncIterator[Row]: ...


def _compiled(statement: Statement, dialect: Dialect, params: Params) -> Compiled:
    first = params[0] if isinstance(params, Sequence) and params else params
    base = statement.statement if isinstance(statement, Prepared) else statement
    keys = (
        tuple(sorted(first))
        if isinstance(first, Mapping) and isinstance(base, Insert | Update)
        else None
    )
    if isinstance(statement, Prepared):
        return statement.compiled(dialect, keys)
    return compile_for(statement, dialect, keys)


class Database:
    """The database of DATABASE_URL. `Database.open(url)` picks the implementation."""

    dialect: Dialect
    is_sqlite: bool

    def __init__(self) -> None:
        # Bumped after every committed change of teams' keys, statuses or model groups, so that
        # in-process caches of those (storage/teams.py) never serve an older value.
        self.config_version = 0
        # Told the seconds of each unit of work (a transaction, a read session, a money writer's
        # statement): the metrics' db_statement, set by server.py.
        self.on_work: Callable[[float], None] | None = None

    def _timed(self, started: float) -> None:
        on_work = self.on_work
        if on_work is not None:
            on_work(time.perf_counter() - started)

    @staticmethod
    def open(url: str, *, pool_size: int = 10) -> Database:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            return SqliteDatabase(parsed.database or ":memory:")
        if backend == "postgresql":
            dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
            return PostgresDatabase(dsn, pool_size)
        raise ValueError(f"unsupported DATABASE_URL backend {backend!r} (sqlite or postgresql)")

    def config_changed(self) -> None:
        self.config_version += 1

    def tx(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """One write transaction."""
        raise NotImplementedError

    def read(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """A session for reads only."""
        raise NotImplementedError

    def snapshot(self) -> contextlib.AbstractAsyncContextManager[Connection]:
        """Reads that all see one consistent state of the database (the auditor's)."""
        return self.read()

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(_SELECT_1)

    async def dispose(self) -> None:
        raise NotImplementedError


# SQLite --------------------------------------------------------------------------------------


def configure_sqlite(conn: sqlite3.Connection) -> None:
    """WAL, synchronous=NORMAL, foreign keys; statements never wait for a lock (busy_timeout 0)
    and the connection never checkpoints by itself (see the module docstring)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=0")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA wal_autocheckpoint=0")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _sqlite_error(exc: sqlite3.Error) -> Exception:
    if isinstance(exc, sqlite3.IntegrityError):
        return ConstraintViolation(str(exc))
    return StorageUnavailable("Database unavailable, retry later")


class _SqliteSlot:
    """One sqlite3 connection and the lock that gives it to one session at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.raw: sqlite3.Connection | None = None
        self.lock = asyncio.Lock()

    def connection(self) -> sqlite3.Connection:
        raw = self.raw
        if raw is None:
            try:
                raw = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False, uri=True
                )
                configure_sqlite(raw)
            except sqlite3.Error as exc:
                raise _sqlite_error(exc) from exc
            self.raw = raw
        return raw

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[sqlite3.Connection]:
        try:
            async with asyncio.timeout(LOCK_WAIT_S):
                await self.lock.acquire()
        except TimeoutError as exc:
            raise StorageUnavailable("Database busy, retry later") from exc
        try:
            yield self.connection()
        finally:
            self.lock.release()

    async def close(self) -> None:
        async with self.lock:
            if self.raw is not None:
                self.raw.close()
                self.raw = None


class _SqliteConnection:
    __slots__ = ("raw",)

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    async def execute(self, statement: Statement, params: Params = None) -> Result:
        # Runs to its end without yielding to the loop: a transaction's statements never
        # interleave with another coroutine's.
        c = _compiled(statement, SQLITE, params)
        try:
            if isinstance(params, Sequence) and not isinstance(params, Mapping):
                self.raw.executemany(c.sql, [c.args(p) for p in params])
                return Result([])
            cursor = self.raw.execute(c.sql, c.args(params))
            return Result(c.rows(cursor.fetchall()) if c.row is not None else [])
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from exc

    async def stream(self, statement: Statement) -> AsyncIterator[Row]:
        return _iterate(await self.execute(statement))


async def _iterate(result: Result) -> AsyncIterator[Row]:
    for row in result:
        yield row


class SqliteDatabase(Database):
    dialect = SQLITE
    is_sqlite = True

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        if path != ":memory:" and not path.startswith("file:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Two connections, so that reads never wait behind a write that waits for another
        # process's lock. Each is used by one transaction (or read session) at a time.
        self._writer = _SqliteSlot(path)
        self._reader = _SqliteSlot(path)
        self._commits = 0
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointing: asyncio.Future[None] | None = None

    async def _begin(self, raw: sqlite3.Connection, sql: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_WAIT_S
        delay = 0.001
        while True:
            try:
                raw.execute(sql)
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or loop.time() >= deadline:
                    raise _sqlite_error(exc) from exc
            # Another process holds the write lock: wait without blocking the loop.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[Connection]:
        async with self._writer.locked() as raw:
            started = time.perf_counter()
            await self._begin(raw, "BEGIN IMMEDIATE")
            try:
                yield _SqliteConnection(raw)
            except BaseException:
                # SQLite may already have rolled back by itself after some errors.
                with contextlib.suppress(sqlite3.Error):
                    raw.execute("ROLLBACK")
                raise
            try:
                raw.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    raw.execute("ROLLBACK")
                raise _sqlite_error(exc) from exc
            self._timed(started)
        self.note_commit()

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        async with self._reader.locked() as raw:
            started = time.perf_counter()
            # A snapshot for the statements of the session (readers never wait in WAL mode).
            await self._begin(raw, "BEGIN")
            try:
                yield _SqliteConnection(raw)
            finally:
                with contextlib.suppress(sqlite3.Error):
                    raw.execute("COMMIT")
                self._timed(started)

    async def write(self, body: Callable[[sqlite3.Connection], tuple[T, bool]]) -> T:
        """A write transaction of the money writers (storage/money_sqlite.py), on the raw
        connection: body(conn) -> (result, commit); ROLLBACK when it says not to commit or
        raises."""
        async with self._writer.locked() as raw:
            started = time.perf_counter()
            await self._begin(raw, "BEGIN IMMEDIATE")
            try:
                result, commit = body(raw)
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    raw.execute("ROLLBACK")
                raise _sqlite_error(exc) from exc
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    raw.execute("ROLLBACK")
                raise
            try:
                raw.execute("COMMIT" if commit else "ROLLBACK")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    raw.execute("ROLLBACK")
                raise _sqlite_error(exc) from exc
            self._timed(started)
        if commit:
            self.note_commit()
        return result

    async def query(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Reads of the money writers on the raw connection (no transaction: one statement)."""
        async with self._reader.locked() as raw:
            started = time.perf_counter()
            try:
                return body(raw)
            except sqlite3.Error as exc:
                raise _sqlite_error(exc) from exc
            finally:
                self._timed(started)

    def note_commit(self) -> None:
        self._commits += 1
        if (
            self._commits >= CHECKPOINT_EVERY
            and self._checkpointing is None
            and self.path != ":memory:"
        ):
            self._commits = 0
            self._checkpointing = asyncio.ensure_future(self._checkpoint())

    async def _checkpoint(self) -> None:
        # Under the lock, so that no commit of this process lands during the checkpoint: then it
        # copies every frame, and the next commit starts the WAL over instead of growing it (a
        # checkpoint racing with steady commits never catches up).
        try:
            async with self._writer.locked():
                await asyncio.to_thread(self._checkpoint_now)
        except (StorageUnavailable, sqlite3.Error):
            log.warning("WAL checkpoint failed; retrying later", exc_info=True)
        finally:
            self._checkpointing = None

    def _checkpoint_now(self) -> None:
        conn = self._checkpointer
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=1000")
            self._checkpointer = conn
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def dispose(self) -> None:
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing
        await self._writer.close()
        await self._reader.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None


# PostgreSQL ----------------------------------------------------------------------------------


def _pg_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    import asyncpg

    unavailable = (
        asyncpg.PostgresConnectionError,
        asyncpg.CannotConnectNowError,
        asyncpg.InterfaceError,
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.AdminShutdownError,
        asyncpg.TooManyConnectionsError,
        # A statement sent on a connection whose backend was just terminated can find the
        # protocol mid-way through the server's goodbye ("cannot switch to state ...").
        asyncpg.InternalClientError,
        OSError,
        TimeoutError,
    )
    return unavailable, (asyncpg.IntegrityConstraintViolationError,)


async def _init_connection(conn: Any) -> None:
    """JSON columns as SQLAlchemy's asyncpg dialect sets them up: the bind side is text (the
    JSON type's bind processor serialises), the result side is decoded here."""

    def _json_decoder(value: bytes) -> Any:
        return orjson.loads(value)

    def _jsonb_encoder(value: str) -> bytes:
        return b"\x01" + value.encode()

    def _jsonb_decoder(value: bytes) -> Any:
        return orjson.loads(value[1:])

    await conn.set_type_codec(
        "json", encoder=str.encode, decoder=_json_decoder, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "jsonb",
        encoder=_jsonb_encoder,
        decoder=_jsonb_decoder,
        schema="pg_catalog",
        format="binary",
    )


async def _no_reset(_conn: Any) -> None:
    """Our statements leave no session state behind: skip asyncpg's reset round trip."""


class _PostgresConnection:
    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    async def execute(self, statement: Statement, params: Params = None) -> Result:
        c = _compiled(statement, POSTGRES, params)
        if isinstance(params, Sequence) and not isinstance(params, Mapping):
            await self.raw.executemany(c.sql, [c.args(p) for p in params])
            return Result([])
        if c.row is None:
            await self.raw.execute(c.sql, *c.args(params))
            return Result([])
        return Result(c.rows(await self.raw.fetch(c.sql, *c.args(params))))

    async def stream(self, statement: Statement) -> AsyncIterator[Row]:
        return _iterate(await self.execute(statement))


class PostgresDatabase(Database):
    dialect = POSTGRES
    is_sqlite = False

    def __init__(self, dsn: str, pool_size: int) -> None:
        super().__init__()
        self._dsn = dsn
        self._max_size = max(2, pool_size)
        self._pool: Any = None
        self._creating = asyncio.Lock()
        self._unavailable, self._integrity = _pg_errors()

    async def _get_pool(self) -> Any:
        pool = self._pool
        if pool is None:
            async with self._creating:
                if self._pool is None:
                    import asyncpg

                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=self._max_size,
                        init=_init_connection,
                        reset=_no_reset,
                        server_settings={"application_name": "saas-llm-gateway"},
                    )
                pool = self._pool
        return pool

    def _translate(self, exc: BaseException) -> BaseException | None:
        if isinstance(exc, self._integrity):
            return ConstraintViolation(str(exc))
        if isinstance(exc, self._unavailable) or is_lost_connection(getattr(exc, "sqlstate", None)):
            return StorageUnavailable("Database unavailable, retry later")
        if getattr(exc, "sqlstate", None) in _RETRYABLE_SQLSTATES:
            return StorageUnavailable("Database conflict, retry later")
        return None

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A pooled raw asyncpg connection (the money writers' statements)."""
        try:
            pool = await self._get_pool()
            raw = await pool.acquire()
        except Exception as exc:
            # Whatever stops a connection from being made (the server down, the database not
            # accepting connections, a failover in progress): the client may retry later.
            unavailable = StorageUnavailable("Database unavailable, retry later")
            raise (self._translate(exc) or unavailable) from exc
        started = time.perf_counter()
        try:
            yield raw
        except Exception as exc:
            translated = self._translate(exc)
            if translated is None:
                raise
            raise translated from exc
        finally:
            self._timed(started)
            await pool.release(raw)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A raw asyncpg connection inside a transaction."""
        async with self.connection() as raw, raw.transaction():
            yield raw

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[Connection]:
        async with self.transaction() as raw:
            yield _PostgresConnection(raw)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        async with self.connection() as raw:
            yield _PostgresConnection(raw)

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        async with (
            self.connection() as raw,
            raw.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield _PostgresConnection(raw)

    async def dispose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
