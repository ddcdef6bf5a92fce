"""Small helpers shared by the repositories: ids, clocks, row conversion."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, select

from service.domain.models import CallRecord, Credits, Job, LedgerEntry, TeamLimits
from service.domain.ports import UnknownReference
from service.storage.database import Connection
from service.storage.sql import in_list

# The columns of an llm_calls row, in the order the money writers insert them.
CALL_COLUMNS = (
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


async def ids_by_name(
    conn: Connection,
    name_col: ColumnElement[str],
    id_col: ColumnElement[str],
    names: Sequence[str],
    kind: str,
) -> list[str]:
    """The ids of `names` (same order), or UnknownReference for the first unknown one."""
    if not names:
        return []
    query = select(name_col, id_col).where(in_list(name_col, "names"))
    rows = (await conn.execute(query, {"names": list(names)})).all()
    ids = {r[0]: r[1] for r in rows}
    for n in names:
        if n not in ids:
            raise UnknownReference(kind, n)
    return [ids[n] for n in names]


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def credits_of(m: Mapping[str, Any]) -> Credits:
    return Credits(
        allocated=m["credits_allocated"], used=m["credits_used"], reserved=m["credits_reserved"]
    )


def limits_of(m: Mapping[str, Any]) -> TeamLimits:
    """A team's limits from a row holding the teams columns of LIMIT_FIELDS."""
    return TeamLimits(
        rpm_limit=int(m["rpm_limit"]),
        tpm_limit=int(m["tpm_limit"]),
        max_calls_per_job=int(m["max_calls_per_job"]),
        max_tokens_per_job=int(m["max_tokens_per_job"]),
        max_job_cost_usd=float(m["max_job_cost_usd"]),
    )


def ledger_entry_of(m: Mapping[str, Any]) -> LedgerEntry:
    return LedgerEntry(
        transaction_id=m["transaction_id"],
        team_id=m["team_id"],
        transaction_type=m["transaction_type"],
        credits_amount=m["credits_amount"],
        balance_after=m["balance_after"],
        reason=m["reason"],
        job_id=m["job_id"],
        created_at=as_utc(m["created_at"]),
    )


def call_of(m: Mapping[str, Any]) -> CallRecord:
    """An llm_calls row."""
    return CallRecord(
        call_id=m["call_id"],
        job_id=m["job_id"],
        model_group=m["model_group"],
        model=m["model"],
        purpose=m["purpose"],
        status=m["status"],
        prompt_tokens=m["prompt_tokens"],
        completion_tokens=m["completion_tokens"],
        cost_usd=m["cost_usd"],
        latency_ms=m["latency_ms"],
        error=m["error"],
        created_at=as_utc(m["created_at"]),
    )


def job_of(m: Mapping[str, Any], calls: list[CallRecord] | None = None) -> Job:
    """A jobs row."""
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
