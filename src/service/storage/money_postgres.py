"""Every statement that moves credits or records a call, on PostgreSQL: the one writer of each
money operation for this dialect (storage/money_sqlite.py is the other).

Each operation is one statement (a data-modifying CTE: one round trip) or one short
transaction on a pooled asyncpg connection. A conditional UPDATE of the team row is the guard of
every credit movement: when it matches nothing, nothing else of the statement runs, no row comes
back, and the domain reads why. Row locks order concurrent writers: a job first, then its team
(complete, expiry and suspension alike), so that they never deadlock.
"""

from __future__ import annotations

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
from service.storage.database import Connection, PostgresDatabase
from service.storage.direct import expiry_settlement
from service.storage.rows import CALL_COLUMNS, new_id
from service.storage.sql import POSTGRES
from service.storage.statements import SELECT_CALLS, SELECT_JOB

assert OPEN_STATUSES == ("pending", "in_progress")

_REMAINING = "credits_allocated - credits_used - credits_reserved"
# The ledger row of a credit movement, selected from the team CTE of the statement it is part of
# (`{select}`: the values, whose balance_after is the CTE's `remaining`).
_ENTRY = (
    "INSERT INTO credit_transactions (transaction_id, team_id, transaction_type, "
    "credits_amount, balance_after, reason, job_id, metadata, request_id, request_hash, "
    "created_at) {select}"
)

