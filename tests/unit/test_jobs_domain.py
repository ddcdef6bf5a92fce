"""JobsService: create (and why a reservation was refused), complete (charge or release),
expiry, and unary LLM calls (fallbacks, deadlines, cancellation) on the in-memory ports."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from saas_llm.v1.reasons import Reason
from service.domain.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InsufficientCredits,
    LlmCallFailed,
    NotFound,
    PermissionDenied,
)
from service.domain.models import Credits
from service.domain.principal import ADMIN
from service.providers.base import ChatResult, ModelSpec, StreamChunk, TokenUsage
from tests.support.scripted import Gate, fail, text
from tests.unit.conftest import GROUP, MODEL_A, MODEL_B, TEAM, TEAM_KEY, Domain, call

# Create ---------------------------------------------------------------------------------


async def test_create_reserves_one_credit(domain: Domain) -> None:
    job = await domain.new_job(metadata={"k": "v"})
    assert job.status == "pending"
    assert domain.store.credits(TEAM).reserved == 1
    assert domain.store.credits(TEAM).remaining == 9
    [reservation] = domain.store.entries(TEAM, job.job_id)
    assert reservation.transaction_type == "reservation"
    assert reservation.reason == "Job test created"
    assert reservation.balance_after == 9
    stored, _ = await domain.jobs.get(ADMIN, job.job_id)
    assert stored.metadata == {"k": "v"}


async def test_create_for_a_missing_team_is_team_not_found(domain: Domain) -> None:
    with pytest.raises(NotFound) as e:
        await domain.new_job(team_id="nobody")
    assert e.value.reason == Reason.TEAM_NOT_FOUND
    assert e.value.message == "Team 'nobody' not found"
    assert domain.store.jobs == {}


async def test_create_for_a_suspended_team_is_team_suspended(domain: Domain) -> None:
    await domain.tenancy.set_team_status(ADMIN, TEAM, "suspended")
    with pytest.raises(FailedPrecondition) as e:
        await domain.new_job()
    assert e.value.reason == Reason.TEAM_SUSPENDED
    assert domain.store.credits(TEAM).reserved == 0


async def test_create_without_credit_says_what_is_missing(domain: Domain) -> None:
    await domain.add_team("poor", credits=0)
    with pytest.raises(InsufficientCredits) as e:
        await domain.new_job(team_id="poor")
    assert e.value.message == "Insufficient credits. Required: 1, Available: 0"
    assert e.value.reason == Reason.INSUFFICIENT_CREDITS
    assert e.value.metadata == {"required": "1", "available": "0"}


async def test_the_last_credit_goes_to_one_job_only(domain: Domain) -> None:
    await domain.add_team("one", credits=1)
    results = await asyncio.gather(
        domain.new_job(team_id="one"), domain.new_job(team_id="one"), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["InsufficientCredits", "Job"]
    assert domain.store.credits("one").remaining == 0


async def test_a_team_key_creates_only_for_its_team(domain: Domain) -> None:
    await domain.add_team("other", credits=1)
    with pytest.raises(PermissionDenied) as e:
        await domain.jobs.create(
            TEAM_KEY, team_id="other", user_id="", job_type="t", metadata={}, request_id=""
        )
    assert e.value.reason == Reason.TEAM_MISMATCH
    assert domain.store.credits("other").reserved == 0


async def test_create_with_a_request_id_replays_the_first_job(domain: Domain) -> None:
    first = await domain.new_job(request_id="r-1", metadata={"a": 1})
    again, replayed = await domain.jobs.create(
        ADMIN, team_id=TEAM, user_id="u1", job_type="test", metadata={"a": 1}, request_id="r-1"
    )
    assert replayed
    assert again.job_id == first.job_id
    assert domain.store.credits(TEAM).reserved == 1
    assert domain.store.ops["create_job"] == 1


async def test_a_request_id_reused_with_another_body_is_refused(domain: Domain) -> None:
    await domain.new_job(request_id="r-1", metadata={"a": 1})
    with pytest.raises(AlreadyExists) as e:
        await domain.new_job(request_id="r-1", metadata={"a": 2})
    assert e.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    assert len(domain.store.jobs) == 1


async def test_request_ids_are_per_team(domain: Domain) -> None:
    await domain.add_team("t2", credits=1)
    a = await domain.new_job(request_id="same")
    b = await domain.new_job(team_id="t2", request_id="same")
    assert a.job_id != b.job_id


async def test_a_concurrent_retry_that_won_is_replayed(domain: Domain) -> None:
    """The retry's reservation is refused because the first request took the request_id
    between the retry's lookup and its write: the retry answers with the first job."""
    winner: list[str] = []

    async def first_request_lands() -> None:
        job = await domain.new_job(request_id="r-race")
        winner.append(job.job_id)

    domain.store.before("create_job", first_request_lands)
    job, replayed = await domain.jobs.create(
        ADMIN, team_id=TEAM, user_id="u1", job_type="test", metadata={}, request_id="r-race"
    )
    assert replayed
    assert [job.job_id] == winner
    assert domain.store.credits(TEAM).reserved == 1


