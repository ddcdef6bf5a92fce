"""Credit balance, additions and the ledger view."""

from __future__ import annotations

from typing import Any

from saas_llm.v1.reasons import Reason
from service.domain import validation as v
from service.domain.errors import AlreadyExists, FailedPrecondition, team_not_found
from service.domain.idempotency import body_hash
from service.domain.models import Credits, LedgerEntry
from service.domain.ports import ConstraintViolation, Ledger, NewAddition
from service.domain.principal import Principal

# Totals are int32 on the wire (proto3 JSON prints int64 as strings), so a team's running total
# stays below 2**31.
MAX_TOTAL_CREDITS = 2_000_000_000


class CreditsService:
    def __init__(self, ledger: Ledger) -> None:
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
        """Add credits. With a request_id, a retry with the same body returns the first entry
        (and today's balance); another body is ALREADY_EXISTS."""
        who.require_admin()
        v.require_id(team_id, "team_id")
        v.credits(amount, "credits_amount", allow_zero=False)
        v.text(reason, "reason", max_len=512)
        metadata = v.metadata(metadata)
        rid = v.optional_id(request_id, "request_id")
        rhash = body_hash({"a": amount, "r": reason, "m": metadata}) if rid else None
        if rid:
            replay = await self._replay(team_id, rid, rhash)
            if replay is not None:
                return replay
        addition = NewAddition(
            team_id=team_id,
            amount=amount,
            reason=reason,
            metadata=metadata,
            request_id=rid,
            request_hash=rhash,
            max_total=MAX_TOTAL_CREDITS,
        )
        try:
            added = await self.ledger.add_credits(addition)
        except ConstraintViolation:
            # A concurrent retry with the same request_id won the race.
            if rid:
                replay = await self._replay(team_id, rid, rhash)
                if replay is not None:
                    return replay
            raise
        if added is not None:
            return added
        # Nothing was written: say why.
        state = await self.ledger.team_state(team_id)
        if state is None:
            raise team_not_found(team_id)
        total = state.credits.allocated
        raise FailedPrecondition(
            f"Adding {amount} credits would take the team's total to {total + amount}; "
            f"the limit is {MAX_TOTAL_CREDITS}",
            reason=Reason.CREDIT_TOTAL_LIMIT,
        )

    async def _replay(
        self, team_id: str, request_id: str, rhash: str | None
    ) -> tuple[LedgerEntry, Credits] | None:
        found = await self.ledger.addition_by_request(team_id, request_id)
        if found is None:
            return None
        if found.request_hash != rhash:
            raise AlreadyExists(
                f"request_id '{request_id}' was already used with a different body",
                reason=Reason.IDEMPOTENCY_KEY_REUSED,
            )
        return found.entry, found.credits

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
