"""The credit ledger. Every change of a team's credits is one conditional
UPDATE of the team row plus one append-only `credit_transactions` row, in the
same transaction. No read-modify-write in Python: the database's CHECK
constraint and the WHERE clauses keep `available >= 0` under any concurrency.

Signed effect of each row type on the team totals:
  allocation, addition: allocated += n
  reservation:          reserved  += n       (available -= n)
  deduction:            reserved  -= n, used += n (available unchanged)
  release, expiry:      reserved  -= n       (available += n)
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from sqlalchemy import ColumnElement, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InsufficientCredits,
    team_not_found,
)
from service.domain.models import Credits, LedgerEntry
from service.storage.db import Database
from service.storage.rows import credits_of, ledger_entry_of, new_id, reserve_reason, utcnow
from service.storage.schema import credit_transactions, teams

# Totals are int32 on the wire (proto3 JSON prints int64 as strings), so a
# team's running total stays below 2**31.
MAX_TOTAL_CREDITS = 2_000_000_000

_TOTALS = (teams.c.credits_allocated, teams.c.credits_used, teams.c.credits_reserved)

# The statements of every job's reservation and settlement, built once. Building a SQLAlchemy
# statement (coercing every operand, computing its cache key) costs several times more CPU than
# SQLite takes to run it; a prebuilt one takes its values as execution parameters (`p_*` in
# WHERE, column names in SET, each with its column's type).
_INSERT_TRANSACTION = credit_transactions.insert()
_TEAM = teams.c.team_id == bindparam("p_team_id")


def _team_update(*guards: ColumnElement[bool], **values: Any) -> Any:
    return update(teams).where(_TEAM, *guards).values(**values).returning(*_TOTALS)


_RESERVE = _team_update(
    teams.c.credits_allocated - teams.c.credits_used - teams.c.credits_reserved >= 1,
    teams.c.status == "active",
    credits_reserved=teams.c.credits_reserved + 1,
)
# An addition, below the cap on a team's total (p_limit = MAX_TOTAL_CREDITS - amount).
_ADD = _team_update(
    teams.c.credits_allocated <= bindparam("p_limit"),
    credits_allocated=teams.c.credits_allocated + bindparam("p_amount"),
)
_SETTLE = {
    True: _team_update(
        teams.c.credits_reserved >= 1,
        credits_reserved=teams.c.credits_reserved - 1,
        credits_used=teams.c.credits_used + 1,
    ),
    False: _team_update(
        teams.c.credits_reserved >= 1, credits_reserved=teams.c.credits_reserved - 1
    ),
}


def body_hash(body: dict[str, Any]) -> str:
    """Fingerprint of an idempotent request's body."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def _write(
    conn: AsyncConnection,
    *,
    team_id: str,
    kind: str,
    amount: int,
    reason: str,
    job_id: str | None,
    credits: Credits,
    metadata: dict[str, Any] | None = None,
    request_id: str | None = None,
    request_hash: str | None = None,
) -> LedgerEntry:
    now = utcnow()
    tid = new_id()
    await conn.execute(
        _INSERT_TRANSACTION,
        {
            "transaction_id": tid,
            "team_id": team_id,
            "transaction_type": kind,
            "credits_amount": amount,
            "balance_after": credits.remaining,
            "reason": reason,
            "job_id": job_id,
            "metadata": metadata or {},
            "request_id": request_id,
            "request_hash": request_hash,
            "created_at": now,
        },
    )
    return LedgerEntry(
        transaction_id=tid,
        team_id=team_id,
        transaction_type=kind,
        credits_amount=amount,
        balance_after=credits.remaining,
        reason=reason,
        job_id=job_id,
        created_at=now,
    )


async def _run_update(
    conn: AsyncConnection, statement: Any, team_id: str, **params: Any
) -> Credits | None:
    """One of the prebuilt team updates above: the new totals, or None when its guard failed."""
    row = (
        await conn.execute(statement, {"p_team_id": team_id, "updated_at": utcnow(), **params})
    ).first()
    return None if row is None else credits_of(row)


