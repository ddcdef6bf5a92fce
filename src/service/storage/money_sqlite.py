"""Every statement that moves credits or records a call, on SQLite: the one writer of each money
operation for this dialect (storage/money_postgres.py is the other).

Each operation is one write transaction on the raw sqlite3 connection (SqliteDatabase.write),
whose statements run back to back on the event loop thread. When an operation does not apply
(no team, suspended, no credit, the job no longer open) it writes nothing and says so; the
domain then reads why. Values are stored as SQLAlchemy stores them (tests compare): JSON as
text, timestamps as SQLAlchemy's SQLite DATETIME text, booleans as 0/1.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from service.domain import ledger_text
from service.domain.models import OPEN_STATUSES, Credits, LedgerEntry
from service.domain.ports import (
    BUDGET_NANOS_PER_CREDIT,
    DirectSettlement,
    JobClaim,
    NewAddition,
    NewDirectCall,
    NewJob,
)
from service.storage.database import Connection, SqliteDatabase
from service.storage.direct import expiry_settlement
from service.storage.rows import CALL_COLUMNS, new_id
from service.storage.sql import SQLITE
from service.storage.statements import SELECT_CALLS, SELECT_JOB

# The SQL below spells these out.
assert OPEN_STATUSES == ("pending", "in_progress")

_TEAM_REMAINING = "credits_allocated - credits_used - credits_reserved"
_RESERVE = (
    "UPDATE teams SET credits_reserved = credits_reserved + 1, updated_at = ? "
    f"WHERE team_id = ? AND {_TEAM_REMAINING} >= 1 AND status = 'active' "
    f"RETURNING {_TEAM_REMAINING}"
)
# A job's reservation ends: charged (reserved -> used) or given back (release, expiry).
_SETTLE = {
    True: "UPDATE teams SET credits_reserved = credits_reserved - 1, "
    "credits_used = credits_used + 1, updated_at = ? WHERE team_id = ? AND credits_reserved >= 1 "
    f"RETURNING {_TEAM_REMAINING}",
    False: "UPDATE teams SET credits_reserved = credits_reserved - 1, updated_at = ? "
    f"WHERE team_id = ? AND credits_reserved >= 1 RETURNING {_TEAM_REMAINING}",
}
_ADD = (
    "UPDATE teams SET credits_allocated = credits_allocated + ?, updated_at = ? "
    "WHERE team_id = ? AND credits_allocated <= ? "
    "RETURNING credits_allocated, credits_used, credits_reserved"
)
_INSERT_ENTRY = (
    "INSERT INTO credit_transactions (transaction_id, team_id, transaction_type, credits_amount, "
    "balance_after, reason, job_id, metadata, request_id, request_hash, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_JOB = (
    "INSERT INTO jobs (job_id, team_id, user_id, job_type, status, metadata, result_metadata, "
    "error_message, credit_applied, credits_remaining_after, request_id, request_hash, "
    "created_at, updated_at, completed_at) "
    "VALUES (?, ?, ?, ?, 'pending', ?, 'null', NULL, 0, NULL, ?, ?, ?, ?, NULL)"
)
_INSERT_CALL = (
    f"INSERT INTO llm_calls ({', '.join(CALL_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in CALL_COLUMNS)})"
)
# Adds the call to the job's totals (whatever its status: a call that ends after its job still
# cost money; tokens saturate at the int32 maximum, as on PostgreSQL) and moves an open job to
# in_progress.
_TOUCH_JOB = (
    "UPDATE jobs SET total_tokens = min(total_tokens + ?, 2147483647), "
    "total_cost_usd = total_cost_usd + coalesce(?, 0), "
    "updated_at = CASE WHEN status IN ('pending', 'in_progress') THEN ? ELSE updated_at END, "
    "status = CASE WHEN status IN ('pending', 'in_progress') THEN 'in_progress' ELSE status END "
    "WHERE job_id = ?"
)
# A call admitted (before its provider is contacted): the job's count, below the team's bound.
_ADMIT_CALL = (
    "UPDATE jobs SET calls_admitted = calls_admitted + 1 "
    "WHERE job_id = ? AND status IN ('pending', 'in_progress') AND calls_admitted < ? "
    "RETURNING calls_admitted"
)
_CLAIM_JOB = (
    "UPDATE jobs SET status = ?, completed_at = ?, updated_at = ?, result_metadata = ?, "
    "error_message = ?, replay_response = ? "
    "WHERE job_id = ? AND status IN ('pending', 'in_progress') AND (? IS NULL OR team_id = ?) "
    "RETURNING team_id, job_type"
)
_EXPIRE_JOB = (
    "UPDATE jobs SET status = 'expired', completed_at = ?, updated_at = ? "
    "WHERE job_id = ? AND status IN ('pending', 'in_progress') AND updated_at < ? "
    "RETURNING team_id, job_type"
)
_STALE_JOBS = (
    "SELECT job_id FROM jobs WHERE status IN ('pending', 'in_progress') AND updated_at < ? LIMIT ?"
)
_FAILED_CALLS = "SELECT count(*) FROM llm_calls WHERE job_id = ? AND status = 'failed'"
_STAMP_JOB = "UPDATE jobs SET credit_applied = ?, credits_remaining_after = ? WHERE job_id = ?"
_SET_TEAM_STATUS = "UPDATE teams SET status = ?, updated_at = ? WHERE team_id = ? RETURNING 1"
_FAIL_OPEN_JOBS = (
    "UPDATE jobs SET status = 'failed', completed_at = ?, updated_at = ?, error_message = ? "
    "WHERE team_id = ? AND status IN ('pending', 'in_progress') RETURNING job_id, job_type"
)

assert _INSERT_CALL.count("?") == len(CALL_COLUMNS)

# The budget of the OpenAI-compatible API: a direct call holds an upper bound of its cost
# (credits_allocated x $0.10 in nano-USD is the budget), then spends its actual cost.
_RESERVE_BUDGET = (
    "UPDATE teams SET budget_reserved_nanos = budget_reserved_nanos + ? "
    "WHERE team_id = ? AND status = 'active' AND credits_allocated * 100000000 "
    "- budget_spent_nanos - budget_reserved_nanos >= ? RETURNING 1"
)
_INSERT_DIRECT = (
    "INSERT INTO direct_calls (call_id, team_id, kind, requested_model, model_group, model, "
    "status, streamed, prompt_tokens, completion_tokens, usage_estimated, reserved_nanos, "
    "cost_nanos, latency_ms, ttft_ms, error, attempts, created_at, settled_at) "
    "VALUES (?, ?, ?, ?, ?, ?, 'in_flight', ?, 0, 0, 0, ?, 0, 0, NULL, NULL, '[]', ?, NULL)"
)
_SETTLE_DIRECT = (
    "UPDATE direct_calls SET status = ?, model = ?, prompt_tokens = ?, completion_tokens = ?, "
    "usage_estimated = ?, cost_nanos = ?, latency_ms = ?, ttft_ms = ?, error = ?, attempts = ?, "
    "settled_at = ? WHERE call_id = ? AND status = 'in_flight' RETURNING team_id, reserved_nanos"
)
_SPEND_BUDGET = (
    "UPDATE teams SET budget_reserved_nanos = budget_reserved_nanos - ?, "
    "budget_spent_nanos = budget_spent_nanos + ? WHERE team_id = ?"
)
_STALE_DIRECT = (
    "SELECT call_id, model FROM direct_calls WHERE status = 'in_flight' AND created_at < ? LIMIT ?"
)
assert BUDGET_NANOS_PER_CREDIT == 100_000_000


def timestamp(value: datetime) -> str:
    """SQLAlchemy's SQLite DATETIME storage format (naive UTC text, always 6 fraction digits):
    "2026-11-25 10:41:08.000123"."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _json(value: Any) -> str:
    """A JSON column's value as SQLAlchemy's JSON type stores it (None is JSON null)."""
    return orjson.dumps(value).decode()


