"""domain/admission.py on the in-memory ports: the in-process rate limiter's windows (clock
injected), what a refusal leaves behind (nothing), the tokens correction, and the count given
back when the job's bound refuses a call the rate limiter had admitted."""

from __future__ import annotations

import pytest

from saas_llm.v1.reasons import Reason
from service.domain.admission import Admission, LocalRateLimiter
from service.domain.errors import FailedPrecondition, RateLimited
from service.domain.jobs import CallInput
from service.domain.models import JobRef, TeamLimits
from service.domain.principal import ADMIN
from tests.unit.conftest import TEAM, TEAM_KEY, Domain, call


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


SIM = "sim"


def sim(**params: object) -> CallInput:
    return call(SIM, **params)  # type: ignore[arg-type]


async def limited(domain: Domain, clock: Clock) -> tuple[LocalRateLimiter, list[tuple[str, str]]]:
    """The team gets a simulator group and an admission whose limiter runs on `clock`."""
    await domain.add_group(SIM, "simulator/fast")
    await domain.tenancy.assign_model_groups(ADMIN, TEAM, [SIM])
    limiter = LocalRateLimiter(60.0, clock)
    refusals: list[tuple[str, str]] = []
    domain.jobs.admission = Admission(
        domain.store, domain.store, limiter, lambda k, lim: refusals.append((k, lim))
    )
    return limiter, refusals


async def test_local_limiter_windows_and_retry_after() -> None:
    clock = Clock(119.0)  # one second before a minute boundary
    limiter = LocalRateLimiter(60.0, clock)
    assert (await limiter.acquire("t", 2, 0, 0)).allowed
    assert (await limiter.acquire("t", 2, 0, 0)).allowed
    refused = await limiter.acquire("t", 2, 0, 0)
    assert not refused.allowed and refused.limit == "rpm" and refused.retry_after == 1
    assert (await limiter.acquire("other", 2, 0, 0)).allowed  # per team
    clock.now = 120.0  # the next minute counts from 0
    assert (await limiter.acquire("t", 2, 0, 0)).allowed
    assert (await limiter.acquire("t", 2, 0, 0)).allowed
    assert not (await limiter.acquire("t", 2, 0, 0)).allowed
    # tpm: a call bigger than the whole limit passes only as the first of its window.
    assert (await limiter.acquire("u", 0, 10, 50)).allowed
    assert (await limiter.acquire("u", 0, 10, 1)).limit == "tpm"


async def test_rpm_refusal_writes_nothing(domain: Domain) -> None:
    clock = Clock(1000.0)
    _, refusals = await limited(domain, clock)
    await domain.tenancy.update_team_limits(ADMIN, TEAM, {"rpm_limit": 2})
    job = await domain.new_job()
    for _ in range(2):
        await domain.jobs.llm_call(TEAM_KEY, job.job_id, sim(), None)
    with pytest.raises(RateLimited) as e:
        await domain.jobs.llm_call(TEAM_KEY, job.job_id, sim(), None)
    assert e.value.reason == Reason.RATE_LIMITED
    assert e.value.metadata == {"limit": "rpm", "retry_after_seconds": "20"}
    assert refusals == [("rate_limit", "rpm")]
    assert len(domain.store.calls_of(job.job_id)) == 2
    assert domain.store.jobs[job.job_id].calls_admitted == 2
    clock.now += 60
    await domain.jobs.llm_call(TEAM_KEY, job.job_id, sim(), None)


async def test_tpm_counts_actual_usage(domain: Domain) -> None:
    limiter, _ = await limited(domain, Clock(0.0))
    await domain.tenancy.update_team_limits(ADMIN, TEAM, {"tpm_limit": 10_000})
    job = await domain.new_job()
    answer = await domain.jobs.llm_call(TEAM_KEY, job.job_id, sim(max_tokens=500), None)
    # Admitted on prompt + 500, corrected to what the call used.
    assert limiter._counts[TEAM][2] == answer.call.tokens


async def test_job_bound_lost_race_gives_the_rate_count_back(domain: Domain) -> None:
    limiter, refusals = await limited(domain, Clock(0.0))
    await domain.tenancy.update_team_limits(ADMIN, TEAM, {"rpm_limit": 5, "max_calls_per_job": 1})
    job = await domain.new_job()
    await domain.jobs.llm_call(TEAM_KEY, job.job_id, sim(), None)
    assert limiter._counts[TEAM][1] == 1
    # A reader that saw the job before that call was admitted: its bound check passes, the
    # store's conditional count refuses, and the rate limiter's count is given back.
    stale = JobRef(
        job.job_id, TEAM, "in_progress", limits=TeamLimits(rpm_limit=5, max_calls_per_job=1)
    )
    admission = domain.jobs.admission
    with pytest.raises(FailedPrecondition) as e:
        await admission.admit_job_call(stale, sim().request)
    assert e.value.reason == Reason.JOB_LIMIT_EXCEEDED
    assert "max_calls_per_job" in e.value.message
    assert limiter._counts[TEAM][1] == 1
    assert refusals == [("job_limit", "calls")]


async def test_max_tokens_capped_by_what_the_job_has_left(domain: Domain) -> None:
    await limited(domain, Clock(0.0))
    await domain.tenancy.update_team_limits(ADMIN, TEAM, {"max_tokens_per_job": 100})
    job = await domain.new_job()
    admission = domain.jobs.admission
    ref = await domain.store.job_ref(job.job_id)
    assert ref is not None
    sent = admission.check_job(ref, ref.limits or TeamLimits(), sim(max_tokens=5000).request)
    assert 1 <= sent.params["max_tokens"] < 100
    small = sim(max_tokens=10).request
    assert admission.check_job(ref, ref.limits or TeamLimits(), small) is small
    with pytest.raises(FailedPrecondition) as e:
        admission.check_job(ref, ref.limits or TeamLimits(), sim(content="x" * 1000).request)
    assert e.value.metadata["limit"] == "max_tokens_per_job"


async def test_create_and_call_over_the_rate_limit_creates_no_job(domain: Domain) -> None:
    await limited(domain, Clock(0.0))
    await domain.tenancy.update_team_limits(ADMIN, TEAM, {"rpm_limit": 1})
    kwargs = {"team_id": TEAM, "user_id": "u", "job_type": "t", "metadata": {}, "request_id": ""}
    await domain.jobs.create_and_call(TEAM_KEY, call=sim(), deadline=None, **kwargs)  # type: ignore[arg-type]
    before = dict(domain.store.jobs)
    with pytest.raises(RateLimited):
        await domain.jobs.create_and_call(TEAM_KEY, call=sim(), deadline=None, **kwargs)  # type: ignore[arg-type]
    assert domain.store.jobs == before
    assert domain.store.credits(TEAM).reserved == 0
