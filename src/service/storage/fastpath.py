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

The happy path of creating and completing a job runs here too (`create_job`, `complete_job`):
2-3x less CPU than SQLAlchemy on SQLite, 3-5x on PostgreSQL (`python -m bench.job_ops`). They
write nothing when the happy path does not apply, and JobRepository then runs its SQLAlchemy
code, which raises or replays. tests/storage/test_job_ledger_paths.py requires both paths to
leave identical rows.

`create(url, ...)` returns None for URLs it cannot serve (in-memory SQLite, other
drivers); the repositories then use SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

import orjson
from sqlalchemy.engine import make_url

from service.domain.errors import Unavailable
from service.domain.validation import OPEN_STATUSES
from service.storage.rows import settle_reason

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


# SQLSTATEs of a connection the server dropped (class 08, connection exception; the backend
# terminated by an administrator, a crash or a shutdown): a new connection may succeed, so the
# request is answered UNAVAILABLE (503), not as an internal error.
_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_lost_connection(sqlstate: str | None) -> bool:
    return sqlstate is not None and (sqlstate.startswith("08") or sqlstate in _LOST_SQLSTATES)


class FastPath(Protocol):
    async def job_state(self, job_id: str) -> tuple[str, str] | None:
        """(team_id, status) of a job, or None."""
        ...

    async def record_call(self, values: dict[str, Any]) -> None:
        """Insert an llm_calls row (keys: _CALL_COLUMNS) and move its job from pending to
        in_progress, in one transaction."""
        ...

    async def create_job(self, values: dict[str, Any], reason: str, transaction_id: str) -> bool:
        """Insert a pending job (values: the jobs columns of JobRepository.create) and reserve
        its credit, atomically. False when nothing was written because the happy path does not
        apply (team missing, suspended or out of credits; request_id taken): the caller's
        SQLAlchemy path then runs and raises or replays."""
        ...

    async def complete_job(
        self, claim: dict[str, Any], transaction_id: str
    ) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]] | None:
        """Claim an open job (claim: job_id, status, now, result_metadata, error_message,
        replay_response), settle its credit and read it back with its calls, in one
        transaction. None when the job was not open (nothing was written): the caller's
        SQLAlchemy path answers a replay or the error."""
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
# its job still cost money; tokens saturate at the int32 maximum, jobs.MAX_JOB_TOKENS) and
# moves an open job to in_progress.
_SQLITE_TOUCH_JOB = (
    "UPDATE jobs SET total_tokens = min(total_tokens + ?, 2147483647), "
    "total_cost_usd = total_cost_usd + coalesce(?, 0), "
    "updated_at = CASE WHEN status IN ('pending', 'in_progress') THEN ? ELSE updated_at END, "
    "status = CASE WHEN status IN ('pending', 'in_progress') THEN 'in_progress' ELSE status END "
    "WHERE job_id = ?"
)


# Job create and complete (storage/ledger.py and JobRepository, in SQL, storing what SQLAlchemy
# stores: json.dumps text, JSON null as 'null', SQLAlchemy's timestamp text, booleans as 0/1).
_SQLITE_RESERVE = (
    "UPDATE teams SET credits_reserved = credits_reserved + 1, updated_at = ? "
    "WHERE team_id = ? AND credits_allocated - credits_used - credits_reserved >= 1 "
    "AND status = 'active' RETURNING credits_allocated - credits_used - credits_reserved"
)
_SQLITE_SETTLE = {
    True: "UPDATE teams SET credits_reserved = credits_reserved - 1, "
    "credits_used = credits_used + 1, updated_at = ? WHERE team_id = ? AND credits_reserved >= 1 "
    "RETURNING credits_allocated - credits_used - credits_reserved",
    False: "UPDATE teams SET credits_reserved = credits_reserved - 1, updated_at = ? "
    "WHERE team_id = ? AND credits_reserved >= 1 "
    "RETURNING credits_allocated - credits_used - credits_reserved",
}
_SQLITE_INSERT_ENTRY = (
    "INSERT INTO credit_transactions (transaction_id, team_id, transaction_type, credits_amount, "
    "balance_after, reason, job_id, metadata, request_id, request_hash, created_at) "
    "VALUES (?, ?, ?, 1, ?, ?, ?, '{}', NULL, NULL, ?)"
)
_SQLITE_INSERT_JOB = (
    "INSERT INTO jobs (job_id, team_id, user_id, job_type, status, metadata, result_metadata, "
    "error_message, credit_applied, credits_remaining_after, request_id, request_hash, "
    "created_at, updated_at, completed_at) "
    "VALUES (?, ?, ?, ?, 'pending', ?, 'null', NULL, 0, NULL, ?, ?, ?, ?, NULL)"
)
_SQLITE_CLAIM_JOB = (
    "UPDATE jobs SET status = ?, completed_at = ?, updated_at = ?, result_metadata = ?, "
    "error_message = ?, replay_response = ? "
    "WHERE job_id = ? AND status IN ('pending', 'in_progress') RETURNING team_id, job_type"
)
_SQLITE_FAILED_CALLS = "SELECT count(*) FROM llm_calls WHERE job_id = ? AND status = 'failed'"
_SQLITE_STAMP_JOB = (
    "UPDATE jobs SET credit_applied = ?, credits_remaining_after = ? WHERE job_id = ?"
)
_SQLITE_SELECT_JOB = "SELECT * FROM jobs WHERE job_id = ?"
_SQLITE_SELECT_CALLS = "SELECT * FROM llm_calls WHERE job_id = ? ORDER BY id"
_JOB_TIME_COLUMNS = ("created_at", "updated_at", "completed_at")