async def test_a_concurrent_request_with_the_same_id_and_another_body_is_refused(
    domain: Domain,
) -> None:
    async def other_body_lands() -> None:
        await domain.new_job(request_id="r-race", metadata={"other": True})

    domain.store.before("create_job", other_body_lands)
    with pytest.raises(AlreadyExists) as e:
        await domain.new_job(request_id="r-race")
    assert e.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    assert len(domain.store.jobs) == 1


async def test_credits_added_between_the_refusal_and_its_diagnosis_are_used(
    domain: Domain,
) -> None:
    await domain.add_team("poor", credits=0)

    async def top_up() -> None:
        await domain.credits.add(ADMIN, "poor", 1, "top-up", {}, "")

    domain.store.before("team_state", top_up)
    job = await domain.new_job(team_id="poor")
    assert job.status == "pending"
    assert domain.store.ops["create_job"] == 2
    assert domain.store.credits("poor").remaining == 0


async def test_create_gives_up_when_the_team_keeps_changing(domain: Domain) -> None:
    """Every reservation is refused and every diagnosis finds a team that could pay: after the
    bounded attempts the client gets a documented CreateJob error (FAILED_PRECONDITION), not a
    503 that the clients would retry into the same churn."""

    async def suspend() -> None:
        await domain.tenancy.set_team_status(ADMIN, TEAM, "suspended")

    async def resume() -> None:
        await domain.tenancy.set_team_status(ADMIN, TEAM, "active")

    domain.store.before("create_job", suspend, times=3)
    domain.store.before("team_state", resume, times=3)
    with pytest.raises(FailedPrecondition) as e:
        await domain.new_job()
    assert e.value.reason == Reason.INSUFFICIENT_CREDITS
    assert domain.store.ops["create_job"] == 3
    assert domain.store.jobs == {}


async def test_create_under_credit_churn_is_insufficient_credits(domain: Domain) -> None:
    """The team's last credit is taken by another job just before each reservation, and that
    job ends (releasing it) before the refusal is diagnosed: the writer writes nothing every
    time while each diagnosis says the team could pay. After the bounded attempts the answer
    is the documented INSUFFICIENT_CREDITS (as of the refused writes), never UNAVAILABLE."""
    await domain.add_team("busy", credits=1)
    holders: list[str] = []
    nested = False

    async def another_job_takes_the_credit() -> None:
        nonlocal nested
        if nested:  # the other job's own create_job
            return
        nested = True
        try:
            holders.append((await domain.new_job(team_id="busy")).job_id)
        finally:
            nested = False

    async def it_ends() -> None:
        await domain.jobs.complete(ADMIN, holders[-1], "failed", {}, "churn")

    # Each outer attempt's hook also sees the other job's nested create_job: twice as many.
    domain.store.before("create_job", another_job_takes_the_credit, times=6)
    domain.store.before("team_state", it_ends, times=3)
    with pytest.raises(InsufficientCredits) as e:
        await domain.new_job(team_id="busy")
    assert e.value.reason == Reason.INSUFFICIENT_CREDITS
    assert e.value.metadata == {"required": "1", "available": "0"}
    assert len(holders) == 3
    assert domain.store.ops["create_job"] == 6
    # Nothing leaked: the three other jobs released what they held, the refused one held none.
    assert domain.store.credits("busy").reserved == 0
    assert domain.store.credits("busy").remaining == 1


