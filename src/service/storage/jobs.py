"""Jobs and their LLM calls. Every state change of a job and the ledger row
it causes are written in one transaction; the job's status guards (WHERE
status IN open) make concurrent completes and the sweeper race-free."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, case, func, select, update
from sqlalchemy.exc import IntegrityError

from service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    job_not_found,
)
from service.domain.models import CallRecord, Job, JobRef
from service.domain.validation import OPEN_STATUSES
from service.storage import ledger
from service.storage.db import Database
from service.storage.rows import (
    as_utc,
    call_of,
    call_of_mapping,
    new_id,
    opt_utc,
    reserve_reason,
    settle_reason,
    utcnow,
)
from service.storage.schema import jobs, llm_calls, teams


@dataclass(frozen=True, slots=True)
class NewCall:
    """A finished (or abandoned) LLM call to record."""

    job_id: str
    team_id: str
    model_group: str
    model: str
    purpose: str
    status: str
    streamed: bool
    prompt_tokens: int
    completion_tokens: int
    usage_estimated: bool
    cost_usd: float | None
    latency_ms: int
    ttft_ms: int | None
    error: str | None
    attempts: list[dict[str, Any]]


# The statements of every job's create, complete and read, built once (see ledger.py: building
# one costs more CPU than running it). `p_*` are WHERE parameters; SET values are passed by
# column name at execution, so each gets its column's type.
_JOB = jobs.c.job_id == bindparam("p_job_id")
_INSERT_JOB = jobs.insert()
_CLAIM_JOB = (
    update(jobs)
    .where(_JOB, jobs.c.status.in_(OPEN_STATUSES))
    .returning(jobs.c.team_id, jobs.c.job_type)
)
_FAILED_CALLS = (
    select(func.count())
    .select_from(llm_calls)
    .where(llm_calls.c.job_id == bindparam("p_job_id"), llm_calls.c.status == "failed")
)
_SETTLE_JOB = update(jobs).where(_JOB)
_SELECT_JOB = select(jobs).where(_JOB)
_SELECT_BY_REQUEST = select(jobs).where(
    jobs.c.team_id == bindparam("p_team_id"), jobs.c.request_id == bindparam("p_request_id")
)
_TEAM_REMAINING = select(
    teams.c.credits_allocated - teams.c.credits_used - teams.c.credits_reserved
).where(teams.c.team_id == bindparam("p_team_id"))
# Open jobs are found through ix_jobs_status_updated_at; teams are few.
_OPEN_TOTALS = select(
    select(func.count())
    .select_from(jobs)
    .where(jobs.c.status.in_(OPEN_STATUSES))
    .scalar_subquery(),
    select(func.coalesce(func.sum(teams.c.credits_reserved), 0)).scalar_subquery(),
)
_SELECT_CALLS = (
    select(llm_calls).where(llm_calls.c.job_id == bindparam("p_job_id")).order_by(llm_calls.c.id)
)


def _job(row: Any, calls: list[CallRecord] | None = None) -> Job:
    return _job_of(row._mapping, calls)


def _job_of(m: Mapping[str, Any], calls: list[CallRecord] | None = None) -> Job:
    """A jobs row as a mapping (SQLAlchemy's row._mapping, a dict of an asyncpg record, with
    its JSON columns decoded)."""
    return Job(
        job_id=m["job_id"],
        team_id=m["team_id"],
        user_id=m["user_id"],
        job_type=m["job_type"],
        status=m["status"],
        metadata=m["metadata"] or {},
        result_metadata=m["result_metadata"],
        error_message=m["error_message"],
        credit_applied=bool(m["credit_applied"]),
        credits_remaining_after=m["credits_remaining_after"],
        created_at=as_utc(m["created_at"]),
        updated_at=as_utc(m["updated_at"]),
        completed_at=opt_utc(m["completed_at"]),
        calls=calls or [],
        replay_response=m["replay_response"],
    )


async def _load(conn: Any, job_id: str, *, with_calls: bool) -> Job | None:
    key = {"p_job_id": job_id}
    row = (await conn.execute(_SELECT_JOB, key)).first()
    if row is None:
        return None
    calls: list[CallRecord] = []
    if with_calls:
        calls = [call_of(r) for r in (await conn.execute(_SELECT_CALLS, key)).all()]
    return _job(row, calls)


class JobRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self,
        *,
        team_id: str,
        user_id: str,
        job_type: str,
        metadata: dict[str, Any],
        request_id: str | None,
        request_hash: str | None,
    ) -> tuple[Job, bool]:
        """Create a job holding 1 reserved credit. Returns (job, replayed)."""
        if request_id:
            existing = await self._by_request(team_id, request_id, request_hash)
            if existing is not None:
                return existing, True
        now = utcnow()
        job_id = new_id()
        values = {
            "job_id": job_id,
            "team_id": team_id,
            "user_id": user_id,
            "job_type": job_type,
            "status": "pending",
            "metadata": metadata,
            "result_metadata": None,
            "error_message": None,
            "credit_applied": False,
            "credits_remaining_after": None,
            "request_id": request_id,
            "request_hash": request_hash,
            "created_at": now,
            "updated_at": now,
            "completed_at": None,
        }
        # PostgreSQL: the happy path in one statement on the raw driver (fastpath.py); anything
        # else (no team, suspended, no credits, request_id taken) wrote nothing and goes on below.
        if self.db.fast is not None and await self.db.fast.create_job(
            values, reserve_reason(job_type), new_id()
        ):
            return _job_from_values(values), False
        try:
            async with self.db.tx() as conn:
                # Reserve first: it reports a missing team or missing credits.
                # A duplicate request_id then fails the insert and the whole
                # transaction, reservation included, rolls back.
                await ledger.reserve(conn, team_id, job_id, job_type)
                await conn.execute(_INSERT_JOB, values)
        except (IntegrityError, FailedPrecondition):
            # A concurrent retry with the same request_id won the race: its insert made ours
            # fail, or its reservation took the last credit. Either way, answer its job.
            if request_id:
                existing = await self._by_request(team_id, request_id, request_hash)
                if existing is not None:
                    return existing, True
            raise
        return _job_from_values(values), False

    async def _by_request(
        self, team_id: str, request_id: str, request_hash: str | None
    ) -> Job | None:
        async with self.db.tx() as conn:
            row = (
                await conn.execute(
                    _SELECT_BY_REQUEST, {"p_team_id": team_id, "p_request_id": request_id}
                )
            ).first()
        if row is None:
            return None
        if row._mapping["request_hash"] != request_hash:
            raise AlreadyExists(
                f"request_id '{request_id}' was already used with a different body",
                reason="IDEMPOTENCY_KEY_REUSED",
            )
        return _job(row)

    async def get(self, job_id: str, *, with_calls: bool = True) -> Job | None:
        async with self.db.tx() as conn:
            return await _load(conn, job_id, with_calls=with_calls)

    async def call_target(self, job_id: str) -> JobRef | None:
        """What an LLM call needs to know about its job (owner, status): one primary-key read,
        on the raw driver when the database allows it (fastpath.py)."""
        if self.db.fast is not None:
            state = await self.db.fast.job_state(job_id)
        else:
            async with self.db.tx() as conn:
                row = (
                    await conn.execute(
                        select(jobs.c.team_id, jobs.c.status).where(jobs.c.job_id == job_id)
                    )
                ).first()
            state = None if row is None else (row[0], row[1])
        return None if state is None else JobRef(job_id=job_id, team_id=state[0], status=state[1])

    async def record_call(self, call: NewCall) -> CallRecord:
        """Store a call and move the job from pending to in_progress."""
        now = utcnow()
        call_id = new_id()
        values = {
            "call_id": call_id,
            "job_id": call.job_id,
            "team_id": call.team_id,
            "model_group": call.model_group,
            "model": call.model,
            "purpose": call.purpose,
            "status": call.status,
            "streamed": call.streamed,
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": call.completion_tokens,
            "usage_estimated": call.usage_estimated,
            "cost_usd": call.cost_usd,
            "latency_ms": call.latency_ms,
            "ttft_ms": call.ttft_ms,
            "error": call.error,
            "attempts": call.attempts,
            "created_at": now,
        }
        if self.db.fast is not None:
            # The same two statements in one transaction, on the raw driver (fastpath.py).
            await self.db.fast.record_call(values)
        else:
            async with self.db.tx() as conn:
                await conn.execute(llm_calls.insert().values(**values))
                is_open = jobs.c.status.in_(OPEN_STATUSES)
                await conn.execute(
                    update(jobs)
                    .where(jobs.c.job_id == call.job_id)
                    .values(
                        total_tokens=jobs.c.total_tokens
                        + call.prompt_tokens
                        + call.completion_tokens,
                        total_cost_usd=jobs.c.total_cost_usd + (call.cost_usd or 0.0),
                        updated_at=case((is_open, now), else_=jobs.c.updated_at),
                        status=case((is_open, "in_progress"), else_=jobs.c.status),
                    )
                )
        return CallRecord(
            call_id=call_id,
            job_id=call.job_id,
            model_group=call.model_group,
            model=call.model,
            purpose=call.purpose,
            status=call.status,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            cost_usd=call.cost_usd,
            latency_ms=call.latency_ms,
            error=call.error,
            created_at=now,
        )

    async def complete(
        self,
        job_id: str,
        status: str,
        result_metadata: dict[str, Any],
        error_message: str | None,
        replay_response: dict[str, Any] | None = None,
    ) -> tuple[Job, bool]:
        """End an open job and settle its credit: a deduction when `status` is
        completed and no call failed, else a release. A repeat with the same
        status returns the stored job (replayed=True) and moves no credit."""
        now = utcnow()
        if self.db.fast is not None:
            # PostgreSQL: claim, settle and read back on the raw driver (fastpath.py); a job that
            # was not open wrote nothing and goes on below (replay or error).
            done = await self.db.fast.complete_job(
                {
                    "job_id": job_id,
                    "status": status,
                    "now": now,
                    "result_metadata": result_metadata,
                    "error_message": error_message,
                    "replay_response": replay_response,
                },
                new_id(),
            )
            if done is not None:
                row, calls = done
                return _job_of(row, [call_of_mapping(c) for c in calls]), False
        key = {"p_job_id": job_id}
        async with self.db.tx() as conn:
            claimed = (
                await conn.execute(
                    _CLAIM_JOB,
                    {
                        **key,
                        "status": status,
                        "completed_at": now,
                        "updated_at": now,
                        "result_metadata": result_metadata,
                        "error_message": error_message,
                        "replay_response": replay_response,
                    },
                )
            ).first()
            if claimed is not None:
                team_id, job_type = claimed[0], claimed[1]
                failed_calls = (await conn.execute(_FAILED_CALLS, key)).scalar_one()
                charge = status == "completed" and failed_calls == 0
                credits = await ledger.settle(
                    conn,
                    team_id,
                    job_id,
                    kind="deduction" if charge else "release",
                    reason=settle_reason(job_type, status, charged=charge),
                )
                await conn.execute(
                    _SETTLE_JOB,
                    {**key, "credit_applied": charge, "credits_remaining_after": credits.remaining},
                )
            # The answer is read in the same transaction: one commit per complete.
            job = await _load(conn, job_id, with_calls=True)
        if job is None:
            raise job_not_found(job_id)
        if claimed is not None:
            return job, False
        if job.status == status:
            return job, True
        raise FailedPrecondition(
            f"Job '{job_id}' is already {job.status}",
            reason="JOB_ALREADY_COMPLETED" if job.status != "expired" else "JOB_NOT_OPEN",
        )

    async def update_metadata(self, job_id: str, patch: dict[str, Any], max_bytes: int) -> Job:
        """Merge `patch` into an open job's metadata (None values delete keys).
        The row is locked (FOR UPDATE on PostgreSQL, BEGIN IMMEDIATE on
        SQLite) so that concurrent patches do not lose each other's keys."""
        async with self.db.tx() as conn:
            row = (
                await conn.execute(
                    select(jobs.c.status, jobs.c.metadata)
                    .where(jobs.c.job_id == job_id)
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise job_not_found(job_id)
            if row[0] not in OPEN_STATUSES:
                raise FailedPrecondition(
                    f"Job '{job_id}' is {row[0]}; its metadata can no longer change",
                    reason="JOB_NOT_OPEN",
                )
            merged = dict(row[1] or {})
            for k, v in patch.items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
            if len(orjson.dumps(merged)) > max_bytes:
                raise InvalidArgument(f"metadata would exceed {max_bytes} bytes", field="metadata")
            await conn.execute(
                update(jobs)
                .where(jobs.c.job_id == job_id)
                .values(metadata=merged, updated_at=utcnow())
            )
        job = await self.get(job_id)
        assert job is not None
        return job

    async def expire_stale(self, cutoff: datetime, batch: int = 100) -> int:
        """Expire open jobs not touched since `cutoff` and release their
        credit (ledger type `expiry`). Each job in its own short transaction."""
        async with self.db.tx() as conn:
            ids = [
                r[0]
                for r in (
                    await conn.execute(
                        select(jobs.c.job_id)
                        .where(jobs.c.status.in_(OPEN_STATUSES), jobs.c.updated_at < cutoff)
                        .limit(batch)
                    )
                ).all()
            ]
        expired = 0
        for job_id in ids:
            now = utcnow()
            async with self.db.tx() as conn:
                row = (
                    await conn.execute(
                        update(jobs)
                        .where(
                            jobs.c.job_id == job_id,
                            jobs.c.status.in_(OPEN_STATUSES),
                            jobs.c.updated_at < cutoff,
                        )
                        .values(status="expired", completed_at=now, updated_at=now)
                        .returning(jobs.c.team_id, jobs.c.job_type)
                    )
                ).first()
                if row is None:
                    continue
                credits = await ledger.settle(
                    conn, row[0], job_id, kind="expiry", reason=f"Job {row[1]} expired"
                )
                await conn.execute(
                    update(jobs)
                    .where(jobs.c.job_id == job_id)
                    .values(credits_remaining_after=credits.remaining)
                )
                expired += 1
        return expired

    async def list_for_team(
        self, team_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[int, list[Job]]:
        cond = jobs.c.team_id == team_id
        if status:
            cond = and_(cond, jobs.c.status == status)
        async with self.db.tx() as conn:
            total = (
                await conn.execute(select(func.count()).select_from(jobs).where(cond))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(jobs)
                    .where(cond)
                    .order_by(jobs.c.created_at.desc(), jobs.c.job_id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            ids = [r._mapping["job_id"] for r in rows]
            by_job: dict[str, list[CallRecord]] = defaultdict(list)
            if ids:
                for r in (
                    await conn.execute(
                        select(llm_calls)
                        .where(llm_calls.c.job_id.in_(ids))
                        .order_by(llm_calls.c.id)
                    )
                ).all():
                    by_job[r._mapping["job_id"]].append(call_of(r))
        return int(total), [_job(r, by_job[r._mapping["job_id"]]) for r in rows]

    async def open_totals(self) -> tuple[int, int]:
        """(jobs open, credits reserved), all teams together, in one statement: the gauges the
        job sweeper refreshes (service/metrics.py)."""
        async with self.db.tx() as conn:
            row = (await conn.execute(_OPEN_TOTALS)).one()
        return int(row[0]), int(row[1])

    async def team_remaining(self, team_id: str) -> int | None:
        """The team's credits_remaining, or None when there is no such team."""
        async with self.db.tx() as conn:
            row = (await conn.execute(_TEAM_REMAINING, {"p_team_id": team_id})).first()
        return None if row is None else int(row[0])


def _job_from_values(values: dict[str, Any]) -> Job:
    return Job(
        job_id=values["job_id"],
        team_id=values["team_id"],
        user_id=values["user_id"],
        job_type=values["job_type"],
        status=values["status"],
        metadata=values["metadata"],
        result_metadata=None,
        error_message=None,
        credit_applied=False,
        credits_remaining_after=None,
        created_at=values["created_at"],
        updated_at=values["updated_at"],
        completed_at=None,
    )


__all__: Sequence[str] = ("JobRepository", "NewCall")