def _sqlite_rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _decode_json_columns(job: dict[str, Any]) -> dict[str, Any]:
    """A jobs row read on the raw driver, with its JSON columns decoded (SQLite stores text,
    asyncpg hands jsonb back as text): what SQLAlchemy's JSON type returns."""
    for column in ("metadata", "result_metadata", "replay_response"):
        if job[column] is not None:
            job[column] = orjson.loads(job[column])
    return job


def _sqlite_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


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

        def write(conn: sqlite3.Connection) -> tuple[None, bool]:
            conn.execute(_SQLITE_INSERT_CALL, params)
            conn.execute(_SQLITE_TOUCH_JOB, touch)
            return None, True

        await self._write(write)

    async def _write(self, body: Callable[[sqlite3.Connection], tuple[T, bool]]) -> T:
        """One write transaction under the process's write lock: BEGIN IMMEDIATE, then
        body(conn) -> (result, commit); COMMIT when it says so, else (or on any error) ROLLBACK.
        """

        def transaction(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result, commit = body(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT" if commit else "ROLLBACK")
            return result

        try:
            async with asyncio.timeout(LOCK_WAIT_S):
                await self._write_lock.acquire()
        except TimeoutError as exc:
            raise _unavailable(exc) from exc
        try:
            result = await self._run(transaction)
        finally:
            self._write_lock.release()
        self.note_commit()
        return result

    async def create_job(self, values: dict[str, Any], reason: str, transaction_id: str) -> bool:
        team_id, job_id = values["team_id"], values["job_id"]
        now = _sqlite_ts(values["created_at"])
        job = (
            job_id,
            team_id,
            values["user_id"],
            values["job_type"],
            json.dumps(values["metadata"]),
            values["request_id"],
            values["request_hash"],
            now,
            now,
        )

        def write(conn: sqlite3.Connection) -> tuple[bool, bool]:
            row = conn.execute(_SQLITE_RESERVE, (now, team_id)).fetchone()
            if row is None:
                return False, False
            entry = (transaction_id, team_id, "reservation", row[0], reason, job_id, now)
            conn.execute(_SQLITE_INSERT_ENTRY, entry)
            try:
                conn.execute(_SQLITE_INSERT_JOB, job)
            except sqlite3.IntegrityError:
                return False, False  # a request_id already used: the caller replays or refuses
            return True, True

        return await self._write(write)

    async def complete_job(
        self, claim: dict[str, Any], transaction_id: str
    ) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]] | None:
        job_id, status = claim["job_id"], claim["status"]
        now = _sqlite_ts(claim["now"])
        claim_args = (
            status,
            now,
            now,
            json.dumps(claim["result_metadata"]),
            claim["error_message"],
            json.dumps(claim["replay_response"]),
            job_id,
        )

        Read = tuple[dict[str, Any], list[dict[str, Any]]]

        def write(conn: sqlite3.Connection) -> tuple[Read | None, bool]:
            claimed = conn.execute(_SQLITE_CLAIM_JOB, claim_args).fetchone()
            if claimed is None:
                return None, False
            team_id, job_type = claimed
            failed = conn.execute(_SQLITE_FAILED_CALLS, (job_id,)).fetchone()[0]
            charge = status == "completed" and failed == 0
            settled = conn.execute(_SQLITE_SETTLE[charge], (now, team_id)).fetchone()
            if settled is None:
                # As in ledger.settle: unreachable while "reserved == open jobs" holds.
                raise RuntimeError(
                    f"ledger invariant broken: team {team_id} has no reservation to settle"
                )
            remaining = settled[0]
            kind = "deduction" if charge else "release"
            reason = settle_reason(job_type, status, charged=charge)
            entry = (transaction_id, team_id, kind, remaining, reason, job_id, now)
            conn.execute(_SQLITE_INSERT_ENTRY, entry)
            conn.execute(_SQLITE_STAMP_JOB, (int(charge), remaining, job_id))
            job = _sqlite_rows(conn.execute(_SQLITE_SELECT_JOB, (job_id,)))[0]
            calls = _sqlite_rows(conn.execute(_SQLITE_SELECT_CALLS, (job_id,)))
            return (job, calls), True

        done = await self._write(write)
        if done is None:
            return None
        job, calls = done
        for column in _JOB_TIME_COLUMNS:
            job[column] = _sqlite_time(job[column])
        for call in calls:
            call["created_at"] = _sqlite_time(call["created_at"])
        return _decode_json_columns(job), [*calls]

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
    "UPDATE jobs SET total_tokens = least(total_tokens::bigint + $9 + $10, 2147483647), "
    "total_cost_usd = total_cost_usd + coalesce($12, 0), "
    "updated_at = CASE WHEN status IN ('pending', 'in_progress') THEN $17 ELSE updated_at END, "
    "status = CASE WHEN status IN ('pending', 'in_progress') THEN 'in_progress' ELSE status END "
    "WHERE job_id = $2"
)