# Complete -------------------------------------------------------------------------------


async def test_complete_charges_the_reserved_credit(domain: Domain) -> None:
    domain.provider.script(MODEL_A, *text("fine"))
    job = await domain.new_job()
    await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    done, costs = await domain.jobs.complete(ADMIN, job.job_id, "completed", {"r": 1}, "")
    assert done.status == "completed"
    assert done.credit_applied
    assert done.result_metadata == {"r": 1}
    assert costs.credit_applied
    assert costs.credits_remaining == 9
    assert (costs.total_calls, costs.successful_calls, costs.failed_calls) == (1, 1, 0)
    assert domain.store.credits(TEAM) == Credits(allocated=10, used=1, reserved=0)
    deduction = domain.store.entries(TEAM, job.job_id)[-1]
    assert deduction.transaction_type == "deduction"
    assert deduction.reason == "Job test completed successfully"


async def test_complete_without_any_call_charges(domain: Domain) -> None:
    job = await domain.new_job()
    done, costs = await domain.jobs.complete(ADMIN, job.job_id, "completed", {}, "")
    assert done.credit_applied
    assert costs.total_calls == 0
    assert domain.store.credits(TEAM).used == 1


async def test_a_failed_call_releases_the_credit_of_a_completed_job(domain: Domain) -> None:
    domain.provider.script(MODEL_A, fail(400))
    job = await domain.new_job()
    with pytest.raises(LlmCallFailed):
        await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    done, costs = await domain.jobs.complete(ADMIN, job.job_id, "completed", {}, "")
    assert done.status == "completed"
    assert not done.credit_applied
    assert costs.failed_calls == 1
    assert costs.credits_remaining == 10
    release = domain.store.entries(TEAM, job.job_id)[-1]
    assert (release.transaction_type, release.reason) == ("release", "Job test had failed calls")


async def test_a_failed_call_then_a_good_one_still_releases(domain: Domain) -> None:
    domain.provider.script(MODEL_A, fail(400))
    job = await domain.new_job()
    with pytest.raises(LlmCallFailed):
        await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    domain.provider.script(MODEL_A, *text("ok"))
    await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    done, _ = await domain.jobs.complete(ADMIN, job.job_id, "completed", {}, "")
    assert not done.credit_applied
    assert domain.store.credits(TEAM).used == 0


async def test_complete_as_failed_releases(domain: Domain) -> None:
    job = await domain.new_job()
    done, costs = await domain.jobs.complete(ADMIN, job.job_id, "failed", {}, "gave up")
    assert done.status == "failed"
    assert done.error_message == "gave up"
    assert not costs.credit_applied
    release = domain.store.entries(TEAM, job.job_id)[-1]
    assert (release.transaction_type, release.reason) == ("release", "Job test failed")
    assert domain.store.credits(TEAM).remaining == 10


@pytest.mark.parametrize("status", ["completed", "failed"])
async def test_completing_again_with_the_same_status_replays(domain: Domain, status: str) -> None:
    job = await domain.new_job()
    first, first_costs = await domain.jobs.complete(ADMIN, job.job_id, status, {"n": 1}, "")
    rows = len(domain.store.ledger)
    again, again_costs = await domain.jobs.complete(ADMIN, job.job_id, status, {"n": 2}, "")
    assert again.completed_at == first.completed_at
    assert again.result_metadata == {"n": 1}
    assert again_costs == first_costs
    assert len(domain.store.ledger) == rows


