"""The in-memory ports themselves (tests/support/memory.py): the storage semantics the domain
tests rely on, and an invariant check that does catch a broken ledger."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from service.domain.ports import (
    ConstraintViolation,
    JobClaim,
    NewAddition,
    NewCall,
    NewJob,
    NewTeam,
    UnknownReference,
)
from tests.support.memory import MemoryStore
from tests.unit.conftest import GROUP, TEAM, Domain


def new_job(job_id: str, team_id: str = TEAM, request_id: str | None = None) -> NewJob:
    return NewJob(
        job_id=job_id,
        team_id=team_id,
        user_id="u",
        job_type="t",
        metadata={},
        request_id=request_id,
        request_hash=None,
        created_at=datetime.now(UTC),
    )


def claim(job_id: str, status: str = "completed") -> JobClaim:
    return JobClaim(job_id, status, {}, None, None)


def new_call(job_id: str, status: str = "success", tokens: int = 3) -> NewCall:
    return NewCall(
        job_id=job_id,
        team_id=TEAM,
        model_group=GROUP,
        model="m",
        purpose="",
        status=status,
        streamed=False,
        prompt_tokens=tokens,
        completion_tokens=0,
        usage_estimated=False,
        cost_usd=0.5,
        latency_ms=1,
        ttft_ms=None,
        error=None,
        attempts=[],
    )


def addition(amount: int, request_id: str | None = None, max_total: int = 100) -> NewAddition:
    return NewAddition(TEAM, amount, "", {}, request_id, None, max_total)


async def test_a_refused_reservation_writes_nothing(domain: Domain) -> None:
    store = domain.store
    assert await store.create_job(new_job("j1", request_id="r"))
    rows = len(store.ledger)
    assert not await store.create_job(new_job("j2", team_id="nobody"))
    assert not await store.create_job(new_job("j3", request_id="r"))
    assert not await store.create_job(new_job("j1"))
    store.teams[TEAM].status = "suspended"
    assert not await store.create_job(new_job("j4"))
    assert set(store.jobs) == {"j1"}
    assert len(store.ledger) == rows
    assert store.credits(TEAM).reserved == 1


async def test_the_last_credit_is_reserved_once(domain: Domain) -> None:
    store = domain.store
    for i in range(10):
        assert await store.create_job(new_job(f"j{i}"))
    assert not await store.create_job(new_job("one-too-many"))
    assert store.credits(TEAM).remaining == 0


async def test_complete_charges_only_without_a_failed_call(domain: Domain) -> None:
    store = domain.store
    for job_id in ("clean", "failed-call", "failed"):
        await store.create_job(new_job(job_id))
    await store.record_call(new_call("clean"))
    await store.record_call(new_call("failed-call", status="failed"))
    clean = await store.complete_job(claim("clean"))
    bad = await store.complete_job(claim("failed-call"))
    failed = await store.complete_job(claim("failed", "failed"))
    assert clean is not None and bad is not None and failed is not None
    assert [clean.credit_applied, bad.credit_applied, failed.credit_applied] == [
        True,
        False,
        False,
    ]
    assert clean.credits_remaining_after == 7  # three reserved, then one of them charged
    assert store.credits(TEAM).used == 1
    assert await store.complete_job(claim("clean")) is None
    assert await store.complete_job(claim("missing")) is None


async def test_a_call_after_the_job_ended_counts_but_changes_nothing_else(
    domain: Domain,
) -> None:
    store = domain.store
    await store.create_job(new_job("j"))
    await store.record_call(new_call("j"))
    assert store.jobs["j"].status == "in_progress"
    ended = await store.complete_job(claim("j"))
    assert ended is not None and ended.completed_at is not None
    late = await store.record_call(new_call("j", status="failed", tokens=5))
    assert late.created_at > ended.completed_at
    row = store.jobs["j"]
    assert (row.status, row.credit_applied, row.total_tokens) == ("completed", True, 8)
    assert row.total_cost_usd == 1.0
    with pytest.raises(ConstraintViolation):
        await store.record_call(new_call("missing"))


async def test_expiry_takes_only_idle_open_jobs(domain: Domain) -> None:
    store = domain.store
    await store.create_job(new_job("idle"))
    await store.create_job(new_job("done"))
    await store.complete_job(claim("done"))
    cutoff = datetime.now(UTC) + timedelta(seconds=1)
    assert await store.expire_stale_jobs(cutoff - timedelta(hours=1)) == 0
    assert await store.expire_stale_jobs(cutoff) == 1
    assert store.jobs["idle"].status == "expired"
    assert store.entries(TEAM, "idle")[-1].transaction_type == "expiry"
    assert await store.expire_stale_jobs(cutoff) == 0


async def test_additions_respect_the_cap_and_their_request_id(domain: Domain) -> None:
    store = domain.store
    assert await store.add_credits(addition(90, max_total=100)) is not None
    assert await store.add_credits(addition(1, max_total=100)) is None
    assert await store.add_credits(addition(5, request_id="r", max_total=200)) is not None
    with pytest.raises(ConstraintViolation):
        await store.add_credits(addition(5, request_id="r", max_total=200))
    assert store.credits(TEAM).allocated == 105


async def test_references_and_ids_are_checked(domain: Domain) -> None:
    store = domain.store

    team = NewTeam("org", "t9", "", [GROUP], [], 0, {}, key_hash="h9", key_prefix="sk-")
    for wrong, kind in [
        (replace(team, organization_id="x"), "organization"),
        (replace(team, group_names=["x"]), "model_group"),
        (replace(team, access_group_names=["x"]), "access_group"),
    ]:
        with pytest.raises(UnknownReference) as e:
            await store.create_team(wrong)
        assert e.value.kind == kind
    with pytest.raises(ConstraintViolation):
        await store.create_team(replace(team, team_id=TEAM))
    with pytest.raises(ConstraintViolation):
        await store.create_team(replace(team, key_hash=store.teams[TEAM].key_hash))
    with pytest.raises(ConstraintViolation):
        await store.create_organization("org", "again", {})
    assert "t9" not in store.teams


async def test_a_hook_can_fail_an_operation_before_it_writes(domain: Domain) -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    domain.store.before("create_job", boom)
    with pytest.raises(RuntimeError):
        await domain.store.create_job(new_job("j"))
    assert domain.store.jobs == {}
    assert await domain.store.create_job(new_job("j"))


@pytest.mark.parametrize(
    "corrupt",
    ["used", "reserved", "balance_after", "orphan reservation", "job without reservation"],
)
async def test_the_invariant_check_catches_a_broken_ledger(corrupt: str) -> None:
    store = MemoryStore()
    await store.create_organization("org", "Org", {})
    await store.create_model_group(GROUP, GROUP, "", [], {})
    await store.create_team(
        NewTeam("org", TEAM, "", [GROUP], [], 10, {}, key_hash="h", key_prefix="sk-")
    )
    await store.create_job(new_job("j1"))
    await store.create_job(new_job("j2"))
    await store.complete_job(claim("j1"))
    assert store.violations() == []
    if corrupt == "used":
        store.teams[TEAM].used += 1
    elif corrupt == "reserved":
        store.jobs["j2"].status = "failed"
    elif corrupt == "balance_after":
        last = store.ledger[-1]
        store.ledger[-1] = replace(last, entry=replace(last.entry, balance_after=0))
    elif corrupt == "orphan reservation":
        del store.jobs["j2"]
    else:
        store.ledger = [s for s in store.ledger if s.entry.job_id != "j2"]
        store.teams[TEAM].reserved = 0
    assert store.violations() != []
    with pytest.raises(AssertionError):
        store.check_ledger()
