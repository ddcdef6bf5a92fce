"""A tiny grpc.aio server implementing a few RPCs with fixed behaviour, to test Envoy alone.

It records every request (the decoded protobuf message and its metadata) so that tests can check
what the transcoder produced from the JSON/REST request.

- HealthService.Check / Live: fixed data with zero values ("" database, 0.0 uptime).
- OrganizationService.GetOrganization: organization_id "err-<CODE>" aborts with that gRPC code,
  a message and a google.rpc.ErrorInfo detail (grpc-status-details-bin); "plain-<CODE>" aborts
  without details; "sleep-<ms>" answers after that many milliseconds; anything else returns an
  organization.
- OrganizationService.CreateOrganization: echoes the request.
- TeamService.AssignModelGroups / GetTeamUsage, CreditService.ListCreditTransactions,
  JobService.ListTeamJobs, ModelGroupService.ResolveModelGroup: echo what they received
  (ListTeamJobs with status "bulk" returns `limit` jobs of ~600 bytes each).
- JobService.CreateJob / CompleteJob / LlmCall: echo fields.
- JobService.LlmCallStream: 3 messages, STREAM_INTERVAL apart; the yield times are recorded.
  job_id "err-<CODE>" aborts before the first message, "midfail" after one message.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from saas_llm.v1 import (
    common_pb2,
    credit_service_pb2,
    credit_service_pb2_grpc,
    health_service_pb2,
    health_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
    model_group_service_pb2,
    model_group_service_pb2_grpc,
    organization_service_pb2,
    organization_service_pb2_grpc,
    team_service_pb2,
    team_service_pb2_grpc,
)

DOMAIN = "saas-llm.gateway"
STREAM_INTERVAL = 0.3
CREATED_AT = timestamp_pb2.Timestamp(seconds=1_760_000_000)  # 2025-10-09T08:53:20Z


@dataclass
class Recorded:
    request: Any
    metadata: dict[str, str]


@dataclass
class StubState:
    port: int = 0
    domain: str = DOMAIN
    stream_interval: float = STREAM_INTERVAL
    calls: dict[str, list[Recorded]] = field(default_factory=dict)
    stream_yield_times: list[float] = field(default_factory=list)

    def record(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        metadata: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            metadata[key] = value if isinstance(value, str) else value.decode("latin-1")
        self.calls.setdefault(method, []).append(Recorded(request, metadata))

    def last(self, method: str) -> Recorded:
        return self.calls[method][-1]


async def abort_with_error_info(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    reason: str,
    metadata: dict[str, str] | None = None,
) -> None:
    """Abort like the real service: a status with an ErrorInfo in grpc-status-details-bin."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(info)
    await context.abort_with_status(rpc_status.to_status(status))


async def _echo_request_id(context: grpc.aio.ServicerContext) -> None:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            await context.send_initial_metadata((("x-request-id", str(value)),))
            return