# A job and its credit reservation, one statement (storage/ledger.py `reserve` and
# JobRepository.create, in SQL). The team row's conditional UPDATE is the guard: when it matches
# nothing, neither insert runs and no row comes back. $8 = now.
_PG_CREATE_JOB = (
    "WITH team AS (UPDATE teams SET credits_reserved = credits_reserved + 1, updated_at = $8 "
    "WHERE team_id = $2 AND status = 'active' "
    "AND credits_allocated - credits_used - credits_reserved >= 1 "
    "RETURNING credits_allocated - credits_used - credits_reserved AS remaining), "
    "entry AS (INSERT INTO credit_transactions (transaction_id, team_id, transaction_type, "
    "credits_amount, balance_after, reason, job_id, metadata, created_at) "
    "SELECT $9::varchar, $2::varchar, 'reservation', 1, remaining, $10::varchar, $1::varchar, "
    "'{}'::jsonb, $8::timestamptz FROM team) "
    "INSERT INTO jobs (job_id, team_id, user_id, job_type, status, metadata, result_metadata, "
    "credit_applied, request_id, request_hash, created_at, updated_at) "
    "SELECT $1::varchar, $2::varchar, $3::varchar, $4::varchar, 'pending', $5::jsonb, "
    "'null'::jsonb, false, $6::varchar, $7::varchar, $8::timestamptz, $8::timestamptz FROM team "
    "RETURNING job_id"
)
# Complete, statement 1: claim the job while it is open (the row lock orders concurrent
# completes, the sweeper and suspensions; the loser matches nothing).
_PG_CLAIM_JOB = (
    "UPDATE jobs SET status = $2, completed_at = $3, updated_at = $3, "
    "result_metadata = $4::jsonb, error_message = $5, replay_response = $6::jsonb "
    "WHERE job_id = $1 AND status IN ('pending', 'in_progress') RETURNING team_id, job_type"
)
# Complete, statement 2 (a new snapshot, after the claim, so that it sees every call recorded
# before the claim took the row): charge when completed with no failed call, else release;
# the ledger row; the job's credit_applied and credits_remaining_after. $1 job, $2 status,
# $3 now, $4 transaction id, $5 team, $6 reason if charged, $7 reason if not.
_PG_SETTLE_JOB = (
    "WITH charge AS (SELECT $2::varchar = 'completed' AND NOT EXISTS "
    "(SELECT 1 FROM llm_calls WHERE job_id = $1 AND status = 'failed') AS charged), "
    "team AS (UPDATE teams SET credits_reserved = credits_reserved - 1, "
    "credits_used = credits_used + CASE WHEN charge.charged THEN 1 ELSE 0 END, updated_at = $3 "
    "FROM charge WHERE teams.team_id = $5 AND teams.credits_reserved >= 1 "
    "RETURNING teams.credits_allocated - teams.credits_used - teams.credits_reserved "
    "AS remaining, charge.charged), "
    "entry AS (INSERT INTO credit_transactions (transaction_id, team_id, transaction_type, "
    "credits_amount, balance_after, reason, job_id, metadata, created_at) "
    "SELECT $4::varchar, $5::varchar, CASE WHEN charged THEN 'deduction' ELSE 'release' END, 1, "
    "remaining, CASE WHEN charged THEN $6::varchar ELSE $7::varchar END, $1::varchar, "
    "'{}'::jsonb, $3::timestamptz FROM team), "
    "job AS (UPDATE jobs SET credit_applied = team.charged, "
    "credits_remaining_after = team.remaining FROM team WHERE jobs.job_id = $1) "
    "SELECT remaining, charged FROM team"
)
_PG_SELECT_JOB = "SELECT * FROM jobs WHERE job_id = $1"
_PG_SELECT_CALLS = "SELECT * FROM llm_calls WHERE job_id = $1 ORDER BY id"


