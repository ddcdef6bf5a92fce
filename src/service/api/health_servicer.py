"""HealthService: GET /health (readiness) and GET /health/live (liveness)."""

from __future__ import annotations

import logging
import time

from saas_llm.v1 import health_service_pb2 as pb
from saas_llm.v1 import health_service_pb2_grpc as pb_grpc
from service.api.context import Ctx
from service.domain.breaker import Breakers
from service.domain.ports import HealthProbe

VERSION = "0.1.0"
log = logging.getLogger(__name__)


class HealthServicer(pb_grpc.HealthServiceServicer):
    def __init__(self, db: HealthProbe, breakers: Breakers | None = None) -> None:
        self.db = db
        self.breakers = breakers
        self.started = time.monotonic()
        self.shutting_down = False

    async def Check(self, request: pb.CheckRequest, context: Ctx) -> pb.CheckResponse:
        database = "ok"
        try:
            await self.db.ping()
        except Exception as exc:
            database = type(exc).__name__
            log.warning("health check: database error", extra={"error": database})
        if self.shutting_down:
            status = "shutting_down"
        else:
            status = "healthy" if database == "ok" else "unhealthy"
        return pb.CheckResponse(
            status=status,
            database=database,
            version=VERSION,
            uptime_seconds=round(time.monotonic() - self.started, 3),
            # Open circuits do not make the replica unhealthy: its groups skip those models.
            breakers=[
                pb.ModelBreaker(
                    model=b.model,
                    state=b.state,
                    retry_in_seconds=b.retry_in_seconds,
                    consecutive_failures=b.consecutive_failures,
                )
                for b in (self.breakers.report() if self.breakers is not None else ())
            ],
        )

    async def Live(self, request: pb.LiveRequest, context: Ctx) -> pb.LiveResponse:
        # No database, no lock, no await: this answer is what Envoy and gRPC cost by themselves.
        return pb.LiveResponse(
            status="shutting_down" if self.shutting_down else "alive",
            version=VERSION,
            uptime_seconds=round(time.monotonic() - self.started, 3),
        )