async def test_completing_with_another_status_is_refused(domain: Domain) -> None:
    job = await domain.new_job()
    await domain.jobs.complete(ADMIN, job.job_id, "completed", {}, "")
    with pytest.raises(FailedPrecondition) as e:
        await domain.jobs.complete(ADMIN, job.job_id, "failed", {}, "")
    assert e.value.reason == Reason.JOB_ALREADY_COMPLETED
    assert e.value.message == f"Job '{job.job_id}' is already completed"
    assert domain.store.jobs[job.job_id].status == "completed"


async def test_concurrent_completes_settle_once(domain: Domain) -> None:
    job = await domain.new_job()
    results = await asyncio.gather(
        domain.jobs.settle(job.job_id, "completed", {}, None),
        domain.jobs.settle(job.job_id, "completed", {}, None),
    )
    assert sorted(replayed for _, replayed in results) == [False, True]
    assert domain.store.credits(TEAM).used == 1


async def test_complete_of_an_expired_job_is_job_not_open(domain: Domain) -> None:
    job = await domain.new_job()
    expired = await domain.store.expire_stale_jobs(datetime.now(UTC) + timedelta(seconds=1))
    assert expired == 1
    expiry = domain.store.entries(TEAM, job.job_id)[-1]
    assert (expiry.transaction_type, expiry.reason) == ("expiry", "Job test expired")
    with pytest.raises(FailedPrecondition) as e:
        await domain.jobs.complete(ADMIN, job.job_id, "completed", {}, "")
    assert e.value.reason == Reason.JOB_NOT_OPEN
    with pytest.raises(FailedPrecondition) as e:
        await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    assert e.value.reason == Reason.JOB_NOT_OPEN
    assert domain.store.credits(TEAM).remaining == 10


async def test_a_call_keeps_its_job_from_expiring(domain: Domain) -> None:
    domain.provider.script(MODEL_A, *text("ok"))
    idle = await domain.new_job()
    busy = await domain.new_job()
    cutoff = datetime.now(UTC) + timedelta(microseconds=1)
    await asyncio.sleep(0.002)
    await domain.jobs.llm_call(ADMIN, busy.job_id, call(), None)
    assert await domain.store.expire_stale_jobs(cutoff) == 1
    assert domain.store.jobs[idle.job_id].status == "expired"
    assert domain.store.jobs[busy.job_id].status == "in_progress"


async def test_another_teams_job_is_not_found(domain: Domain) -> None:
    await domain.add_team("t2", credits=1)
    job = await domain.new_job(team_id="t2")
    with pytest.raises(NotFound) as e:
        await domain.jobs.complete(TEAM_KEY, job.job_id, "completed", {}, "")
    assert e.value.reason == Reason.JOB_NOT_FOUND
    with pytest.raises(NotFound):
        await domain.jobs.get(TEAM_KEY, job.job_id)
    assert domain.store.jobs[job.job_id].status == "pending"


async def test_metadata_changes_only_while_the_job_is_open(domain: Domain) -> None:
    job = await domain.new_job(metadata={"keep": 1, "drop": 2})
    updated, _ = await domain.jobs.update_metadata(ADMIN, job.job_id, {"drop": None, "new": 3})
    assert updated.metadata == {"keep": 1, "new": 3}
    await domain.jobs.complete(ADMIN, job.job_id, "failed", {}, "")
    with pytest.raises(FailedPrecondition) as e:
        await domain.jobs.update_metadata(ADMIN, job.job_id, {"late": 1})
    assert e.value.reason == Reason.JOB_NOT_OPEN
    assert domain.store.jobs[job.job_id].metadata == {"keep": 1, "new": 3}