# A job and its reservation, one statement. $8 = now.
_CREATE_JOB = (
    "WITH team AS (UPDATE teams SET credits_reserved = credits_reserved + 1, updated_at = $8 "
    f"WHERE team_id = $2 AND status = 'active' AND {_REMAINING} >= 1 "
    f"RETURNING {_REMAINING} AS remaining), "
    "entry AS ("
    + _ENTRY.format(
        select="SELECT $9::varchar, $2::varchar, 'reservation', 1, remaining, $10::varchar, "
        "$1::varchar, '{}'::jsonb, NULL, NULL, $8::timestamptz FROM team"
    )
    + ") "
    "INSERT INTO jobs (job_id, team_id, user_id, job_type, status, metadata, result_metadata, "
    "credit_applied, request_id, request_hash, created_at, updated_at) "
    "SELECT $1::varchar, $2::varchar, $3::varchar, $4::varchar, 'pending', $5::jsonb, "
    "'null'::jsonb, false, $6::varchar, $7::varchar, $8::timestamptz, $8::timestamptz FROM team "
    "RETURNING job_id"
)
# The call and its job's totals, one statement ($17 = created_at). The token total saturates at
# the int32 maximum (the column's and the contract's type; docs/decisions.md "Hardening (issue
# 21)"), summed as bigint so that the sum itself cannot overflow.
_RECORD_CALL = (
    f"WITH call AS (INSERT INTO llm_calls ({', '.join(CALL_COLUMNS)}) VALUES "
    f"({', '.join(f'${i + 1}' for i in range(len(CALL_COLUMNS)))})) "
    "UPDATE jobs SET total_tokens = least(total_tokens::bigint + $9 + $10, 2147483647), "
    "total_cost_usd = total_cost_usd + coalesce($12, 0), "
    "updated_at = CASE WHEN status IN ('pending', 'in_progress') THEN $17 ELSE updated_at END, "
    "status = CASE WHEN status IN ('pending', 'in_progress') THEN 'in_progress' ELSE status END "
    "WHERE job_id = $2"
)
# A call admitted (before its provider is contacted): the job's count, below the team's bound;
# the row lock orders concurrent admissions of one job, so that exactly max_calls pass.
_ADMIT_CALL = (
    "UPDATE jobs SET calls_admitted = calls_admitted + 1 "
    "WHERE job_id = $1 AND status IN ('pending', 'in_progress') AND calls_admitted < $2 "
    "RETURNING calls_admitted"
)
# Complete, statement 1: claim the job while it is open (its row lock orders concurrent
# completes, the sweeper and suspensions; the loser matches nothing).
_CLAIM_JOB = (
    "UPDATE jobs SET status = $2, completed_at = $3, updated_at = $3, "
    "result_metadata = $4::jsonb, error_message = $5, replay_response = $6::jsonb "
    "WHERE job_id = $1 AND status IN ('pending', 'in_progress') "
    "AND ($7::text IS NULL OR team_id = $7) RETURNING team_id, job_type"
)
# Expiry, statement 1: claim a stale open job.
_EXPIRE_JOB = (
    "UPDATE jobs SET status = 'expired', completed_at = $2, updated_at = $2 "
    "WHERE job_id = $1 AND status IN ('pending', 'in_progress') AND updated_at < $3 "
    "RETURNING team_id, job_type"
)
_STALE_JOBS = (
    "SELECT job_id FROM jobs WHERE status IN ('pending', 'in_progress') AND updated_at < $1 "
    "LIMIT $2"
)
# Statement 2 of complete, expiry and suspension, after the claim (a new snapshot, so that it
# sees every call recorded before the claim took the row): the job's reservation ends, charged
# when $2 is 'completed' and no call failed, else given back as $8 (release or expiry); the
# ledger row; the job's credit_applied and credits_remaining_after. $1 job, $3 now,
# $4 transaction id, $5 team, $6 reason if charged, $7 reason if not.
_SETTLE_JOB = (
    "WITH charge AS (SELECT $2::varchar = 'completed' AND NOT EXISTS "
    "(SELECT 1 FROM llm_calls WHERE job_id = $1 AND status = 'failed') AS charged), "
    "team AS (UPDATE teams SET credits_reserved = credits_reserved - 1, "
    "credits_used = credits_used + CASE WHEN charge.charged THEN 1 ELSE 0 END, updated_at = $3 "
    "FROM charge WHERE teams.team_id = $5 AND teams.credits_reserved >= 1 "
    "RETURNING teams.credits_allocated - teams.credits_used - teams.credits_reserved "
    "AS remaining, charge.charged), "
    "entry AS ("
    + _ENTRY.format(
        select="SELECT $4::varchar, $5::varchar, CASE WHEN charged THEN 'deduction' "
        "ELSE $8::varchar END, 1, remaining, CASE WHEN charged THEN $6::varchar "
        "ELSE $7::varchar END, $1::varchar, '{}'::jsonb, NULL, NULL, $3::timestamptz FROM team"
    )
    + "), "
    "job AS (UPDATE jobs SET credit_applied = team.charged, "
    "credits_remaining_after = team.remaining FROM team WHERE jobs.job_id = $1) "
    "SELECT remaining, charged FROM team"
)
# Suspension: the open jobs are locked before the team row (complete and the sweeper lock a job,
# then its team; the other order deadlocked), then the team's status, then each job ends.
_LOCK_OPEN_JOBS = (
    "SELECT job_id FROM jobs WHERE team_id = $1 AND status IN ('pending', 'in_progress') "
    "ORDER BY job_id FOR UPDATE"
)
_SET_TEAM_STATUS = "UPDATE teams SET status = $2, updated_at = $3 WHERE team_id = $1 RETURNING 1"
_FAIL_OPEN_JOBS = (
    "UPDATE jobs SET status = 'failed', completed_at = $2, updated_at = $2, error_message = $3 "
    "WHERE team_id = $1 AND status IN ('pending', 'in_progress') RETURNING job_id, job_type"
)
# An addition below the cap on the team's total ($4 = cap - amount), with its ledger row.
_ADD = (
    "WITH team AS (UPDATE teams SET credits_allocated = credits_allocated + $2, updated_at = $3 "
    "WHERE team_id = $1 AND credits_allocated <= $4 "
    f"RETURNING credits_allocated, credits_used, credits_reserved, {_REMAINING} AS remaining), "
    "entry AS ("
    + _ENTRY.format(
        select="SELECT $5::varchar, $1::varchar, 'addition', $2::integer, remaining, "
        "$6::varchar, NULL, $7::jsonb, $8::varchar, $9::varchar, $3::timestamptz FROM team"
    )
    + ") SELECT credits_allocated, credits_used, credits_reserved FROM team"
)
# The budget of the OpenAI-compatible API (credits_allocated x $0.10 in nano-USD): a direct call
# holds an upper bound of its cost and is recorded in flight, in one statement ($8 = the bound).
_RESERVE_BUDGET = (
    "WITH team AS (UPDATE teams SET budget_reserved_nanos = budget_reserved_nanos + $8 "
    "WHERE team_id = $2 AND status = 'active' AND credits_allocated::bigint * 100000000 "
    "- budget_spent_nanos - budget_reserved_nanos >= $8 RETURNING 1) "
    "INSERT INTO direct_calls (call_id, team_id, kind, requested_model, model_group, model, "
    "status, streamed, prompt_tokens, completion_tokens, usage_estimated, reserved_nanos, "
    "cost_nanos, latency_ms, ttft_ms, error, attempts, created_at, settled_at) "
    "SELECT $1::varchar, $2::varchar, $3::varchar, $4::varchar, $5::varchar, $6::varchar, "
    "'in_flight', $7::boolean, 0, 0, false, $8::bigint, 0, 0, NULL, NULL, '[]'::jsonb, "
    "$9::timestamptz, NULL FROM team RETURNING 1"
)
# Its end: the record, and the reservation replaced by the actual cost ($7), in one statement.
_SETTLE_DIRECT = (
    "WITH call AS (UPDATE direct_calls SET status = $2, model = $3, prompt_tokens = $4, "
    "completion_tokens = $5, usage_estimated = $6, cost_nanos = $7, latency_ms = $8, "
    "ttft_ms = $9, error = $10, attempts = $11::jsonb, settled_at = $12 "
    "WHERE call_id = $1 AND status = 'in_flight' RETURNING team_id, reserved_nanos) "
    "UPDATE teams SET budget_reserved_nanos = teams.budget_reserved_nanos - call.reserved_nanos, "
    "budget_spent_nanos = teams.budget_spent_nanos + $7 FROM call "
    "WHERE teams.team_id = call.team_id RETURNING 1"
)
_STALE_DIRECT = (
    "SELECT call_id, model FROM direct_calls WHERE status = 'in_flight' AND created_at < $1 "
    "LIMIT $2"
)
assert BUDGET_NANOS_PER_CREDIT == 100_000_000
_ALLOCATE = _ENTRY.format(
    select="VALUES ($1, $2, 'allocation', $3, $3, $4, NULL, '{}'::jsonb, NULL, NULL, $5)"
)


