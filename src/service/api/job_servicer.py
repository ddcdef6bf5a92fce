"""Servicer of JobService. Rules live in domain/jobs.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from saas_llm.v1 import common_pb2
from saas_llm.v1 import job_service_pb2 as pb
from saas_llm.v1 import job_service_pb2_grpc as pb_grpc
from service.api.context import Ctx, deadline, principal
from service.api.convert import (
    NULL,
    chat_message,
    from_struct,
    params_of,
    saturated_int32,
    string_or_null,
    struct,
    ts,
)
from service.domain.jobs import (
    CallAnswer,
    CallInput,
    JobsService,
    StreamDelta,
    StreamDone,
    StreamEvent,
    StreamStarted,
)
from service.domain.models import CallRecord, Job, JobCosts
from service.providers.base import ChatRequest

LlmRequest = pb.LlmCallRequest | pb.CreateAndCallRequest


def call_input(r: LlmRequest) -> CallInput:
    return CallInput(
        model_group=r.model_group,
        purpose=r.purpose,
        request=ChatRequest(messages=[chat_message(m) for m in r.messages], params=params_of(r)),
    )


def costs_pb(c: JobCosts) -> pb.JobCosts:
    return pb.JobCosts(
        total_calls=c.total_calls,
        successful_calls=c.successful_calls,
        failed_calls=c.failed_calls,
        total_tokens=saturated_int32(c.total_tokens),
        total_cost_usd=c.total_cost_usd,
        avg_latency_ms=c.avg_latency_ms,
        credit_applied=c.credit_applied,
        credits_remaining=c.credits_remaining,
        pricing=c.pricing,
    )


def call_pb(c: CallRecord) -> pb.JobCall:
    return pb.JobCall(
        call_id=c.call_id,
        purpose=c.purpose,
        model_group=c.model_group,
        tokens=saturated_int32(c.tokens),
        latency_ms=c.latency_ms,
        error=string_or_null(c.error),
        status=c.status,
        created_at=ts(c.created_at),
    )


def job_pb(j: Job, costs: JobCosts, *, with_calls: bool) -> pb.Job:
    out = pb.Job(
        job_id=j.job_id,
        team_id=j.team_id,
        user_id=j.user_id,
        job_type=j.job_type,
        status=j.status,
        metadata=struct(j.metadata),
        created_at=ts(j.created_at),
        credit_applied=j.credit_applied,
        error_message=string_or_null(j.error_message),
        result_metadata=struct(j.result_metadata),
        costs=costs_pb(costs),
        calls=[call_pb(c) for c in j.calls] if with_calls else [],
    )
    if j.completed_at is not None:
        out.completed_at.CopyFrom(ts(j.completed_at))
    return out


def answer_pb(a: CallAnswer) -> tuple[pb.LlmResponse, pb.LlmCallMetadata]:
    r = a.result
    return (
        pb.LlmResponse(
            content=r.content,
            finish_reason=r.finish_reason,
            tool_calls=[struct(t) for t in r.tool_calls],
        ),
        pb.LlmCallMetadata(
            tokens_used=r.usage.total_tokens,
            latency_ms=a.call.latency_ms,
            model_group=a.call.model_group,
            prompt_tokens=r.usage.prompt_tokens,
            completion_tokens=r.usage.completion_tokens,
            cached=a.cached,
        ),
    )


def stream_pb(event: StreamEvent) -> pb.LlmCallStreamResponse:
    if isinstance(event, StreamDelta):
        msg = pb.LlmCallStreamResponse(content=event.content)
        if event.tool_calls:
            msg.tool_calls.extend(struct(t) for t in event.tool_calls)
        return msg
    if isinstance(event, StreamDone):
        u = event.usage
        msg = pb.LlmCallStreamResponse(
            finish_reason=event.finish_reason,
            call_id=event.call.call_id,
            usage=common_pb2.Usage(
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                total_tokens=u.total_tokens,
                estimated=u.estimated,
            ),
        )
        if event.job is not None and event.costs is not None:
            msg.job_id = event.job.job_id
            msg.costs.CopyFrom(costs_pb(event.costs))
        return msg
    if isinstance(event, StreamStarted):
        return pb.LlmCallStreamResponse(job_id=event.job_id)
    return pb.LlmCallStreamResponse(
        finish_reason="error",
        call_id=event.call.call_id,
        error=pb.StreamError(code=event.code, message=event.message),
    )


class JobServicer(pb_grpc.JobServiceServicer):
    def __init__(self, jobs: JobsService) -> None:
        self.jobs = jobs

    async def CreateJob(self, request: pb.CreateJobRequest, context: Ctx) -> pb.CreateJobResponse:
        job, _ = await self.jobs.create(
            principal(),
            team_id=request.team_id,
            user_id=request.user_id,
            job_type=request.job_type,
            metadata=from_struct(request.metadata),
            request_id=request.request_id,
        )
        return pb.CreateJobResponse(
            job_id=job.job_id, status=job.status, created_at=ts(job.created_at)
        )

    async def LlmCall(self, request: pb.LlmCallRequest, context: Ctx) -> pb.LlmCallResponse:
        answer = await self.jobs.llm_call(
            principal(), request.job_id, call_input(request), deadline(context)
        )
        response, metadata = answer_pb(answer)
        return pb.LlmCallResponse(call_id=answer.call.call_id, response=response, metadata=metadata)

    async def LlmCallStream(
        self, request: pb.LlmCallRequest, context: Ctx
    ) -> AsyncIterator[pb.LlmCallStreamResponse]:
        events = await self.jobs.llm_call_stream(
            principal(), request.job_id, call_input(request), deadline(context)
        )
        # Closed here, not left to the garbage collector, when grpc.aio drops this generator:
        # the call's record and the job's settlement run in its clean-up.
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                yield stream_pb(event)

    async def CompleteJob(
        self, request: pb.CompleteJobRequest, context: Ctx
    ) -> pb.CompleteJobResponse:
        job, costs = await self.jobs.complete(
            principal(),
            request.job_id,
            request.status,
            from_struct(request.metadata),
            request.error_message,
        )
        out = pb.CompleteJobResponse(
            job_id=job.job_id,
            status=job.status,
            costs=costs_pb(costs),
            calls=[call_pb(c) for c in job.billed_calls],
        )
        if job.completed_at is not None:
            out.completed_at.CopyFrom(ts(job.completed_at))
        return out

    async def UpdateJobMetadata(self, request: pb.UpdateJobMetadataRequest, context: Ctx) -> pb.Job:
        job, costs = await self.jobs.update_metadata(
            principal(), request.job_id, from_struct(request.metadata)
        )
        return job_pb(job, costs, with_calls=True)

    async def GetJob(self, request: pb.GetJobRequest, context: Ctx) -> pb.Job:
        job, costs = await self.jobs.get(principal(), request.job_id)
        return job_pb(job, costs, with_calls=True)

    async def ListTeamJobs(
        self, request: pb.ListTeamJobsRequest, context: Ctx
    ) -> pb.ListTeamJobsResponse:
        total, jobs = await self.jobs.list_for_team(
            principal(), request.team_id, request.status, request.limit, request.offset
        )
        return pb.ListTeamJobsResponse(
            team_id=request.team_id,
            total_jobs=total,
            jobs=[job_pb(j, c, with_calls=False) for j, c in jobs],
        )

    async def CreateAndCall(
        self, request: pb.CreateAndCallRequest, context: Ctx
    ) -> pb.CreateAndCallResponse:
        done = await self.jobs.create_and_call(
            principal(),
            team_id=request.team_id,
            user_id=request.user_id,
            job_type=request.job_type,
            metadata=from_struct(request.metadata),
            request_id=request.request_id,
            call=call_input(request),
            deadline=deadline(context),
        )
        job = done.job
        response, metadata = answer_pb(done.answer)
        out = pb.CreateAndCallResponse(
            job_id=job.job_id,
            call_id=done.answer.call.call_id,
            response=response,
            metadata=metadata,
            status=job.status,
            costs=costs_pb(done.costs),
        )
        if job.completed_at is not None:
            out.completed_at.CopyFrom(ts(job.completed_at))
        return out

    async def CreateAndCallStream(
        self, request: pb.CreateAndCallRequest, context: Ctx
    ) -> AsyncIterator[pb.LlmCallStreamResponse]:
        events = await self.jobs.create_and_call_stream(
            principal(),
            team_id=request.team_id,
            user_id=request.user_id,
            job_type=request.job_type,
            metadata=from_struct(request.metadata),
            request_id=request.request_id,
            call=call_input(request),
            deadline=deadline(context),
        )
        # Closed here, not left to the garbage collector, when grpc.aio drops this generator:
        # the call's record and the job's settlement run in its clean-up.
        async with contextlib.aclosing(events) as stream:
            async for event in stream:
                yield stream_pb(event)


__all__ = ["NULL", "JobServicer"]
