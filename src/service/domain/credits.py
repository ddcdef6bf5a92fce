"""Credit balance, additions and the ledger view."""

from __future__ import annotations

from typing import Any

from service.domain import validation as v
from service.domain.errors import team_not_found
from service.domain.models import Credits, LedgerEntry
from service.domain.principal import Principal
from service.storage.ledger import LedgerRepository


class CreditsService:
    def __init__(self, ledger: LedgerRepository) -> None:
        self.ledger = ledger

    async def balance(self, who: Principal, team_id: str) -> Credits:
        v.require_id(team_id, "team_id")
        who.require_team(team_id)
        credits = await self.ledger.balance(team_id)
        if credits is None:
            raise team_not_found(team_id)
        return credits

    async def add(
        self,
        who: Principal,
        team_id: str,
        amount: int,
        reason: str,
        metadata: dict[str, Any],
        request_id: str,
    ) -> tuple[LedgerEntry, Credits]:
        who.require_admin()
        v.require_id(team_id, "team_id")
        v.credits(amount, "credits_amount", allow_zero=False)
        v.text(reason, "reason", max_len=512)
        return await self.ledger.add(
            team_id, amount, reason, v.metadata(metadata), v.optional_id(request_id, "request_id")
        )

    async def check(self, who: Principal, team_id: str, required: int) -> tuple[bool, int, int]:
        """(available, credits_remaining, credits_required)."""
        required = required or 1
        v.credits(required, "credits_required", allow_zero=False)
        credits = await self.balance(who, team_id)
        return credits.remaining >= required, credits.remaining, required

    async def transactions(
        self, who: Principal, team_id: str, limit: int, offset: int
    ) -> tuple[int, list[LedgerEntry]]:
        await self.balance(who, team_id)  # existence + tenancy
        limit, offset = v.page(limit, offset, default_limit=50)
        return await self.ledger.transactions(team_id, limit, offset)
