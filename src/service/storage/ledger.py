"""The credit ledger's reads and additions (domain/ports.py Ledger). Every change of a team's
credits is one conditional UPDATE of the team row plus one append-only `credit_transactions`
row in the same transaction, written by the dialect's money writer (storage/money.py). No
read-modify-write in Python: the database's CHECK constraints and the WHERE clauses keep
`available >= 0` under any concurrency.

Signed effect of each row type on the team totals:
  allocation, addition: allocated += n
  reservation:          reserved  += n       (available -= n)
  deduction:            reserved  -= n, used += n (available unchanged)
  release, expiry:      reserved  -= n       (available += n)
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, select

from service.domain.models import Credits, LedgerEntry
from service.domain.ports import NewAddition, StoredAddition, TeamState
from service.storage.database import Database
from service.storage.money import Money
from service.storage.rows import credits_of, ledger_entry_of, utcnow
from service.storage.schema import credit_transactions, teams
from service.storage.sql import prepared

_TEAM = teams.c.team_id == bindparam("p_team_id")
_TOTALS = (teams.c.credits_allocated, teams.c.credits_used, teams.c.credits_reserved)
_BALANCE = prepared(select(*_TOTALS).where(_TEAM))
_STATE = prepared(select(*_TOTALS, teams.c.status).where(_TEAM))
_ADDITION = prepared(
    select(credit_transactions).where(
        credit_transactions.c.team_id == bindparam("p_team_id"),
        credit_transactions.c.request_id == bindparam("p_request_id"),
    )
)
_COUNT = prepared(
    select(func.count())
    .select_from(credit_transactions)
    .where(credit_transactions.c.team_id == bindparam("p_team_id"))
)
_PAGE = prepared(
    select(credit_transactions)
    .where(credit_transactions.c.team_id == bindparam("p_team_id"))
    .order_by(credit_transactions.c.id.desc())
    .limit(bindparam("p_limit"))
    .offset(bindparam("p_offset"))
)


class LedgerRepository:
    def __init__(self, db: Database, money: Money) -> None:
        self.db = db
        self.money = money

    async def balance(self, team_id: str) -> Credits | None:
        async with self.db.read() as conn:
            row = (await conn.execute(_BALANCE, {"p_team_id": team_id})).first()
        return None if row is None else credits_of(row._mapping)

    async def team_state(self, team_id: str) -> TeamState | None:
        async with self.db.read() as conn:
            row = (await conn.execute(_STATE, {"p_team_id": team_id})).first()
        if row is None:
            return None
        return TeamState(status=row._mapping["status"], credits=credits_of(row._mapping))

    async def add_credits(self, addition: NewAddition) -> tuple[LedgerEntry, Credits] | None:
        return await self.money.add_credits(addition, utcnow())

    async def addition_by_request(self, team_id: str, request_id: str) -> StoredAddition | None:
        key = {"p_team_id": team_id, "p_request_id": request_id}
        async with self.db.read() as conn:
            row = (await conn.execute(_ADDITION, key)).first()
            if row is None:
                return None
            totals = (await conn.execute(_BALANCE, key)).one()
        return StoredAddition(
            entry=ledger_entry_of(row._mapping),
            request_hash=row._mapping["request_hash"],
            credits=credits_of(totals._mapping),
        )

    async def transactions(
        self, team_id: str, limit: int, offset: int
    ) -> tuple[int, list[LedgerEntry]]:
        key = {"p_team_id": team_id}
        async with self.db.read() as conn:
            total = (await conn.execute(_COUNT, key)).scalar_one()
            rows = (await conn.execute(_PAGE, {**key, "p_limit": limit, "p_offset": offset})).all()
        return int(total), [ledger_entry_of(r._mapping) for r in rows]
