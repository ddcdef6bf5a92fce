"""JobsService.llm_call_stream (domain/jobs.py over domain/streaming.py relay): read-ahead and
coalescing, tool-call chunks, client disconnect, failures after the first chunk, suspension and
shutdown ending a stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from saas_llm.v1.reasons import Reason
from service.domain import streaming as streaming_module
from service.domain.errors import DeadlineExceeded, LlmCallFailed
from service.domain.jobs import StreamDelta, StreamDone, StreamEvent, StreamFailed
from service.domain.ports import StorageUnavailable
from service.domain.principal import ADMIN
from service.domain.streaming import STREAM_BACKLOG
from service.providers.base import StreamChunk, TokenUsage
from tests.support.scripted import Gate, fail, text
from tests.unit.conftest import MODEL_A, MODEL_B, TEAM, Domain, call


async def open_stream(domain: Domain, **params: Any) -> tuple[str, AsyncIterator[StreamEvent]]:
    job = await domain.new_job()
    events = await domain.jobs.llm_call_stream(ADMIN, job.job_id, call(**params), None)
    return job.job_id, events


async def drain(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [e async for e in events]


def deltas(events: list[StreamEvent]) -> list[str]:
    return [e.content for e in events if isinstance(e, StreamDelta)]


async def eventually(check: Any, timeout: float = 1.0) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while not check():
        assert loop.time() < until, "condition not met in time"
        await asyncio.sleep(0.005)


def tool_chunk(index: int, args: str) -> StreamChunk:
    return StreamChunk(tool_calls=[{"index": index, "function": {"name": "f", "arguments": args}}])


# Relaying -----------------------------------------------------------------------------------


async def test_a_stream_relays_every_chunk_and_records_the_call(domain: Domain) -> None:
    usage = TokenUsage(5, 3)
    domain.provider.script(MODEL_A, *text("one", " two", " three", usage=usage))
    job_id, events = await open_stream(domain)
    got = await drain(events)
    assert "".join(deltas(got)) == "one two three"
    done = got[-1]
    assert isinstance(done, StreamDone)
    assert done.finish_reason == "stop"
    assert done.usage == usage
    assert done.call.status == "success"
    [recorded] = domain.store.calls_of(job_id)
    assert recorded.record == done.call
    assert recorded.call.streamed
    assert not recorded.call.usage_estimated
    assert recorded.call.ttft_ms is not None
    assert domain.provider.streams()[0].closed


async def test_the_first_chunk_is_not_held_back(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("first"), gate, *text(" rest"))
    _, events = await open_stream(domain)
    first = await asyncio.wait_for(anext(events), 1)
    # Sent while the provider has not produced anything more.
    assert first == StreamDelta("first")
    assert not gate.opened.is_set()
    gate.open()
    assert deltas(await drain(events)) == [" rest"]


async def test_a_chunk_never_waits_for_a_later_one(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("a"), StreamChunk("b"), gate, *text("c"))
    _, events = await open_stream(domain)
    assert await anext(events) == StreamDelta("a")
    assert await asyncio.wait_for(anext(events), 1) == StreamDelta("b")
    gate.open()
    assert deltas(await drain(events)) == ["c"]


async def test_chunks_that_pile_up_are_sent_as_one_event(domain: Domain) -> None:
    usage = TokenUsage(2, 4)
    domain.provider.script(MODEL_A, *text("a", "b", "c", "d", usage=usage))
    _, events = await open_stream(domain)
    assert await anext(events) == StreamDelta("a")
    # A slow client: everything else arrives before it asks for the next event.
    await asyncio.sleep(0.02)
    rest = await drain(events)
    assert deltas(rest) == ["bcd"]
    done = rest[-1]
    assert isinstance(done, StreamDone)
    # The merged chunks' final usage is kept.
    assert done.usage == usage


async def test_chunks_that_do_not_pile_up_are_sent_one_by_one(domain: Domain) -> None:
    domain.provider.script(MODEL_A, StreamChunk("a"), 0.01, StreamChunk("b"), 0.01, *text("c"))
    _, events = await open_stream(domain)
    assert deltas(await drain(events)) == ["a", "b", "c"]


async def test_tool_call_chunks_are_never_merged(domain: Domain) -> None:
    tc0, tc1 = tool_chunk(0, '{"a"'), tool_chunk(0, ": 1}")
    domain.provider.script(
        MODEL_A,
        StreamChunk("x"),
        StreamChunk("y"),
        tc0,
        tc1,
        StreamChunk("z"),
        StreamChunk("w"),
        StreamChunk(finish_reason="tool_calls"),
    )
    _, events = await open_stream(domain)
    assert await anext(events) == StreamDelta("x")
    await asyncio.sleep(0.02)
    rest = await drain(events)
    assert [(e.content, e.tool_calls) for e in rest if isinstance(e, StreamDelta)] == [
        ("y", None),  # text merges up to a tool-call chunk, not past it
        ("", tc0.tool_calls),
        ("", tc1.tool_calls),
        ("zw", None),
    ]
    done = rest[-1]
    assert isinstance(done, StreamDone)
    assert done.finish_reason == "tool_calls"


async def test_the_provider_is_read_at_most_a_backlog_ahead(domain: Domain) -> None:
    total = STREAM_BACKLOG * 3
    domain.provider.script(MODEL_A, *text(*(f"{i}," for i in range(total))))
    _, events = await open_stream(domain)
    await anext(events)
    await asyncio.sleep(0.02)
    # The first chunk, a full backlog and the one waiting for room.
    assert len(domain.provider.streams()[0].sent) <= 1 + STREAM_BACKLOG + 1
    got = await drain(events)
    assert "0," + "".join(deltas(got)) == "".join(f"{i}," for i in range(total))


async def test_a_stop_closes_an_upstream_held_by_a_full_backlog(domain: Domain) -> None:
    total = STREAM_BACKLOG * 3
    domain.provider.script(MODEL_A, *text(*(f"{i}," for i in range(total))))
    _, events = await open_stream(domain)
    await anext(events)
    await asyncio.sleep(0.02)  # the pump waits for room in the backlog
    domain.jobs.draining.set()
    got = await drain(events)
    assert isinstance(got[-1], StreamFailed)
    upstream = domain.provider.streams()[0]
    assert len(upstream.sent) < total
    assert upstream.closed
    # What was queued is sent before the stream ends; the rest is never read.
    relayed = "0," + "".join(deltas(got))
    assert "".join(c.content for c in upstream.sent).startswith(relayed)


async def test_a_stop_relays_every_chunk_already_read(domain: Domain) -> None:
    total = STREAM_BACKLOG * 3
    domain.provider.script(MODEL_A, *text(*(f"{i}," for i in range(total))))
    _, events = await open_stream(domain)
    await anext(events)
    await asyncio.sleep(0.02)
    domain.jobs.draining.set()
    got = await drain(events)
    upstream = domain.provider.streams()[0]
    assert "0," + "".join(deltas(got)) == "".join(c.content for c in upstream.sent)


async def test_the_simulator_streams_its_answer(domain: Domain) -> None:
    await domain.add_group("sim", "simulator/unit")
    await domain.tenancy.assign_model_groups(ADMIN, TEAM, ["sim"])
    job = await domain.new_job()
    events = await domain.jobs.llm_call_stream(ADMIN, job.job_id, call("sim", "hi"), None)
    got = await drain(events)
    assert "".join(deltas(got)) == "Simulated response to: hi"
    assert isinstance(got[-1], StreamDone)


# Before the first chunk ---------------------------------------------------------------------


async def test_a_retryable_failure_before_the_first_chunk_falls_back(domain: Domain) -> None:
    domain.provider.script(MODEL_A, fail(503))
    domain.provider.script(MODEL_B, *text("from b"))
    job_id, events = await open_stream(domain)
    assert deltas(await drain(events)) == ["from b"]
    assert domain.provider.tried() == [MODEL_A, MODEL_B]
    assert domain.provider.streams()[0].closed
    [recorded] = domain.store.calls_of(job_id)
    assert recorded.call.model == MODEL_B
    assert len(recorded.call.attempts) == 2


async def test_a_failure_before_the_first_chunk_is_an_ordinary_error(domain: Domain) -> None:
    domain.provider.script(MODEL_A, fail(400))
    job_id, events = await open_stream(domain)
    with pytest.raises(LlmCallFailed) as e:
        await anext(events)
    assert e.value.reason == Reason.LLM_CALL_FAILED
    assert domain.provider.tried() == [MODEL_A]
    [recorded] = domain.store.calls_of(job_id)
    assert recorded.record.status == "failed"


# After the first chunk ----------------------------------------------------------------------


async def test_a_failure_after_the_first_chunk_ends_the_stream_failed(domain: Domain) -> None:
    domain.provider.script(MODEL_A, StreamChunk("x" * 40), fail(503))
    job_id, events = await open_stream(domain)
    got = await drain(events)
    assert deltas(got) == ["x" * 40]
    failed = got[-1]
    assert isinstance(failed, StreamFailed)
    assert failed.code == 13
    assert failed.message == "LLM call failed: Scripted provider error (HTTP 503)"
    assert failed.call.status == "failed"
    # No fallback once the answer has started.
    assert domain.provider.tried() == [MODEL_A]
    [recorded] = domain.store.calls_of(job_id)
    assert recorded.record == failed.call
    assert recorded.record.completion_tokens == 10  # estimated from what was relayed
    assert recorded.call.usage_estimated
    done, _ = await domain.jobs.complete(ADMIN, job_id, "completed", {}, "")
    assert not done.credit_applied


async def test_an_unexpected_provider_error_is_an_interrupted_stream(domain: Domain) -> None:
    domain.provider.script(MODEL_A, StreamChunk("x"), RuntimeError("driver bug"))
    _, events = await open_stream(domain)
    failed = (await drain(events))[-1]
    assert isinstance(failed, StreamFailed)
    assert failed.message == "LLM call failed: stream interrupted"


# The client goes away -----------------------------------------------------------------------


async def test_a_client_cancelled_mid_stream_closes_the_upstream(domain: Domain) -> None:
    """What a server does when its client disconnects while the handler waits for the
    provider: the task is cancelled inside the stream."""
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("x" * 40), StreamChunk("y" * 40), gate)
    job_id, events = await open_stream(domain)
    assert await anext(events) == StreamDelta("x" * 40)
    assert await anext(events) == StreamDelta("y" * 40)
    waiting = asyncio.ensure_future(anext(events))
    await gate.reached.wait()
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert domain.provider.streams()[0].closed
    [recorded] = domain.store.calls_of(job_id)
    assert recorded.record.status == "cancelled"
    assert recorded.record.completion_tokens == 20  # 80 characters relayed
    assert recorded.call.usage_estimated


async def test_a_client_that_stops_reading_ends_the_call_cancelled(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("x" * 40), StreamChunk("y" * 40), gate)
    job_id, events = await open_stream(domain)
    assert await anext(events) == StreamDelta("x" * 40)
    await gate.reached.wait()
    await events.aclose()  # type: ignore[attr-defined]
    [recorded] = domain.store.calls_of(job_id)
    assert recorded.record.status == "cancelled"
    assert recorded.record.error is None
    await eventually(lambda: domain.provider.streams()[0].closed)


async def test_a_client_that_stops_reading_is_charged_for_what_was_read(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("x" * 40), StreamChunk("y" * 40), gate)
    job_id, events = await open_stream(domain)
    assert await anext(events) == StreamDelta("x" * 40)
    # "y" is read from the provider into the backlog, never sent.
    await gate.reached.wait()
    await events.aclose()  # type: ignore[attr-defined]
    [recorded] = domain.store.calls_of(job_id)
    # relay(): "Read from the provider but not sent (the client went away): still seen."
    assert recorded.record.completion_tokens == 20
    assert domain.provider.streams()[0].closed


# The gateway ends the stream ----------------------------------------------------------------


async def test_a_suspension_ends_the_stream_with_permission_denied(
    domain: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming_module, "STREAM_CHECK_S", 0.01)
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("before"), gate, *text("after"))
    job_id, events = await open_stream(domain)
    assert await anext(events) == StreamDelta("before")
    await domain.tenancy.set_team_status(ADMIN, TEAM, "suspended", "abuse")
    got = await asyncio.wait_for(drain(events), 1)
    assert deltas(got) == []
    failed = got[-1]
    assert isinstance(failed, StreamFailed)
    assert failed.code == 7
    assert failed.message == f"Team '{TEAM}' is suspended"
    assert domain.provider.streams()[0].closed
    assert not gate.opened.is_set()
    job = domain.store.jobs[job_id]
    assert (job.status, job.error_message) == ("failed", "Team suspended: abuse")
    assert [c.record.status for c in job.calls] == ["failed"]
    assert domain.store.entries(TEAM, job_id)[-1].reason == "Job test ended: team suspended"


async def test_a_database_blip_does_not_stop_the_suspension_check(
    domain: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming_module, "STREAM_CHECK_S", 0.01)
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("before"), gate)

    async def blip() -> None:
        raise StorageUnavailable("Database unavailable, retry later")

    _, events = await open_stream(domain)
    assert await anext(events) == StreamDelta("before")
    domain.store.before("team_state", blip)
    await asyncio.sleep(0.05)  # five checks
    await domain.tenancy.set_team_status(ADMIN, TEAM, "suspended")
    waiting = asyncio.ensure_future(anext(events))
    done, _ = await asyncio.wait([waiting], timeout=0.5)
    if not done:
        gate.open()  # let the provider finish, so that the stream ends either way
    failed = await waiting
    await drain(events)
    assert isinstance(failed, StreamFailed)
    assert failed.code == 7


async def test_shutting_down_ends_the_stream_with_unavailable(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("before"), gate, *text("after"))
    job_id, events = await open_stream(domain)
    assert await anext(events) == StreamDelta("before")
    domain.jobs.draining.set()
    failed = await asyncio.wait_for(anext(events), 1)
    assert isinstance(failed, StreamFailed)
    assert failed.code == 14
    assert failed.message == "Server shutting down; the stream was cut, retry"
    assert await drain(events) == []
    assert domain.provider.streams()[0].closed
    [recorded] = domain.store.calls_of(job_id)
    assert recorded.record.status == "failed"
    # The job stays open: the client may complete it (or retry the call elsewhere).
    assert domain.store.jobs[job_id].status == "in_progress"


async def test_what_was_read_before_a_stop_is_still_sent(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, StreamChunk("a"), StreamChunk("b"), gate)
    _, events = await open_stream(domain)
    assert await anext(events) == StreamDelta("a")
    await gate.reached.wait()
    domain.jobs.draining.set()
    got = await drain(events)
    assert deltas(got) == ["b"]
    assert isinstance(got[-1], StreamFailed)


# Deadlines and cancellation before the first chunk ------------------------------------------


async def test_a_deadline_before_the_first_chunk_times_the_attempt_out(domain: Domain) -> None:
    domain.provider.script(MODEL_A, 5.0, *text("late"))
    job = await domain.new_job()
    events = await domain.jobs.llm_call_stream(ADMIN, job.job_id, call(), time.monotonic() + 0.2)
    with pytest.raises(DeadlineExceeded):
        await anext(events)
    [recorded] = domain.store.calls_of(job.job_id)
    assert recorded.record.status == "failed"
    assert domain.provider.streams()[0].closed


async def test_a_stream_cancelled_before_its_first_chunk_is_recorded(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, gate, *text("never"))
    job_id, events = await open_stream(domain)
    waiting = asyncio.ensure_future(anext(events))
    await gate.reached.wait()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert domain.provider.streams()[0].closed
    assert [c.record.status for c in domain.store.calls_of(job_id)] == ["cancelled"]


async def test_a_stream_past_its_deadline_is_recorded(domain: Domain) -> None:
    domain.provider.script(MODEL_A, *text("never"))
    job = await domain.new_job()
    events = await domain.jobs.llm_call_stream(ADMIN, job.job_id, call(), time.monotonic() - 1)
    with pytest.raises(DeadlineExceeded):
        await anext(events)
    assert domain.provider.log == []
    assert [c.record.error for c in domain.store.calls_of(job.job_id)] == ["Deadline exceeded"]
