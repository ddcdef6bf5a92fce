"""Small helpers shared by the repositories: ids, clocks, row conversion."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncConnection

from service.domain.models import CallRecord, Credits, LedgerEntry


async def ids_by_name(
    conn: AsyncConnection,
    name_col: ColumnElement[str],
    id_col: ColumnElement[str],
    names: Sequence[str],
    missing: Callable[[str], Exception],
) -> list[str]:
    """The ids of `names` (same order), or raise `missing(name)` for the first unknown one."""
    if not names:
        return []
    rows = (await conn.execute(select(name_col, id_col).where(name_col.in_(list(names))))).all()
    ids = {r[0]: r[1] for r in rows}
    for n in names:
        if n not in ids:
            raise missing(n)
    return [ids[n] for n in names]


def new_id() -> str:
    return str(uuid.uuid4())


def reserve_reason(job_type: str) -> str:
    """The ledger reason of a job's reservation (every path that creates a job writes this)."""
    return f"Job {job_type} created"


def settle_reason(job_type: str, status: str, *, charged: bool) -> str:
    """The ledger reason of a completed job's settlement: its charge, or its release."""
    if charged:
        return f"Job {job_type} completed successfully"
    return f"Job {job_type} " + ("failed" if status == "failed" else "had failed calls")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def credits_of(row: Any) -> Credits:
    m = row._mapping
    return Credits(
        allocated=m["credits_allocated"], used=m["credits_used"], reserved=m["credits_reserved"]
    )


def ledger_entry_of(row: Any) -> LedgerEntry:
    m = row._mapping
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


def call_of(row: Any) -> CallRecord:
    return call_of_mapping(row._mapping)


def call_of_mapping(m: Mapping[str, Any]) -> CallRecord:
    """An llm_calls row as a mapping (SQLAlchemy's row._mapping, a dict of an asyncpg record)."""
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