async def test_list_shows_each_job_with_its_settlement(domain: Domain) -> None:
    a = await domain.new_job()
    b = await domain.new_job()
    await domain.jobs.complete(ADMIN, a.job_id, "completed", {}, "")
    total, page = await domain.jobs.list_for_team(ADMIN, TEAM, "", 10, 0)
    assert total == 2
    assert [j.job_id for j, _ in page] == [b.job_id, a.job_id]  # newest first
    costs = {j.job_id: c for j, c in page}
    assert costs[a.job_id].credit_applied
    assert costs[a.job_id].credits_remaining == 8  # when it completed, b still held 1
    assert costs[b.job_id].credits_remaining == 8  # now
    total, page = await domain.jobs.list_for_team(ADMIN, TEAM, "pending", 10, 0)
    assert (total, [j.job_id for j, _ in page]) == (1, [b.job_id])


# Unary LLM calls ----------------------------------------------------------------------------


async def test_llm_call_records_the_call_and_starts_the_job(domain: Domain) -> None:
    usage = TokenUsage(7, 3)
    domain.provider.script(MODEL_A, ChatResult("an answer", "stop", usage))
    job = await domain.new_job()
    answer = await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    assert answer.result.content == "an answer"
    assert answer.call.status == "success"
    assert (answer.call.prompt_tokens, answer.call.completion_tokens) == (7, 3)
    [recorded] = domain.store.calls_of(job.job_id)
    assert recorded.record == answer.call
    assert recorded.call.model == MODEL_A
    assert not recorded.call.streamed
    assert domain.store.jobs[job.job_id].status == "in_progress"
    assert domain.store.jobs[job.job_id].total_tokens == 10
    assert domain.provider.tried() == [MODEL_A]


async def test_llm_call_on_the_simulator(domain: Domain) -> None:
    await domain.add_group("sim", ModelSpec("simulator/unit", 0, {"response": "two words"}))
    await domain.tenancy.assign_model_groups(ADMIN, TEAM, [GROUP, "sim"])
    job = await domain.new_job()
    answer = await domain.jobs.llm_call(ADMIN, job.job_id, call("sim", "a b c"), None)
    assert answer.result.content == "two words"
    assert (answer.call.prompt_tokens, answer.call.completion_tokens) == (3, 2)
    assert answer.call.model_group == "sim"


async def test_calls_are_priced_by_their_model(domain: Domain) -> None:
    prices = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
    await domain.add_group("priced", ModelSpec(MODEL_A, 0, prices))
    await domain.tenancy.assign_model_groups(ADMIN, TEAM, ["priced"])
    domain.provider.script(MODEL_A, ChatResult("ok", "stop", TokenUsage(100, 10)))
    job = await domain.new_job()
    answer = await domain.jobs.llm_call(ADMIN, job.job_id, call("priced"), None)
    assert answer.call.cost_usd == pytest.approx(0.12)
    domain.provider.script(MODEL_A, fail(400))
    with pytest.raises(LlmCallFailed):
        await domain.jobs.llm_call(ADMIN, job.job_id, call("priced"), None)
    _, costs = await domain.jobs.get(ADMIN, job.job_id)
    # A failed call that used no tokens cost nothing (priced at 0, not unpriced).
    assert costs.total_cost_usd == pytest.approx(0.12)
    assert costs.pricing == "priced"
    assert domain.store.jobs[job.job_id].total_cost_usd == pytest.approx(0.12)


async def test_an_unpriced_model_is_not_free(domain: Domain) -> None:
    domain.provider.script(MODEL_A, ChatResult("ok", "stop", TokenUsage(100, 10)))
    job = await domain.new_job()
    answer = await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    assert answer.call.cost_usd is None
    _, costs = await domain.jobs.get(ADMIN, job.job_id)
    assert costs.pricing == "unpriced"


