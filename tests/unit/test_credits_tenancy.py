"""CreditsService and TenancyService on the in-memory ports: additions and their replay, the
total cap, teams and their groups, suspension."""

from __future__ import annotations

import pytest

from saas_llm.v1.reasons import Reason
from service.domain import credits as credits_module
from service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InsufficientCredits,
    NotFound,
    PermissionDenied,
)
from service.domain.keys import hash_key
from service.domain.models import Credits
from service.domain.principal import ADMIN
from service.domain.usage import UsageService
from service.providers.base import ModelSpec
from tests.support.scripted import text
from tests.unit.conftest import GROUP, MODEL_A, MODEL_B, TEAM, TEAM_KEY, Domain, call

# Credits ------------------------------------------------------------------------------------


async def test_added_credits_can_be_spent(domain: Domain) -> None:
    await domain.add_team("poor", credits=0)
    with pytest.raises(InsufficientCredits):
        await domain.new_job(team_id="poor")
    entry, credits = await domain.credits.add(ADMIN, "poor", 2, "", {"po": "1"}, "")
    assert credits == Credits(allocated=2, used=0, reserved=0)
    assert (entry.transaction_type, entry.reason, entry.balance_after) == (
        "addition",
        "Credits added",
        2,
    )
    await domain.new_job(team_id="poor")
    assert (await domain.credits.balance(ADMIN, "poor")).remaining == 1


async def test_an_addition_with_a_request_id_is_applied_once(domain: Domain) -> None:
    first, _ = await domain.credits.add(ADMIN, TEAM, 5, "grant", {}, "add-1")
    again, credits = await domain.credits.add(ADMIN, TEAM, 5, "grant", {}, "add-1")
    assert again == first
    assert credits.allocated == 15
    with pytest.raises(AlreadyExists) as e:
        await domain.credits.add(ADMIN, TEAM, 6, "grant", {}, "add-1")
    assert e.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    assert domain.store.credits(TEAM).allocated == 15


async def test_a_concurrent_addition_with_the_same_request_id_is_replayed(domain: Domain) -> None:
    landed = []

    async def the_first_request_lands() -> None:
        landed.append(await domain.credits.add(ADMIN, TEAM, 5, "grant", {}, "add-1"))

    domain.store.before("add_credits", the_first_request_lands)
    entry, credits = await domain.credits.add(ADMIN, TEAM, 5, "grant", {}, "add-1")
    assert (entry, credits) == landed[0]
    assert domain.store.credits(TEAM).allocated == 15


async def test_a_concurrent_addition_with_another_body_is_refused(domain: Domain) -> None:
    async def another_body_lands() -> None:
        await domain.credits.add(ADMIN, TEAM, 7, "other", {}, "add-1")

    domain.store.before("add_credits", another_body_lands)
    with pytest.raises(AlreadyExists) as e:
        await domain.credits.add(ADMIN, TEAM, 5, "grant", {}, "add-1")
    assert e.value.reason == Reason.IDEMPOTENCY_KEY_REUSED
    assert domain.store.credits(TEAM).allocated == 17


async def test_a_teams_total_stays_under_the_cap(
    domain: Domain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credits_module, "MAX_TOTAL_CREDITS", 15)
    await domain.credits.add(ADMIN, TEAM, 5, "", {}, "")
    with pytest.raises(FailedPrecondition) as e:
        await domain.credits.add(ADMIN, TEAM, 1, "", {}, "")
    assert e.value.reason == Reason.CREDIT_TOTAL_LIMIT
    assert e.value.message == (
        "Adding 1 credits would take the team's total to 16; the limit is 15"
    )
    assert domain.store.credits(TEAM).allocated == 15


async def test_credits_of_a_missing_team(domain: Domain) -> None:
    with pytest.raises(NotFound) as e:
        await domain.credits.add(ADMIN, "nobody", 1, "", {}, "")
    assert e.value.reason == Reason.TEAM_NOT_FOUND
    with pytest.raises(NotFound):
        await domain.credits.balance(ADMIN, "nobody")


async def test_only_the_admin_adds_credits(domain: Domain) -> None:
    with pytest.raises(PermissionDenied) as e:
        await domain.credits.add(TEAM_KEY, TEAM, 1, "", {}, "")
    assert e.value.reason == Reason.ADMIN_REQUIRED
    assert domain.store.credits(TEAM).allocated == 10


async def test_the_ledger_lists_every_movement_newest_first(domain: Domain) -> None:
    a = await domain.new_job()
    b = await domain.new_job()
    await domain.jobs.complete(ADMIN, a.job_id, "completed", {}, "")
    await domain.jobs.complete(ADMIN, b.job_id, "failed", {}, "")
    total, rows = await domain.credits.transactions(ADMIN, TEAM, 0, 0)
    assert total == 5
    assert [r.transaction_type for r in rows] == [
        "release",
        "deduction",
        "reservation",
        "reservation",
        "allocation",
    ]
    assert [r.balance_after for r in rows] == [9, 8, 8, 9, 10]
    total, page = await domain.credits.transactions(ADMIN, TEAM, 2, 1)
    assert (total, page) == (5, rows[1:3])


async def test_check_compares_what_is_left_with_what_is_needed(domain: Domain) -> None:
    assert await domain.credits.check(ADMIN, TEAM, 10) == (True, 10, 10)
    assert await domain.credits.check(TEAM_KEY, TEAM, 11) == (False, 10, 11)
    assert await domain.credits.check(ADMIN, TEAM, 0) == (True, 10, 1)