def _json(value: Any) -> str:
    """A JSON column's value as SQLAlchemy's JSON type stores it (None is JSON null)."""
    return orjson.dumps(value).decode()


async def _settle(
    conn: Any,
    job_id: str,
    team_id: str,
    *,
    status: str,
    reason_charged: str,
    reason_not: str,
    kind_not: str,
    now: datetime,
) -> None:
    settled = await conn.fetchrow(
        _SETTLE_JOB,
        job_id,
        status,
        now,
        new_id(),
        team_id,
        reason_charged,
        reason_not,
        kind_not,
    )
    if settled is None:
        # Unreachable while "reserved == open jobs" holds; the transaction rolls back rather
        # than corrupt the ledger.
        raise RuntimeError(f"ledger invariant broken: team {team_id} has no reservation to settle")


class PostgresMoney:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def create_job(self, job: NewJob) -> bool:
        import asyncpg

        args = (
            job.job_id,
            job.team_id,
            job.user_id,
            job.job_type,
            _json(job.metadata),
            job.request_id,
            job.request_hash,
            job.created_at,
            new_id(),
            ledger_text.reserve_reason(job.job_type),
        )
        async with self.db.connection() as conn:
            try:
                return await conn.fetchval(_CREATE_JOB, *args) is not None
            except asyncpg.UniqueViolationError:
                return False  # the request_id is taken: nothing was written

    async def admit_call(self, job_id: str, max_calls: int) -> bool:
        async with self.db.connection() as conn:
            return await conn.fetchrow(_ADMIT_CALL, job_id, max_calls) is not None

    async def record_call(self, values: Mapping[str, Any]) -> None:
        params = [values[c] for c in CALL_COLUMNS]
        params[CALL_COLUMNS.index("attempts")] = _json(values["attempts"])
        async with self.db.connection() as conn:
            await conn.execute(_RECORD_CALL, *params)

    async def complete_job(
        self, claim: JobClaim, now: datetime
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        read_job = SELECT_JOB.compiled(POSTGRES, None)
        read_calls = SELECT_CALLS.compiled(POSTGRES, None)
        key = {"p_job_id": claim.job_id}
        async with self.db.transaction() as conn:
            claimed = await conn.fetchrow(
                _CLAIM_JOB,
                claim.job_id,
                claim.status,
                now,
                _json(claim.result_metadata),
                claim.error_message,
                _json(claim.replay_response),
                claim.team_id,
            )
            if claimed is None:
                return None
            team_id, job_type = claimed[0], claimed[1]
            await _settle(
                conn,
                claim.job_id,
                team_id,
                status=claim.status,
                reason_charged=ledger_text.settle_reason(job_type, claim.status, charged=True),
                reason_not=ledger_text.settle_reason(job_type, claim.status, charged=False),
                kind_not="release",
                now=now,
            )
            job = read_job.rows(await conn.fetch(read_job.sql, *read_job.args(key)))[0]
            calls = read_calls.rows(await conn.fetch(read_calls.sql, *read_calls.args(key)))
        return job._mapping, [c._mapping for c in calls]

    async def expire_stale_jobs(self, cutoff: datetime, now: datetime, batch: int) -> int:
        async with self.db.connection() as conn:
            ids = [r[0] for r in await conn.fetch(_STALE_JOBS, cutoff, batch)]
        expired = 0
        for job_id in ids:
            async with self.db.transaction() as conn:
                row = await conn.fetchrow(_EXPIRE_JOB, job_id, now, cutoff)
                if row is None:
                    continue  # completed meanwhile
                reason = ledger_text.expiry_reason(row[1])
                await _settle(
                    conn,
                    job_id,
                    row[0],
                    status="expired",
                    reason_charged=reason,
                    reason_not=reason,
                    kind_not="expiry",
                    now=now,
                )
                expired += 1
        return expired

    async def set_team_status(
        self, team_id: str, status: str, error_message: str, now: datetime
    ) -> bool:
        async with self.db.transaction() as conn:
            if status == "suspended":
                await conn.fetch(_LOCK_OPEN_JOBS, team_id)
            if await conn.fetchval(_SET_TEAM_STATUS, team_id, status, now) is None:
                return False
            if status == "suspended":
                for job_id, job_type in await conn.fetch(
                    _FAIL_OPEN_JOBS, team_id, now, error_message
                ):
                    reason = ledger_text.suspension_reason(job_type)
                    await _settle(
                        conn,
                        job_id,
                        team_id,
                        status="failed",
                        reason_charged=reason,
                        reason_not=reason,
                        kind_not="release",
                        now=now,
                    )
        return True

    async def add_credits(
        self, addition: NewAddition, now: datetime
    ) -> tuple[LedgerEntry, Credits] | None:
        tid = new_id()
        reason = addition.reason or ledger_text.ADDITION
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                _ADD,
                addition.team_id,
                addition.amount,
                now,
                addition.max_total - addition.amount,
                tid,
                reason,
                _json(addition.metadata),
                addition.request_id,
                addition.request_hash,
            )
        if row is None:
            return None
        credits = Credits(allocated=row[0], used=row[1], reserved=row[2])
        entry = LedgerEntry(
            transaction_id=tid,
            team_id=addition.team_id,
            transaction_type="addition",
            credits_amount=addition.amount,
            balance_after=credits.remaining,
            reason=reason,
            job_id=None,
            created_at=now,
        )
        return entry, credits

    async def reserve_budget(self, call: NewDirectCall) -> bool:
        async with self.db.connection() as conn:
            held = await conn.fetchval(
                _RESERVE_BUDGET,
                call.call_id,
                call.team_id,
                call.kind,
                call.requested_model,
                call.model_group,
                call.model,
                call.streamed,
                call.reserved_nanos,
                call.created_at,
            )
        return held is not None

    async def settle_budget(self, s: DirectSettlement, now: datetime) -> bool:
        async with self.db.connection() as conn:
            done = await conn.fetchval(
                _SETTLE_DIRECT,
                s.call_id,
                s.status,
                s.model,
                s.prompt_tokens,
                s.completion_tokens,
                s.usage_estimated,
                s.cost_nanos,
                s.latency_ms,
                s.ttft_ms,
                s.error,
                _json(s.attempts),
                now,
            )
        return done is not None

    async def expire_direct_calls(self, cutoff: datetime, now: datetime, batch: int) -> int:
        async with self.db.connection() as conn:
            stale = [(r[0], r[1]) for r in await conn.fetch(_STALE_DIRECT, cutoff, batch)]
        expired = 0
        for call_id, model in stale:
            expired += await self.settle_budget(expiry_settlement(call_id, model), now)
        return expired

    async def allocate(self, conn: Connection, team_id: str, amount: int, now: datetime) -> None:
        """The allocation row of a team being created, inside the team's transaction."""
        raw: Any = conn.raw
        await raw.execute(_ALLOCATE, new_id(), team_id, amount, ledger_text.ALLOCATION, now)
