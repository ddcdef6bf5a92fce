"""The writers of the money operations: one per dialect (money_sqlite.py, money_postgres.py),
chosen once per process. Every statement that moves credits or records a call is in those two
modules and nowhere else; the repositories call them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from service.domain.models import Credits, LedgerEntry
from service.domain.ports import DirectSettlement, JobClaim, NewAddition, NewDirectCall, NewJob
from service.storage.database import Connection, Database, PostgresDatabase, SqliteDatabase


class Money(Protocol):
    async def create_job(self, job: NewJob) -> bool:
        """Insert a pending job and reserve its credit; False (nothing written) when the team
        is missing, suspended or out of credits, or the request_id is taken."""
        ...

    async def admit_call(self, job_id: str, max_calls: int) -> bool:
        """Count one more call of an open job below `max_calls` (one conditional UPDATE);
        False (nothing written) when the job is at the bound, not open, or missing."""
        ...

    async def record_call(self, values: Mapping[str, Any]) -> None:
        """An llm_calls row (CALL_COLUMNS) and its job's totals and status."""
        ...

    async def complete_job(
        self, claim: JobClaim, now: datetime
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """Claim an open job, settle its credit, read it back with its calls; None (nothing
        written) when the job is not open."""
        ...

    async def expire_stale_jobs(self, cutoff: datetime, now: datetime, batch: int) -> int: ...

    async def set_team_status(
        self, team_id: str, status: str, error_message: str, now: datetime
    ) -> bool:
        """False when there is no such team. Suspending fails the team's open jobs and releases
        their credits in the same transaction."""
        ...

    async def add_credits(
        self, addition: NewAddition, now: datetime
    ) -> tuple[LedgerEntry, Credits] | None: ...

    async def allocate(
        self, conn: Connection, team_id: str, amount: int, now: datetime
    ) -> None: ...

    async def reserve_budget(self, call: NewDirectCall) -> bool:
        """Hold the call's upper-bound cost and record it in flight; False (nothing written)
        when the team is missing, suspended or short of budget."""
        ...

    async def settle_budget(self, settlement: DirectSettlement, now: datetime) -> bool:
        """Replace the call's reservation by its cost, with its record; False when it was no
        longer in flight."""
        ...

    async def expire_direct_calls(self, cutoff: datetime, now: datetime, batch: int) -> int: ...


def money_for(db: Database) -> Money:
    if isinstance(db, SqliteDatabase):
        from service.storage.money_sqlite import SqliteMoney

        return SqliteMoney(db)
    assert isinstance(db, PostgresDatabase)
    from service.storage.money_postgres import PostgresMoney

    return PostgresMoney(db)
