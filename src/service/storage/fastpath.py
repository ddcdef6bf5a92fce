"""The two statements of every LLM call, on the raw database driver.

Each call reads its job (is it open, whose is it) and then writes its record (the `llm_calls` row
and the job's move to `in_progress`, in one transaction). Through SQLAlchemy's asyncio layer even a
one-row transaction costs ~0.8 ms of CPU on aiosqlite (a thread hop for every cursor operation plus
the greenlet bridge), more than the rest of the call; `make bench` measures it. So these two go to
the driver directly, with the same SQL semantics; everything else stays on SQLAlchemy.

- SQLite: a second sqlite3 connection to the same file, used on the event loop thread (the
  primary key lookup takes ~7 µs, the write transaction ~70 µs; one aiosqlite thread hop alone
  costs ~40 µs). It never checkpoints the WAL itself: a worker thread does (CHECKPOINT_EVERY).
  Writes hold `Database.sqlite_lock`, which `Database.tx()` holds too, so that inside the process
  every write transaction is still serial, as with the single pooled connection before. The
  connection's busy_timeout is 0 on the loop thread: when another process holds the database lock
  (a second replica, `make audit`), the statement is run again in a worker thread that waits for
  the lock like SQLAlchemy's connection does (busy_timeout 10 s), so the event loop never blocks.
- PostgreSQL: an asyncpg pool of its own (DB_POOL_SIZE / 2 connections at most). asyncpg
  prepares each statement once per connection and reuses it; the call record is a single
  statement (a data-modifying CTE), so each of the two is one round trip.

`create(url, ...)` returns None for URLs it cannot serve (in-memory SQLite, other
drivers); the repositories then use SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy.engine import make_url

from service.domain.errors import Unavailable
from service.domain.validation import OPEN_STATUSES

T = TypeVar("T")

# Seconds a statement may wait for another process's lock (the SQLAlchemy connection's value).
SQLITE_BUSY_TIMEOUT_MS = 10_000
LOCK_WAIT_S = 60.0
# The hot path's connection never checkpoints the WAL itself (that would copy pages and fsync on
# the event loop thread): after this many commits (~1000 WAL pages, SQLite's default
# wal_autocheckpoint) a worker thread checkpoints on a connection of its own.
CHECKPOINT_EVERY = 200

log = logging.getLogger(__name__)

_CALL_COLUMNS = (
    "call_id",
    "job_id",
    "team_id",
    "model_group",
    "model",
    "purpose",
    "status",
    "streamed",
    "prompt_tokens",
    "completion_tokens",
    "usage_estimated",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "error",
    "attempts",
    "created_at",
)
_ATTEMPTS = _CALL_COLUMNS.index("attempts")
_CREATED_AT = _CALL_COLUMNS.index("created_at")


def _unavailable(exc: BaseException) -> Unavailable:
    err = Unavailable("Database unavailable, retry later")
    err.__cause__ = exc
    return err


class FastPath(Protocol):
    async def job_state(self, job_id: str) -> tuple[str, str] | None:
        """(team_id, status) of a job, or None."""
        ...

    async def record_call(self, values: dict[str, Any]) -> None:
        """Insert an llm_calls row (keys: _CALL_COLUMNS) and move its job from pending to
        in_progress, in one transaction."""
        ...

    async def close(self) -> None: ...


def create(url: str, *, sqlite_lock: asyncio.Lock, pool_size: int) -> FastPath | None:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database
        if parsed.get_driver_name() != "aiosqlite" or not database or database == ":memory:":
            return None
        if parsed.query or database.startswith("file:"):
            return None
        return SqliteFastPath(database, sqlite_lock)
    if backend == "postgresql" and parsed.get_driver_name() == "asyncpg":
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        # Each statement holds a connection for one round trip: half the main pool is plenty.
        return PostgresFastPath(dsn, max(2, pool_size // 2))
    return None


# SQLite ----------------------------------------------------------------------------------


def _sqlite_ts(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME storage format (naive UTC text, always 6 fraction digits):
    "2026-11-25 10:41:08.000123"."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def configure_sqlite(dbapi_conn: Any, *, busy_timeout_ms: int, checkpoints: bool) -> None:
    """The settings of every SQLite connection of the process (SQLAlchemy's, sqlite_sync's and
    this module's): WAL, synchronous=NORMAL, foreign keys, and how long a statement waits for
    another connection's lock. `checkpoints=False` for connections used on the event loop
    thread, which must never copy the WAL back themselves (see CHECKPOINT_EVERY)."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
    cur.execute("PRAGMA foreign_keys=ON")
    if not checkpoints:
        cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


_SQLITE_JOB = "SELECT team_id, status FROM jobs WHERE job_id = ?"
_SQLITE_INSERT_CALL = (
    "INSERT INTO llm_calls (call_id, job_id, team_id, model_group, model, purpose, status, "
    "streamed, prompt_tokens, completion_tokens, usage_estimated, cost_usd, latency_ms, ttft_ms, "
    "error, attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Adds the call to the job's totals (whatever its status: a call that ends after
# its job still cost money) and moves an open job to in_progress.
_SQLITE_TOUCH_JOB = (
    "UPDATE jobs SET total_tokens = total_tokens + ?, "
    "total_cost_usd = total_cost_usd + coalesce(?, 0), "
    "updated_at = CASE WHEN status IN ('pending', 'in_progress') THEN ? ELSE updated_at END, "
    "status = CASE WHEN status IN ('pending', 'in_progress') THEN 'in_progress' ELSE status END "
    "WHERE job_id = ?"
)


# The SQL above spells these out; keep them in step.
assert OPEN_STATUSES == ("pending", "in_progress")
assert _SQLITE_INSERT_CALL.count("?") == len(_CALL_COLUMNS)


class SqliteFastPath:
    def __init__(self, path: str, write_lock: asyncio.Lock) -> None:
        self.path = path
        self._write_lock = write_lock
        self._conn: sqlite3.Connection | None = None
        # Held while a worker thread uses the connection; the loop thread then waits for it.
        self._thread_lock = asyncio.Lock()
        self._commits = 0
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointing: asyncio.Future[None] | None = None

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            configure_sqlite(conn, busy_timeout_ms=0, checkpoints=False)
            self._conn = conn
        return conn

    async def _in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """fn(conn) in a worker thread that waits for other processes' locks."""

        def run(conn: sqlite3.Connection) -> T:
            conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            try:
                return fn(conn)
            finally:
                conn.execute("PRAGMA busy_timeout=0")

        async with self._thread_lock:
            try:
                return await asyncio.to_thread(run, self._connection())
            except sqlite3.OperationalError as exc:
                raise _unavailable(exc) from exc

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._thread_lock.locked():
            try:
                return fn(self._connection())
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise _unavailable(exc) from exc
        return await self._in_thread(fn)

    async def job_state(self, job_id: str) -> tuple[str, str] | None:
        def read(conn: sqlite3.Connection) -> tuple[str, str] | None:
            row = conn.execute(_SQLITE_JOB, (job_id,)).fetchone()
            return None if row is None else (row[0], row[1])

        return await self._run(read)

    async def record_call(self, values: dict[str, Any]) -> None:
        created = _sqlite_ts(values["created_at"])
        params = [values[c] for c in _CALL_COLUMNS]
        params[_ATTEMPTS] = orjson.dumps(values["attempts"]).decode()
        params[_CREATED_AT] = created
        tokens = values["prompt_tokens"] + values["completion_tokens"]
        touch = (tokens, values["cost_usd"], created, values["job_id"])

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_SQLITE_INSERT_CALL, params)
                conn.execute(_SQLITE_TOUCH_JOB, touch)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        try:
            async with asyncio.timeout(LOCK_WAIT_S):
                await self._write_lock.acquire()
        except TimeoutError as exc:
            raise _unavailable(exc) from exc
        try:
            await self._run(write)
        finally:
            self._write_lock.release()
        self.note_commit()

    def note_commit(self) -> None:
        """Count a commit of this process (this connection's or storage/sqlite_sync.py's, whose
        connections never checkpoint on the loop thread either) and start a checkpoint in a
        worker thread every CHECKPOINT_EVERY commits."""
        self._commits += 1
        if self._commits >= CHECKPOINT_EVERY and self._checkpointing is None:
            self._commits = 0
            self._checkpointing = asyncio.ensure_future(self._checkpoint())

    async def _checkpoint(self) -> None:
        # Under the write lock, so that no commit of this process lands during the checkpoint:
        # then it copies every frame, and the next commit starts the WAL over instead of
        # growing it (a checkpoint racing with steady commits never catches up).
        try:
            async with asyncio.timeout(LOCK_WAIT_S):
                await self._write_lock.acquire()
        except TimeoutError:
            self._checkpointing = None
            return
        try:
            await asyncio.to_thread(self._checkpoint_now)
        except sqlite3.Error:
            log.warning("WAL checkpoint failed; retrying later", exc_info=True)
        finally:
            self._write_lock.release()
            self._checkpointing = None

    def _checkpoint_now(self) -> None:
        conn = self._checkpointer
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=1000")
            self._checkpointer = conn
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def close(self) -> None:
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing
        async with self._thread_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None


# PostgreSQL ------------------------------------------------------------------------------

_PG_JOB = "SELECT team_id, status FROM jobs WHERE job_id = $1"
# One statement, one round trip: the insert runs as a CTE of the job update ($17 = created_at).
_PG_RECORD_CALL = (
    "WITH call AS (INSERT INTO llm_calls (call_id, job_id, team_id, model_group, model, purpose, "
    "status, streamed, prompt_tokens, completion_tokens, usage_estimated, cost_usd, latency_ms, "
    "ttft_ms, error, attempts, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
    "$12, $13, $14, $15, $16, $17)) "
    "UPDATE jobs SET total_tokens = total_tokens + $9 + $10, "
    "total_cost_usd = total_cost_usd + coalesce($12, 0), "
    "updated_at = CASE WHEN status IN ('pending', 'in_progress') THEN $17 ELSE updated_at END, "
    "status = CASE WHEN status IN ('pending', 'in_progress') THEN 'in_progress' ELSE status END "
    "WHERE job_id = $2"
)


async def _no_reset(_conn: Any) -> None:
    """Our statements leave no session state behind: skip asyncpg's reset round trip."""


class PostgresFastPath:
    def __init__(self, dsn: str, max_size: int) -> None:
        self._dsn = dsn
        self._max_size = max(1, max_size)
        self._pool: Any = None
        self._creating = asyncio.Lock()

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
                        reset=_no_reset,
                        server_settings={"application_name": "saas-llm-gateway"},
                    )
                pool = self._pool
        return pool

    async def _query(self, method: str, sql: str, args: Sequence[Any]) -> Any:
        import asyncpg

        try:
            pool = await self._get_pool()
            async with pool.acquire() as conn:
                return await getattr(conn, method)(sql, *args)
        except (
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
            asyncpg.InterfaceError,
            OSError,
        ) as exc:
            raise _unavailable(exc) from exc

    async def job_state(self, job_id: str) -> tuple[str, str] | None:
        row = await self._query("fetchrow", _PG_JOB, (job_id,))
        return None if row is None else (row[0], row[1])

    async def record_call(self, values: dict[str, Any]) -> None:
        params = [values[c] for c in _CALL_COLUMNS]
        params[_ATTEMPTS] = orjson.dumps(values["attempts"]).decode()
        await self._query("execute", _PG_RECORD_CALL, params)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