def _json(value: Any) -> str:
    """A JSON column's value as SQLAlchemy's JSON type stores it (None is JSON null)."""
    return orjson.dumps(value).decode()


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
        async with self._connection() as conn:
            return await getattr(conn, method)(sql, *args)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; losing the database is Unavailable (a retryable 503)."""
        import asyncpg

        try:
            pool = await self._get_pool()
            async with pool.acquire() as conn:
                yield conn
        except (
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
            asyncpg.InterfaceError,
            OSError,
        ) as exc:
            raise _unavailable(exc) from exc
        except asyncpg.PostgresError as exc:
            if is_lost_connection(exc.sqlstate):
                raise _unavailable(exc) from exc
            raise

    async def create_job(self, values: dict[str, Any], reason: str, transaction_id: str) -> bool:
        import asyncpg

        args = (
            values["job_id"],
            values["team_id"],
            values["user_id"],
            values["job_type"],
            orjson.dumps(values["metadata"]).decode(),
            values["request_id"],
            values["request_hash"],
            values["created_at"],
            transaction_id,
            reason,
        )
        async with self._connection() as conn:
            try:
                return await conn.fetchval(_PG_CREATE_JOB, *args) is not None
            except asyncpg.UniqueViolationError:
                return False  # a request_id already used: the caller replays or refuses

    async def complete_job(
        self, claim: dict[str, Any], transaction_id: str
    ) -> tuple[Mapping[str, Any], list[Mapping[str, Any]]] | None:
        job_id, status, now = claim["job_id"], claim["status"], claim["now"]
        async with self._connection() as conn, conn.transaction():
            claimed = await conn.fetchrow(
                _PG_CLAIM_JOB,
                job_id,
                status,
                now,
                _json(claim["result_metadata"]),
                claim["error_message"],
                _json(claim["replay_response"]),
            )
            if claimed is None:
                return None
            team_id, job_type = claimed[0], claimed[1]
            settled = await conn.fetchrow(
                _PG_SETTLE_JOB,
                job_id,
                status,
                now,
                transaction_id,
                team_id,
                settle_reason(job_type, status, charged=True),
                settle_reason(job_type, status, charged=False),
            )
            if settled is None:
                # As in ledger.settle: unreachable while "reserved == open jobs" holds; the
                # transaction rolls back rather than corrupt the ledger.
                raise RuntimeError(
                    f"ledger invariant broken: team {team_id} has no reservation to settle"
                )
            job: dict[str, Any] = dict(await conn.fetchrow(_PG_SELECT_JOB, job_id))
            calls: list[Mapping[str, Any]] = [
                dict(r) for r in await conn.fetch(_PG_SELECT_CALLS, job_id)
            ]
        return _decode_json_columns(job), calls

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