def _entry(
    conn: sqlite3.Connection,
    *,
    team_id: str,
    kind: str,
    amount: int,
    balance_after: int,
    reason: str,
    job_id: str | None,
    now: str,
    metadata: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    request_hash: str | None = None,
) -> str:
    tid = new_id()
    conn.execute(
        _INSERT_ENTRY,
        (
            tid,
            team_id,
            kind,
            amount,
            balance_after,
            reason,
            job_id,
            _json(metadata or {}),
            request_id,
            request_hash,
            now,
        ),
    )
    return tid


def _settle(
    conn: sqlite3.Connection,
    team_id: str,
    job_id: str,
    *,
    charge: bool,
    kind: str,
    reason: str,
    now: str,
) -> int:
    """End a claimed job's reservation: the team's totals, the ledger row and the job's
    credit_applied / credits_remaining_after. Returns the team's credits_remaining."""
    settled = conn.execute(_SETTLE[charge], (now, team_id)).fetchone()
    if settled is None:
        # Unreachable while "reserved == open jobs" holds; fail the transaction rather than
        # corrupt the ledger.
        raise RuntimeError(f"ledger invariant broken: team {team_id} has no reservation to settle")
    remaining: int = settled[0]
    _entry(
        conn,
        team_id=team_id,
        kind=kind,
        amount=1,
        balance_after=remaining,
        reason=reason,
        job_id=job_id,
        now=now,
    )
    conn.execute(_STAMP_JOB, (int(charge), remaining, job_id))
    return remaining