class Health(health_service_pb2_grpc.HealthServiceServicer):
    def __init__(self, state: StubState) -> None:
        self.state = state

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("Check", request, context)
        return health_service_pb2.CheckResponse(status="healthy", version="0.0.0-stub")

    async def Live(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("Live", request, context)
        return health_service_pb2.LiveResponse(status="alive", version="0.0.0-stub")


class Organizations(organization_service_pb2_grpc.OrganizationServiceServicer):
    def __init__(self, state: StubState) -> None:
        self.state = state

    async def GetOrganization(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("GetOrganization", request, context)
        await _echo_request_id(context)
        org_id: str = request.organization_id
        if org_id.startswith("err-"):
            code = grpc.StatusCode[org_id.removeprefix("err-")]
            await abort_with_error_info(
                context,
                code,
                f"Organization '{org_id}' failed with {code.name}",
                f"TEST_{code.name}",
                {"organization_id": org_id, "code": code.name},
            )
        if org_id.startswith("plain-"):
            code = grpc.StatusCode[org_id.removeprefix("plain-")]
            await context.abort(code, f"plain {code.name}")
        if org_id == "crash":
            raise RuntimeError("unexpected")
        if org_id.startswith("sleep-"):  # hold the call open, for concurrency tests
            await asyncio.sleep(int(org_id.removeprefix("sleep-")) / 1000)
        metadata = struct_pb2.Struct()
        metadata.update({"tier": "gold", "n": 1})
        return organization_service_pb2.Organization(
            organization_id=org_id,
            name="Acme",
            status="active",
            metadata=metadata,
            created_at=CREATED_AT,
            updated_at=CREATED_AT,
        )

    async def CreateOrganization(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("CreateOrganization", request, context)
        return organization_service_pb2.Organization(
            organization_id=request.organization_id,
            name=request.name,
            status="active",
            metadata=request.metadata,
            created_at=CREATED_AT,
            updated_at=CREATED_AT,
        )


class Teams(team_service_pb2_grpc.TeamServiceServicer):
    def __init__(self, state: StubState) -> None:
        self.state = state

    async def AssignModelGroups(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("AssignModelGroups", request, context)
        return team_service_pb2.Team(
            team_id=request.team_id,
            model_groups=list(request.model_groups),
            credits=common_pb2.CreditSummary(),
        )

    async def GetTeamUsage(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("GetTeamUsage", request, context)
        return team_service_pb2.GetTeamUsageResponse(
            team_id=request.team_id,
            period=request.period,
            summary=common_pb2.UsageSummary(),
            job_types={"chat": common_pb2.JobTypeUsage(count=2, cost_usd=0.5)},
        )


class Credits(credit_service_pb2_grpc.CreditServiceServicer):
    def __init__(self, state: StubState) -> None:
        self.state = state

    async def ListCreditTransactions(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("ListCreditTransactions", request, context)
        tx = credit_service_pb2.CreditTransaction(
            transaction_id="t1",
            team_id=request.team_id,
            transaction_type="deduction",
            credits_amount=1,
            balance_after=9,
            job_id=struct_pb2.Value(null_value=struct_pb2.NULL_VALUE),
            created_at=CREATED_AT,
        )
        return credit_service_pb2.ListCreditTransactionsResponse(
            team_id=request.team_id, total_transactions=1, transactions=[tx]
        )


class ModelGroups(model_group_service_pb2_grpc.ModelGroupServiceServicer):
    def __init__(self, state: StubState) -> None:
        self.state = state

    async def ResolveModelGroup(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("ResolveModelGroup", request, context)
        return model_group_service_pb2.ResolveModelGroupResponse(
            group_name=request.group_name,
            primary_model="openai/gpt-4o-mini",
            fallback_models=["openai/gpt-4o"],
            team_has_access=request.team_id == "team_a",
        )


class Jobs(job_service_pb2_grpc.JobServiceServicer):
    def __init__(self, state: StubState) -> None:
        self.state = state

    async def CreateJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("CreateJob", request, context)
        return job_service_pb2.CreateJobResponse(
            job_id=f"{request.team_id}|{request.user_id}|{request.job_type}",
            status="pending",
            created_at=CREATED_AT,
        )

    async def CompleteJob(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("CompleteJob", request, context)
        return job_service_pb2.CompleteJobResponse(
            job_id=request.job_id,
            status=request.status,
            completed_at=CREATED_AT,
            costs=job_service_pb2.JobCosts(credit_applied=True, pricing="priced"),
        )

    async def LlmCall(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("LlmCall", request, context)
        return job_service_pb2.LlmCallResponse(
            call_id="c1",
            response=job_service_pb2.LlmResponse(content="hi", finish_reason="stop"),
            metadata=job_service_pb2.LlmCallMetadata(model_group=request.model_group),
        )

    async def ListTeamJobs(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("ListTeamJobs", request, context)
        jobs = []
        if request.status == "bulk":  # a big page, to check answers over 1 MiB pass
            jobs = [
                job_service_pb2.Job(job_id=f"job-{i:06d}", team_id="t", job_type="x" * 500)
                for i in range(request.limit)
            ]
        return job_service_pb2.ListTeamJobsResponse(
            team_id=request.team_id, total_jobs=len(jobs), jobs=jobs
        )

    async def LlmCallStream(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.state.record("LlmCallStream", request, context)
        job_id: str = request.job_id
        if job_id.startswith("err-"):
            code = grpc.StatusCode[job_id.removeprefix("err-")]
            await abort_with_error_info(context, code, f"stream failed: {code.name}", "TEST_STREAM")
        if job_id == "midfail":
            yield job_service_pb2.LlmCallStreamResponse(content="partial")
            await asyncio.sleep(0.05)
            await abort_with_error_info(
                context, grpc.StatusCode.INTERNAL, "LLM call failed: boom", "LLM_CALL_FAILED"
            )
        self.state.stream_yield_times.clear()
        for i, word in enumerate(["Hel", "lo", ""]):
            if i:
                await asyncio.sleep(STREAM_INTERVAL)
            last = i == 2
            self.state.stream_yield_times.append(time.monotonic())
            yield job_service_pb2.LlmCallStreamResponse(
                content=word,
                finish_reason="stop" if last else "",
                call_id="c1" if last else "",
                usage=common_pb2.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
                if last
                else None,
            )


async def start_stub_server(
    state: StubState | None = None, host: str = "127.0.0.1"
) -> tuple[grpc.aio.Server, StubState]:
    state = state or StubState()
    server = grpc.aio.server()
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(Health(state), server)
    organization_service_pb2_grpc.add_OrganizationServiceServicer_to_server(
        Organizations(state), server
    )
    team_service_pb2_grpc.add_TeamServiceServicer_to_server(Teams(state), server)
    credit_service_pb2_grpc.add_CreditServiceServicer_to_server(Credits(state), server)
    model_group_service_pb2_grpc.add_ModelGroupServiceServicer_to_server(ModelGroups(state), server)
    job_service_pb2_grpc.add_JobServiceServicer_to_server(Jobs(state), server)
    state.port = server.add_insecure_port(f"{host}:0")
    await server.start()
    return server, state
