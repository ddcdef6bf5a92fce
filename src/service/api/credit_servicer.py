"""Servicer of CreditService. Rules live in domain/credits.py."""

from __future__ import annotations

from saas_llm.v1 import credit_service_pb2 as pb
from saas_llm.v1 import credit_service_pb2_grpc as pb_grpc
from service.api.context import Ctx, principal
from service.api.convert import NULL, from_struct, string_or_null, ts
from service.domain.credits import CreditsService
from service.domain.ports import NANOS_PER_USD


class CreditServicer(pb_grpc.CreditServiceServicer):
    def __init__(self, credits: CreditsService) -> None:
        self.credits = credits

    async def GetCreditBalance(
        self, request: pb.GetCreditBalanceRequest, context: Ctx
    ) -> pb.GetCreditBalanceResponse:
        c, b = await self.credits.balance_and_budget(principal(), request.team_id)
        return pb.GetCreditBalanceResponse(
            team_id=request.team_id,
            credits_allocated=c.allocated,
            credits_used=c.used,
            credits_reserved=c.reserved,
            credits_remaining=c.remaining,
            credit_limit=NULL,
            auto_refill=False,
            budget_usd=b.budget_nanos / NANOS_PER_USD,
            spend_usd=b.spent_nanos / NANOS_PER_USD,
            budget_remaining_usd=b.remaining_nanos / NANOS_PER_USD,
        )

    async def AddCredits(
        self, request: pb.AddCreditsRequest, context: Ctx
    ) -> pb.AddCreditsResponse:
        entry, c = await self.credits.add(
            principal(),
            request.team_id,
            request.credits_amount,
            request.reason,
            from_struct(request.metadata),
            request.request_id,
        )
        return pb.AddCreditsResponse(
            team_id=request.team_id,
            transaction_id=entry.transaction_id,
            credits_added=entry.credits_amount,
            credits_allocated=c.allocated,
            credits_used=c.used,
            credits_reserved=c.reserved,
            credits_remaining=c.remaining,
        )

    async def CheckCredits(
        self, request: pb.CheckCreditsRequest, context: Ctx
    ) -> pb.CheckCreditsResponse:
        available, remaining, required = await self.credits.check(
            principal(), request.team_id, request.credits_required
        )
        return pb.CheckCreditsResponse(
            available=available, credits_remaining=remaining, credits_required=required
        )

    async def ListCreditTransactions(
        self, request: pb.ListCreditTransactionsRequest, context: Ctx
    ) -> pb.ListCreditTransactionsResponse:
        total, entries = await self.credits.transactions(
            principal(), request.team_id, request.limit, request.offset
        )
        return pb.ListCreditTransactionsResponse(
            team_id=request.team_id,
            total_transactions=total,
            transactions=[
                pb.CreditTransaction(
                    transaction_id=e.transaction_id,
                    team_id=e.team_id,
                    transaction_type=e.transaction_type,
                    credits_amount=e.credits_amount,
                    balance_after=e.balance_after,
                    reason=e.reason,
                    job_id=string_or_null(e.job_id),
                    created_at=ts(e.created_at),
                )
                for e in entries
            ],
        )