class SqliteMoney:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def create_job(self, job: NewJob) -> bool:
        now = timestamp(job.created_at)
        values = (
            job.job_id,
            job.team_id,
            job.user_id,
            job.job_type,
            _json(job.metadata),
            job.request_id,
            job.request_hash,
            now,
            now,
        )

        def write(conn: sqlite3.Connection) -> tuple[bool, bool]:
            row = conn.execute(_RESERVE, (now, job.team_id)).fetchone()
            if row is None:
                return False, False
            _entry(
                conn,
                team_id=job.team_id,
                kind="reservation",
                amount=1,
                balance_after=row[0],
                reason=ledger_text.reserve_reason(job.job_type),
                job_id=job.job_id,
                now=now,
            )
            try:
                conn.execute(_INSERT_JOB, values)
            except sqlite3.IntegrityError:
                return False, False  # the request_id is taken: the reservation rolls back
            return True, True

        return await self.db.write(write)

    async def admit_call(self, job_id: str, max_calls: int) -> bool:
        def write(conn: sqlite3.Connection) -> tuple[bool, bool]:
            row = conn.execute(_ADMIT_CALL, (job_id, max_calls)).fetchone()
            return row is not None, row is not None

        return await self.db.write(write)

    async def record_call(self, values: Mapping[str, Any]) -> None:
        created = timestamp(values["created_at"])
        params = [values[c] for c in CALL_COLUMNS]
        params[CALL_COLUMNS.index("attempts")] = _json(values["attempts"])
        params[CALL_COLUMNS.index("created_at")] = created
        tokens = values["prompt_tokens"] + values["completion_tokens"]
        touch = (tokens, values["cost_usd"], created, values["job_id"])

        def write(conn: sqlite3.Connection) -> tuple[None, bool]:
            conn.execute(_INSERT_CALL, params)
            conn.execute(_TOUCH_JOB, touch)
            return None, True

        await self.db.write(write)

    async def complete_job(
        self, claim: JobClaim, now: datetime
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        stamp = timestamp(now)
        claim_args = (
            claim.status,
            stamp,
            stamp,
            _json(claim.result_metadata),
            claim.error_message,
            _json(claim.replay_response),
            claim.job_id,
            claim.team_id,
            claim.team_id,
        )
        key = {"p_job_id": claim.job_id}
        read_job = SELECT_JOB.compiled(SQLITE, None)
        read_calls = SELECT_CALLS.compiled(SQLITE, None)
        Read = tuple[dict[str, Any], list[dict[str, Any]]]

        def write(conn: sqlite3.Connection) -> tuple[Read | None, bool]:
            claimed = conn.execute(_CLAIM_JOB, claim_args).fetchone()
            if claimed is None:
                return None, False
            team_id, job_type = claimed
            failed = conn.execute(_FAILED_CALLS, (claim.job_id,)).fetchone()[0]
            charge = claim.status == "completed" and failed == 0
            _settle(
                conn,
                team_id,
                claim.job_id,
                charge=charge,
                kind="deduction" if charge else "release",
                reason=ledger_text.settle_reason(job_type, claim.status, charged=charge),
                now=stamp,
            )
            job = read_job.rows(conn.execute(read_job.sql, read_job.args(key)).fetchall())[0]
            calls = read_calls.rows(conn.execute(read_calls.sql, read_calls.args(key)).fetchall())
            return (job._mapping, [c._mapping for c in calls]), True

        return await self.db.write(write)

    async def expire_stale_jobs(self, cutoff_dt: datetime, now_dt: datetime, batch: int) -> int:
        cutoff, now = timestamp(cutoff_dt), timestamp(now_dt)

        def stale(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute(_STALE_JOBS, (cutoff, batch)).fetchall()]

        expired = 0
        for job_id in await self.db.query(stale):

            def write(conn: sqlite3.Connection, job_id: str = job_id) -> tuple[bool, bool]:
                row = conn.execute(_EXPIRE_JOB, (now, now, job_id, cutoff)).fetchone()
                if row is None:
                    return False, False  # completed meanwhile
                team_id, job_type = row
                _settle(
                    conn,
                    team_id,
                    job_id,
                    charge=False,
                    kind="expiry",
                    reason=ledger_text.expiry_reason(job_type),
                    now=now,
                )
                return True, True

            expired += await self.db.write(write)
        return expired

    async def set_team_status(
        self, team_id: str, status: str, error_message: str, now_dt: datetime
    ) -> bool:
        now = timestamp(now_dt)

        def write(conn: sqlite3.Connection) -> tuple[bool, bool]:
            if conn.execute(_SET_TEAM_STATUS, (status, now, team_id)).fetchone() is None:
                return False, False
            if status == "suspended":
                ended = conn.execute(_FAIL_OPEN_JOBS, (now, now, error_message, team_id))
                for job_id, job_type in ended.fetchall():
                    _settle(
                        conn,
                        team_id,
                        job_id,
                        charge=False,
                        kind="release",
                        reason=ledger_text.suspension_reason(job_type),
                        now=now,
                    )
            return True, True

        return await self.db.write(write)

    async def add_credits(
        self, addition: NewAddition, now_dt: datetime
    ) -> tuple[LedgerEntry, Credits] | None:
        now = timestamp(now_dt)
        reason = addition.reason or ledger_text.ADDITION

        def write(conn: sqlite3.Connection) -> tuple[tuple[LedgerEntry, Credits] | None, bool]:
            row = conn.execute(
                _ADD,
                (addition.amount, now, addition.team_id, addition.max_total - addition.amount),
            ).fetchone()
            if row is None:
                return None, False
            credits = Credits(allocated=row[0], used=row[1], reserved=row[2])
            try:
                tid = _entry(
                    conn,
                    team_id=addition.team_id,
                    kind="addition",
                    amount=addition.amount,
                    balance_after=credits.remaining,
                    reason=reason,
                    job_id=None,
                    now=now,
                    metadata=addition.metadata,
                    request_id=addition.request_id,
                    request_hash=addition.request_hash,
                )
            except sqlite3.IntegrityError:
                raise  # the request_id is taken: ConstraintViolation, rolled back
            entry = LedgerEntry(
                transaction_id=tid,
                team_id=addition.team_id,
                transaction_type="addition",
                credits_amount=addition.amount,
                balance_after=credits.remaining,
                reason=reason,
                job_id=None,
                created_at=now_dt,
            )
            return (entry, credits), True

        return await self.db.write(write)

    async def reserve_budget(self, call: NewDirectCall) -> bool:
        values = (
            call.call_id,
            call.team_id,
            call.kind,
            call.requested_model,
            call.model_group,
            call.model,
            int(call.streamed),
            call.reserved_nanos,
            timestamp(call.created_at),
        )

        def write(conn: sqlite3.Connection) -> tuple[bool, bool]:
            held = conn.execute(
                _RESERVE_BUDGET, (call.reserved_nanos, call.team_id, call.reserved_nanos)
            ).fetchone()
            if held is None:
                return False, False
            conn.execute(_INSERT_DIRECT, values)
            return True, True

        return await self.db.write(write)

    async def settle_budget(self, s: DirectSettlement, now: datetime) -> bool:
        values = (
            s.status,
            s.model,
            s.prompt_tokens,
            s.completion_tokens,
            int(s.usage_estimated),
            s.cost_nanos,
            s.latency_ms,
            s.ttft_ms,
            s.error,
            _json(s.attempts),
            timestamp(now),
            s.call_id,
        )

        def write(conn: sqlite3.Connection) -> tuple[bool, bool]:
            row = conn.execute(_SETTLE_DIRECT, values).fetchone()
            if row is None:
                return False, False  # settled or expired already
            team_id, reserved = row
            conn.execute(_SPEND_BUDGET, (reserved, s.cost_nanos, team_id))
            return True, True

        return await self.db.write(write)

    async def expire_direct_calls(self, cutoff_dt: datetime, now: datetime, batch: int) -> int:
        cutoff = timestamp(cutoff_dt)

        def stale(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            return [(r[0], r[1]) for r in conn.execute(_STALE_DIRECT, (cutoff, batch)).fetchall()]

        expired = 0
        for call_id, model in await self.db.query(stale):
            expired += await self.settle_budget(expiry_settlement(call_id, model), now)
        return expired

    async def allocate(self, conn: Connection, team_id: str, amount: int, now_dt: datetime) -> None:
        """The allocation row of a team being created, inside the team's transaction."""
        raw: sqlite3.Connection = conn.raw
        _entry(
            raw,
            team_id=team_id,
            kind="allocation",
            amount=amount,
            balance_after=amount,
            reason=ledger_text.ALLOCATION,
            job_id=None,
            now=timestamp(now_dt),
        )