async def test_the_first_group_serves_a_call_without_model_group(domain: Domain) -> None:
    domain.provider.script(MODEL_A, *text("ok"))
    job = await domain.new_job()
    answer = await domain.jobs.llm_call(ADMIN, job.job_id, call(group=""), None)
    assert answer.call.model_group == GROUP


async def test_a_group_the_team_lacks_is_denied_and_not_recorded(domain: Domain) -> None:
    await domain.add_group("elsewhere", MODEL_B)
    job = await domain.new_job()
    with pytest.raises(PermissionDenied) as e:
        await domain.jobs.llm_call(ADMIN, job.job_id, call("elsewhere"), None)
    assert e.value.reason == Reason.MODEL_GROUP_ACCESS_DENIED
    with pytest.raises(NotFound) as e2:
        await domain.jobs.llm_call(ADMIN, job.job_id, call("nowhere"), None)
    assert e2.value.reason == Reason.MODEL_GROUP_NOT_FOUND
    assert domain.store.calls_of(job.job_id) == []
    assert domain.provider.log == []


async def test_a_retryable_failure_falls_back_to_the_next_model(domain: Domain) -> None:
    domain.provider.script(MODEL_A, fail(503))
    domain.provider.script(MODEL_B, *text("from b"))
    job = await domain.new_job()
    answer = await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    assert answer.result.content == "from b"
    assert domain.provider.tried() == [MODEL_A, MODEL_B]
    [recorded] = domain.store.calls_of(job.job_id)
    assert recorded.call.model == MODEL_B
    assert recorded.record.status == "success"
    assert [a["model"] for a in recorded.call.attempts] == [MODEL_A, MODEL_B]
    assert recorded.call.attempts[0]["error"] == "Scripted provider error (HTTP 503)"
    assert recorded.call.attempts[1]["error"] is None


async def test_a_model_timeout_falls_back(domain: Domain) -> None:
    await domain.add_group("slow", ModelSpec(MODEL_A, 0, {"timeout": 0.05}), ModelSpec(MODEL_B, 1))
    await domain.tenancy.assign_model_groups(ADMIN, TEAM, ["slow"])
    domain.provider.script(MODEL_A, 5.0, *text("too late"))
    domain.provider.script(MODEL_B, *text("in time"))
    job = await domain.new_job()
    started = time.monotonic()
    answer = await domain.jobs.llm_call(ADMIN, job.job_id, call("slow"), None)
    assert answer.result.content == "in time"
    assert time.monotonic() - started < 1
    assert domain.provider.log[0].timeout == 0.05


async def test_a_non_retryable_failure_does_not_fall_back(domain: Domain) -> None:
    domain.provider.script(MODEL_A, fail(400))
    domain.provider.script(MODEL_B, *text("never"))
    job = await domain.new_job()
    with pytest.raises(LlmCallFailed) as e:
        await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    assert e.value.message == "LLM call failed: Scripted provider error (HTTP 400)"
    assert e.value.reason == Reason.LLM_CALL_FAILED
    # What a client sees of the attempts: no model names.
    assert orjson.loads(e.value.metadata["attempts"]) == [
        {"attempt": 1, "error": "Scripted provider error (HTTP 400)", "latency_ms": 0}
    ]
    assert domain.provider.tried() == [MODEL_A]
    [recorded] = domain.store.calls_of(job.job_id)
    assert recorded.record.status == "failed"
    assert recorded.record.error == "Scripted provider error (HTTP 400)"


async def test_when_every_model_fails_the_last_error_is_reported(domain: Domain) -> None:
    domain.provider.script(MODEL_A, fail(503))
    domain.provider.script(MODEL_B, fail(429))
    job = await domain.new_job()
    with pytest.raises(LlmCallFailed) as e:
        await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    assert e.value.message == "LLM call failed: Scripted provider error (HTTP 429)"
    assert len(orjson.loads(e.value.metadata["attempts"])) == 2
    [recorded] = domain.store.calls_of(job.job_id)
    assert recorded.call.model == MODEL_B
    assert recorded.record.status == "failed"