async def reserve(conn: AsyncConnection, team_id: str, job_id: str, job_type: str) -> Credits:
    """Hold 1 credit for a new job, or raise InsufficientCredits."""
    credits = await _run_update(conn, _RESERVE, team_id)
    if credits is None:
        row = (
            await conn.execute(select(*_TOTALS, teams.c.status).where(teams.c.team_id == team_id))
        ).first()
        if row is None:
            raise team_not_found(team_id)
        if row._mapping["status"] != "active":
            raise FailedPrecondition(f"Team '{team_id}' is suspended", reason="TEAM_SUSPENDED")
        raise InsufficientCredits(required=1, available=max(credits_of(row).remaining, 0))
    await _write(
        conn,
        team_id=team_id,
        kind="reservation",
        amount=1,
        reason=reserve_reason(job_type),
        job_id=job_id,
        credits=credits,
    )
    return credits


async def settle(
    conn: AsyncConnection, team_id: str, job_id: str, *, kind: str, reason: str
) -> Credits:
    """End a job's reservation: `deduction` charges it, `release` and `expiry`
    give it back."""
    credits = await _run_update(conn, _SETTLE[kind == "deduction"], team_id)
    if credits is None:
        # Unreachable while the invariant "reserved == open jobs" holds; fail
        # the transaction rather than corrupt the ledger.
        raise RuntimeError(f"ledger invariant broken: team {team_id} has no reservation to settle")
    await _write(
        conn, team_id=team_id, kind=kind, amount=1, reason=reason, job_id=job_id, credits=credits
    )
    return credits


class LedgerRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def balance(self, team_id: str) -> Credits | None:
        async with self.db.tx() as conn:
            row = (await conn.execute(select(*_TOTALS).where(teams.c.team_id == team_id))).first()
        return None if row is None else credits_of(row)

    async def add(
        self,
        team_id: str,
        amount: int,
        reason: str,
        metadata: dict[str, Any],
        request_id: str | None,
    ) -> tuple[LedgerEntry, Credits]:
        """Add credits. With a request_id, a retry with the same body returns
        the first entry (and today's balance); another body is ALREADY_EXISTS."""
        rhash = body_hash({"a": amount, "r": reason, "m": metadata}) if request_id else None
        if request_id:
            replay = await self._replay(team_id, request_id, rhash)
            if replay is not None:
                return replay
        try:
            async with self.db.tx() as conn:
                credits = await _run_update(
                    conn, _ADD, team_id, p_amount=amount, p_limit=MAX_TOTAL_CREDITS - amount
                )
                if credits is None:
                    total = (
                        await conn.execute(
                            select(teams.c.credits_allocated).where(teams.c.team_id == team_id)
                        )
                    ).scalar()
                    if total is None:
                        raise team_not_found(team_id)
                    raise FailedPrecondition(
                        f"Adding {amount} credits would take the team's total to "
                        f"{total + amount}; the limit is {MAX_TOTAL_CREDITS}",
                        reason="CREDIT_TOTAL_LIMIT",
                    )
                entry = await _write(
                    conn,
                    team_id=team_id,
                    kind="addition",
                    amount=amount,
                    reason=reason or "Credits added",
                    job_id=None,
                    credits=credits,
                    metadata=metadata,
                    request_id=request_id,
                    request_hash=rhash,
                )
                return entry, credits
        except IntegrityError:
            # A concurrent retry with the same request_id won the race.
            if request_id:
                replay = await self._replay(team_id, request_id, rhash)
                if replay is not None:
                    return replay
            raise

    async def _replay(
        self, team_id: str, request_id: str, rhash: str | None
    ) -> tuple[LedgerEntry, Credits] | None:
        async with self.db.tx() as conn:
            row = (
                await conn.execute(
                    select(credit_transactions).where(
                        credit_transactions.c.team_id == team_id,
                        credit_transactions.c.request_id == request_id,
                    )
                )
            ).first()
            if row is None:
                return None
            if row._mapping["request_hash"] != rhash:
                raise AlreadyExists(
                    f"request_id '{request_id}' was already used with a different body",
                    reason="IDEMPOTENCY_KEY_REUSED",
                )
            totals = (await conn.execute(select(*_TOTALS).where(teams.c.team_id == team_id))).one()
            return ledger_entry_of(row), credits_of(totals)

    async def transactions(
        self, team_id: str, limit: int, offset: int
    ) -> tuple[int, list[LedgerEntry]]:
        async with self.db.tx() as conn:
            total = (
                await conn.execute(
                    select(func.count())
                    .select_from(credit_transactions)
                    .where(credit_transactions.c.team_id == team_id)
                )
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(credit_transactions)
                    .where(credit_transactions.c.team_id == team_id)
                    .order_by(credit_transactions.c.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return int(total), [ledger_entry_of(r) for r in rows]