# Teams and groups ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("org", "groups", "access", "reason"),
    [
        ("nowhere", [GROUP], [], Reason.ORGANIZATION_NOT_FOUND),
        ("org", ["missing"], [], Reason.MODEL_GROUP_NOT_FOUND),
        ("org", [GROUP], ["missing"], Reason.ACCESS_GROUP_NOT_FOUND),
    ],
)
async def test_a_team_naming_what_does_not_exist_is_not_created(
    domain: Domain, org: str, groups: list[str], access: list[str], reason: Reason
) -> None:
    rows = len(domain.store.ledger)
    with pytest.raises(NotFound) as e:
        await domain.tenancy.create_team(
            ADMIN,
            organization_id=org,
            team_id="new",
            team_alias="",
            model_groups=groups,
            access_groups=access,
            credits_allocated=5,
            metadata={},
        )
    assert e.value.reason == reason
    assert "new" not in domain.store.teams
    assert len(domain.store.ledger) == rows


async def test_a_team_id_is_taken_once(domain: Domain) -> None:
    with pytest.raises(AlreadyExists):
        await domain.add_team(TEAM, credits=99)
    assert domain.store.credits(TEAM).allocated == 10


async def test_access_groups_give_their_model_groups(domain: Domain) -> None:
    await domain.add_group("g2", "scripted/c")
    await domain.tenancy.create_access_group(ADMIN, "bundle", "", ["g2"])
    await domain.tenancy.create_team(
        ADMIN,
        organization_id="org",
        team_id="t2",
        team_alias="",
        model_groups=[GROUP],
        access_groups=["bundle"],
        credits_allocated=1,
        metadata={},
    )
    team = await domain.tenancy.get_team(ADMIN, "t2")
    assert team.model_groups == [GROUP, "g2"]
    assert team.allowed_models == [MODEL_A, MODEL_B, "scripted/c"]
    domain.provider.script("scripted/c", *text("via the bundle"))
    job = await domain.new_job(team_id="t2")
    answer = await domain.jobs.llm_call(ADMIN, job.job_id, call("g2"), None)
    assert answer.result.content == "via the bundle"


async def test_a_group_in_use_is_not_deleted(domain: Domain) -> None:
    with pytest.raises(FailedPrecondition) as e:
        await domain.tenancy.delete_model_group(ADMIN, GROUP)
    assert e.value.reason == Reason.MODEL_GROUP_IN_USE
    await domain.add_group("unused", "scripted/c")
    await domain.tenancy.delete_model_group(ADMIN, "unused")
    assert "unused" not in domain.store.model_groups


async def test_a_group_update_reaches_the_next_call(domain: Domain) -> None:
    domain.provider.script(MODEL_B, *text("from b"))
    await domain.tenancy.update_model_group(ADMIN, GROUP, "", "", [ModelSpec(MODEL_B, 0)], {})
    job = await domain.new_job()
    answer = await domain.jobs.llm_call(ADMIN, job.job_id, call(), None)
    assert answer.result.content == "from b"
    assert domain.provider.tried() == [MODEL_B]


async def test_suspending_ends_the_open_jobs_and_releases_them(domain: Domain) -> None:
    done = await domain.new_job()
    await domain.jobs.complete(ADMIN, done.job_id, "completed", {}, "")
    open_jobs = [await domain.new_job(), await domain.new_job()]
    team = await domain.tenancy.set_team_status(ADMIN, TEAM, "suspended", "unpaid")
    assert team.status == "suspended"
    assert team.credits == Credits(allocated=10, used=1, reserved=0)
    for job in open_jobs:
        row = domain.store.jobs[job.job_id]
        assert (row.status, row.error_message) == ("failed", "Team suspended: unpaid")
        assert domain.store.entries(TEAM, job.job_id)[-1].reason == "Job test ended: team suspended"
    assert domain.store.jobs[done.job_id].status == "completed"
    await domain.tenancy.set_team_status(ADMIN, TEAM, "active")
    await domain.new_job()


async def test_a_rotated_key_replaces_the_old_one(domain: Domain) -> None:
    old_hash = domain.store.teams[TEAM].key_hash
    key, prefix = await domain.tenancy.rotate_team_key(ADMIN, TEAM)
    assert key.startswith(prefix)
    assert await domain.store.auth_by_key_hash(old_hash) is None
    auth = await domain.store.auth_by_key_hash(hash_key(key))
    assert auth is not None and auth.team_id == TEAM


async def test_usage_counts_jobs_by_how_they_ended(domain: Domain) -> None:
    domain.provider.script(MODEL_A, *text("ok"))
    charged = await domain.new_job()
    await domain.jobs.llm_call(ADMIN, charged.job_id, call(), None)
    await domain.jobs.complete(ADMIN, charged.job_id, "completed", {}, "")
    failed = await domain.new_job()
    await domain.jobs.complete(ADMIN, failed.job_id, "failed", {}, "")
    await domain.new_job()
    when = domain.store.jobs[charged.job_id].created_at
    assert all(j.created_at.month == when.month for j in domain.store.jobs.values())
    report = await UsageService(domain.store, domain.store, domain.store).team(
        ADMIN, TEAM, f"{when.year:04d}-{when.month:02d}"
    )
    assert report.summary.total_jobs == 3
    assert (report.summary.successful_jobs, report.summary.failed_jobs) == (1, 1)
    assert report.summary.total_tokens == domain.store.jobs[charged.job_id].total_tokens > 0