async def test_a_deadline_that_runs_out_during_the_call_is_recorded(domain: Domain) -> None:
    domain.provider.script(MODEL_A, 5.0, *text("too late"))
    domain.provider.script(MODEL_B, *text("no time left for me"))
    job = await domain.new_job()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as e:
        await domain.jobs.llm_call(ADMIN, job.job_id, call(), started + 0.2)
    assert time.monotonic() - started < 0.5
    assert e.value.message == "Deadline exceeded: Provider timed out (scripted)"
    # The attempt's timeout kept back the margin needed to record and answer.
    assert 0.1 < domain.provider.log[0].timeout <= 0.15
    assert domain.provider.tried() == [MODEL_A]
    [recorded] = domain.store.calls_of(job.job_id)
    assert recorded.record.status == "failed"
    assert recorded.record.error == "Provider timed out (scripted)"
    done, _ = await domain.jobs.complete(ADMIN, job.job_id, "completed", {}, "")
    assert not done.credit_applied


async def test_a_deadline_already_past_is_recorded_without_calling(domain: Domain) -> None:
    domain.provider.script(MODEL_A, *text("never"))
    job = await domain.new_job()
    with pytest.raises(DeadlineExceeded):
        await domain.jobs.llm_call(ADMIN, job.job_id, call(), time.monotonic() - 1)
    assert domain.provider.log == []
    [recorded] = domain.store.calls_of(job.job_id)
    assert (recorded.record.status, recorded.record.error) == ("failed", "Deadline exceeded")


async def test_a_cancelled_call_is_recorded_as_cancelled(domain: Domain) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, gate, *text("never sent"))
    job = await domain.new_job()
    request = call(content="x" * 400)
    task = asyncio.create_task(domain.jobs.llm_call(ADMIN, job.job_id, request, None))
    await gate.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert domain.provider.log[0].cancelled
    [recorded] = domain.store.calls_of(job.job_id)
    assert recorded.record.status == "cancelled"
    assert recorded.record.error == "client cancelled the call"
    # The prompt it was sent, estimated; nothing came back.
    estimate = len(orjson.dumps(request.request.messages)) // 4
    assert (recorded.record.prompt_tokens, recorded.record.completion_tokens) == (estimate, 0)
    assert recorded.call.usage_estimated
    # A cancelled call is not a failed one: completing the job charges it.
    done, _ = await domain.jobs.complete(ADMIN, job.job_id, "completed", {}, "")
    assert done.credit_applied


async def test_a_call_still_running_when_the_job_completes_does_not_change_it(
    domain: Domain,
) -> None:
    gate = Gate()
    domain.provider.script(MODEL_A, gate, fail(400))
    job = await domain.new_job()
    task = asyncio.create_task(domain.jobs.llm_call(ADMIN, job.job_id, call(), None))
    await gate.reached.wait()
    done, costs = await domain.jobs.complete(ADMIN, job.job_id, "completed", {}, "")
    assert done.credit_applied
    gate.open()
    with pytest.raises(LlmCallFailed):
        await task
    # Recorded (its tokens count in usage) but outside the final summary and charge.
    assert len(domain.store.calls_of(job.job_id)) == 1
    again, again_costs = await domain.jobs.get(ADMIN, job.job_id)
    assert again.status == "completed"
    assert again.billed_calls == []
    assert again_costs == costs


async def test_streamed_chunks_make_a_unary_answer(domain: Domain) -> None:
    """The scripted provider answers a unary call with its stream script (tests rely on it)."""
    domain.provider.script(MODEL_A, StreamChunk("a"), StreamChunk(" b"), *text(" c"))
    job = await domain.new_job()
    answer = await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    assert answer.result.content == "a b c"
