"""create-and-call, unary and streamed (the saga): create, call, complete in one request;
replay by request_id; what a failure or a client that goes away leaves behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from saas_llm.v1.reasons import Reason
from service.domain import streaming as streaming_module
from service.domain.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    LlmCallFailed,
    PermissionDenied,
)
from service.domain.jobs import (
    CallInput,
    CreateAndCallResult,
    StreamDelta,
    StreamDone,
    StreamEvent,
    StreamFailed,
    StreamStarted,
)
from service.domain.ports import StorageUnavailable
from service.domain.principal import ADMIN
from service.providers.base import ChatResult, StreamChunk, TokenUsage
from tests.support.scripted import Gate, fail, text
from tests.unit.conftest import MODEL_A, TEAM, Domain, call

TOOL_CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


async def create_and_call(
    domain: Domain, request_id: str = "", c: CallInput | None = None, deadline: float | None = None
) -> CreateAndCallResult:
    return await domain.jobs.create_and_call(
        ADMIN,
        team_id=TEAM,
        user_id="u1",
        job_type="test",
        metadata={"m": 1},
        request_id=request_id,
        call=c or call(),
        deadline=deadline,
    )


async def create_and_stream(
    domain: Domain, request_id: str = "", c: CallInput | None = None
) -> AsyncIterator[StreamEvent]:
    return await domain.jobs.create_and_call_stream(
        ADMIN,
        team_id=TEAM,
        user_id="u1",
        job_type="test",
        metadata={"m": 1},
        request_id=request_id,
        call=c or call(),
        deadline=None,
    )


async def drain(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [e async for e in events]


def only_job(domain: Domain) -> str:
    [job_id] = domain.store.jobs
    return job_id


async def eventually(check: Any, timeout: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while not check():
        assert loop.time() < until, "condition not met in time"
        await asyncio.sleep(0.005)


# Unary --------------------------------------------------------------------------------------


async def test_success_completes_and_charges(domain: Domain) -> None:
    domain.provider.script(MODEL_A, ChatResult("the answer", "stop", TokenUsage(4, 2)))
    done = await create_and_call(domain)
    assert done.answer.result.content == "the answer"
    assert done.job.status == "completed"
    assert done.job.credit_applied
    assert done.job.metadata == {"m": 1}
    assert (done.costs.total_calls, done.costs.total_tokens) == (1, 6)
    assert done.costs.credits_remaining == 9
    assert done.job.calls == [done.answer.call]
    assert domain.store.credits(TEAM).used == 1
    # Without a request_id there is nothing to replay.
    assert domain.store.jobs[done.job.job_id].replay_response is None


async def test_a_failed_call_completes_the_job_failed_and_raises(domain: Domain) -> None:
    domain.provider.script(MODEL_A, fail(400))
    with pytest.raises(LlmCallFailed) as e:
        await create_and_call(domain)
    job = domain.store.jobs[only_job(domain)]
    assert job.status == "failed"
    assert job.error_message == e.value.message
    assert not job.credit_applied
    assert domain.store.credits(TEAM).remaining == 10
    assert domain.store.entries(TEAM, job.job_id)[-1].reason == "Job test failed"


async def test_a_deadline_completes_the_job_failed(domain: Domain) -> None:
    domain.provider.script(MODEL_A, 5.0, *text("late"))
    with pytest.raises(DeadlineExceeded):
        await create_and_call(domain, deadline=time.monotonic() + 0.2)
    job = domain.store.jobs[only_job(domain)]
    assert job.status == "failed"
    assert job.error_message is not None and job.error_message.startswith("Deadline exceeded")
    assert domain.store.credits(TEAM).remaining == 10


async def test_a_cancelled_request_completes_the_job_failed(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, gate, *text("never"))
    task = asyncio.create_task(create_and_call(domain))
    await gate.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    job = domain.store.jobs[only_job(domain)]
    assert (job.status, job.error_message) == ("failed", "create-and-call interrupted")
    assert [c.record.status for c in job.calls] == ["cancelled"]
    assert domain.store.credits(TEAM).remaining == 10


async def test_a_group_the_team_lacks_costs_nothing(domain: Domain) -> None:
    await domain.add_group("elsewhere", "scripted/z")
    with pytest.raises(PermissionDenied):
        await create_and_call(domain, c=call("elsewhere"))
    assert domain.provider.log == []
    assert domain.store.credits(TEAM).remaining == 10


async def test_when_completing_fails_the_job_is_released_not_left_open(domain: Domain) -> None:
    domain.provider.script(MODEL_A, *text("answer"))

    async def database_blip() -> None:
        raise StorageUnavailable("Database unavailable, retry later")

    domain.store.before("complete_job", database_blip)
    done = await create_and_call(domain)
    assert done.answer.result.content == "answer"
    assert done.job.status == "failed"
    assert done.job.error_message == "create-and-call could not be completed"
    assert not done.job.credit_applied
    assert domain.store.credits(TEAM).remaining == 10


async def test_a_retry_replays_the_stored_answer(domain: Domain) -> None:
    domain.provider.script(
        MODEL_A, ChatResult("first answer", "tool_calls", TokenUsage(4, 2), [TOOL_CALL])
    )
    first = await create_and_call(domain, request_id="r-1")
    domain.provider.script(MODEL_A, *text("a different answer"))
    again = await create_and_call(domain, request_id="r-1")
    assert again.job.job_id == first.job.job_id
    assert again.answer.call == first.answer.call
    assert again.answer.result == first.answer.result
    assert again.answer.result.tool_calls == [TOOL_CALL]
    assert again.costs == first.costs
    assert domain.provider.tried() == [MODEL_A]
    assert len(domain.store.entries(TEAM)) == 3  # allocation, reservation, deduction


@pytest.mark.parametrize(
    "changed",
    [
        call(temperature=0.9),
        call(content="another question"),
        call(group="other"),
    ],
    ids=["temperature", "messages", "model_group"],
)
async def test_a_request_id_reused_for_another_call_is_refused(
    domain: Domain, changed: CallInput
) -> None:
    domain.provider.script(MODEL_A, *text("answer"))
    await create_and_call(domain, request_id="r-1", c=call(temperature=0.2))
    with pytest.raises(AlreadyExists) as e:
        await create_and_call(domain, request_id="r-1", c=changed)
    assert e.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    assert len(domain.store.jobs) == 1


async def test_a_retry_while_the_first_runs_is_request_in_progress(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, gate, *text("answer"))
    first = asyncio.create_task(create_and_call(domain, request_id="r-1"))
    await gate.reached.wait()
    with pytest.raises(FailedPrecondition) as e:
        await create_and_call(domain, request_id="r-1")
    assert e.value.reason == Reason.REQUEST_IN_PROGRESS
    job_id = only_job(domain)
    assert e.value.metadata == {"job_id": job_id}
    gate.open()
    done = await first
    assert done.job.job_id == job_id
    assert (await create_and_call(domain, request_id="r-1")).job.job_id == job_id
    assert len(domain.provider.log) == 1


async def test_a_retry_of_a_failed_call_fails_again_without_calling(domain: Domain) -> None:
    domain.provider.script(MODEL_A, fail(400))
    with pytest.raises(LlmCallFailed):
        await create_and_call(domain, request_id="r-1")
    with pytest.raises(LlmCallFailed) as e:
        await create_and_call(domain, request_id="r-1")
    assert e.value.reason == Reason.LLM_CALL_FAILED
    assert len(domain.provider.log) == 1
    assert len(domain.store.jobs) == 1


async def test_a_retry_of_a_failed_call_gets_the_first_error(domain: Domain) -> None:
    domain.provider.script(MODEL_A, fail(400))
    with pytest.raises(LlmCallFailed) as first:
        await create_and_call(domain, request_id="r-1")
    with pytest.raises(LlmCallFailed) as again:
        await create_and_call(domain, request_id="r-1")
    assert again.value.message == first.value.message


# Streamed (the saga) ------------------------------------------------------------------------


async def test_a_stream_starts_with_the_job_and_ends_with_it_completed(domain: Domain) -> None:
    domain.provider.script(MODEL_A, *text("one", " two", usage=TokenUsage(3, 2)))
    got = await drain(await create_and_stream(domain))
    job_id = only_job(domain)
    assert got[0] == StreamStarted(job_id)
    assert "".join(e.content for e in got if isinstance(e, StreamDelta)) == "one two"
    done = got[-1]
    assert isinstance(done, StreamDone)
    assert done.job is not None and done.costs is not None
    assert (done.job.job_id, done.job.status) == (job_id, "completed")
    assert done.job.credit_applied
    assert (done.costs.total_calls, done.costs.total_tokens) == (1, 5)
    assert done.costs.credits_remaining == 9
    assert done.job.calls == [done.call]


async def test_the_job_exists_before_the_first_chunk(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, gate, *text("late"))
    events = await create_and_stream(domain)
    started = await anext(events)
    assert isinstance(started, StreamStarted)
    assert domain.store.jobs[started.job_id].status == "pending"
    gate.open()
    assert isinstance((await drain(events))[-1], StreamDone)


async def test_a_failure_before_the_first_chunk_completes_failed_and_raises(
    domain: Domain,
) -> None:
    domain.provider.script(MODEL_A, fail(400))
    events = await create_and_stream(domain)
    started = await anext(events)
    assert isinstance(started, StreamStarted)
    with pytest.raises(LlmCallFailed):
        await anext(events)
    job = domain.store.jobs[started.job_id]
    assert job.status == "failed"
    assert [c.record.status for c in job.calls] == ["failed"]
    assert domain.store.credits(TEAM).remaining == 10


async def test_a_failure_after_the_first_chunk_completes_failed(domain: Domain) -> None:
    domain.provider.script(MODEL_A, StreamChunk("partial"), fail(502))
    got = await drain(await create_and_stream(domain))
    failed = got[-1]
    assert isinstance(failed, StreamFailed)
    job = domain.store.jobs[only_job(domain)]
    assert (job.status, job.error_message) == ("failed", failed.message)
    assert domain.store.credits(TEAM).remaining == 10


async def test_a_client_that_stops_reading_completes_the_job_failed(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("x" * 40), gate)
    events = await create_and_stream(domain)
    assert isinstance(await anext(events), StreamStarted)
    assert await anext(events) == StreamDelta("x" * 40)
    await events.aclose()  # type: ignore[attr-defined]
    job = domain.store.jobs[only_job(domain)]
    assert (job.status, job.error_message) == ("failed", "stream did not finish")
    assert domain.store.credits(TEAM).remaining == 10
    await eventually(lambda: domain.provider.streams()[0].closed)
    await eventually(lambda: len(job.calls) == 1)
    assert job.calls[0].record.status == "cancelled"


async def test_a_client_that_stops_reading_sees_its_call_in_the_job(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("x" * 40), gate)
    events = await create_and_stream(domain)
    await anext(events)
    await anext(events)
    await events.aclose()  # type: ignore[attr-defined]
    job, costs = await domain.jobs.get(ADMIN, only_job(domain))
    assert [c.status for c in job.billed_calls] == ["cancelled"]
    assert costs.total_calls == 1


async def test_a_client_cancelled_mid_stream_completes_the_job_with_its_call(
    domain: Domain,
) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("x" * 40), gate)
    events = await create_and_stream(domain)
    await anext(events)
    await anext(events)
    waiting = asyncio.ensure_future(anext(events))
    await gate.reached.wait()
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert domain.provider.streams()[0].closed
    job, costs = await domain.jobs.get(ADMIN, only_job(domain))
    assert job.status == "failed"
    assert [c.status for c in job.billed_calls] == ["cancelled"]
    assert costs.total_tokens == 10 + 10  # the prompt and the 40 characters relayed, estimated


async def test_a_suspension_ends_the_saga_failed(
    domain: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming_module, "STREAM_CHECK_S", 0.01)
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("x"), gate)
    events = await create_and_stream(domain)
    await anext(events)
    await anext(events)
    await domain.tenancy.set_team_status(ADMIN, TEAM, "suspended")
    got = await asyncio.wait_for(drain(events), 1)
    assert [type(e) for e in got] == [StreamFailed]
    assert isinstance(got[0], StreamFailed) and got[0].code == 7
    job = domain.store.jobs[only_job(domain)]
    assert job.status == "failed"
    assert domain.store.credits(TEAM).remaining == 10


async def test_a_finished_stream_is_replayed_as_one_delta(domain: Domain) -> None:
    tool = [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}]
    domain.provider.script(
        MODEL_A,
        StreamChunk("Hel"),
        StreamChunk("lo"),
        StreamChunk(tool_calls=tool),
        StreamChunk(finish_reason="tool_calls", usage=TokenUsage(3, 2)),
    )
    first = await drain(await create_and_stream(domain, request_id="r-1"))
    again = await drain(await create_and_stream(domain, request_id="r-1"))
    job_id = only_job(domain)
    assert [type(e) for e in again] == [StreamStarted, StreamDelta, StreamDone]
    assert again[0] == StreamStarted(job_id)
    assert again[1] == StreamDelta("Hello", tool)
    done, first_done = again[2], first[-1]
    assert isinstance(done, StreamDone) and isinstance(first_done, StreamDone)
    assert done.finish_reason == "tool_calls"
    assert done.call == first_done.call
    assert done.usage == TokenUsage(3, 2)
    assert done.job is not None and done.job.job_id == job_id
    assert done.costs == first_done.costs
    assert len(domain.provider.streams()) == 1


async def test_a_stream_retried_while_running_is_request_in_progress(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, gate, *text("answer"))
    events = await create_and_stream(domain, request_id="r-1")
    await anext(events)
    with pytest.raises(FailedPrecondition) as e:
        await create_and_stream(domain, request_id="r-1")
    assert e.value.reason == Reason.REQUEST_IN_PROGRESS
    gate.open()
    assert isinstance((await drain(events))[-1], StreamDone)


async def test_a_streamed_and_a_unary_call_do_not_share_a_request_id(domain: Domain) -> None:
    domain.provider.script(MODEL_A, *text("answer"))
    await create_and_call(domain, request_id="r-1")
    with pytest.raises(AlreadyExists) as e:
        await create_and_stream(domain, request_id="r-1")
    assert e.value.reason == Reason.IDEMPOTENCY_KEY_REUSED


async def test_a_failed_stream_is_not_replayed_as_a_success(domain: Domain) -> None:
    domain.provider.script(MODEL_A, StreamChunk("partial"), fail(502))
    await drain(await create_and_stream(domain, request_id="r-1"))
    with pytest.raises(LlmCallFailed):
        await create_and_stream(domain, request_id="r-1")
    assert len(domain.provider.streams()) == 1
