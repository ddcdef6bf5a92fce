"""A Hypothesis state machine of the credit rules against the domain services on the real
storage and its single writer of each money operation (SQLite and PostgreSQL), served by two
replicas at once (two stacks on one database, as two processes would be): create (with and
without idempotency keys), calls that succeed or fail, complete as completed/failed, add
credits, expiry by the sweeper, team suspension, and concurrent duplicates of each, spread over
both replicas. After every step the team row equals the model; after every run the auditor
passes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import update

from service.audit import audit
from service.domain.credits import CreditsService
from service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InsufficientCredits,
)
from service.domain.jobs import JobsService
from service.domain.llm import CallRunner
from service.domain.ports import NewCall
from service.domain.principal import ADMIN
from service.domain.tenancy import TenancyService
from service.providers.simulator import SimulatorProvider
from service.storage.catalog import CatalogRepository
from service.storage.database import Database
from service.storage.jobs import JobRepository
from service.storage.ledger import LedgerRepository
from service.storage.money import money_for
from service.storage.rows import utcnow
from service.storage.schema import jobs
from service.storage.teams import TeamRepository
from tests.conftest import fresh_database

T = TypeVar("T")
OPEN = ("pending", "in_progress")


@dataclass
class JobModel:
    status: str = "pending"
    failed_call: bool = False
    charged: bool = False
    job_type: str = "work"


class Replica:
    """What one service process has: its own connections, writer and domain services."""

    def __init__(self, url: str) -> None:
        self.db = Database.open(url, pool_size=8)
        money = money_for(self.db)
        catalog = CatalogRepository(self.db)
        teams = TeamRepository(self.db, money, cache_ttl=0)
        self.ledger_repo = LedgerRepository(self.db, money)
        self.jobs_repo = JobRepository(self.db, money)
        runner = CallRunner(SimulatorProvider(), 30.0)
        self.jobs = JobsService(self.jobs_repo, teams, catalog, self.ledger_repo, runner)
        self.credits = CreditsService(self.ledger_repo)
        self.tenancy = TenancyService(catalog, teams)

    def create(self, team_id: str, request_id: str | None, job_type: str) -> Any:
        return self.jobs.create(
            ADMIN,
            team_id=team_id,
            user_id="",
            job_type=job_type,
            metadata={},
            request_id=request_id or "",
        )

    def complete(self, job_id: str, status: str) -> Any:
        """(job, replayed)"""
        return self.jobs.settle(job_id, status, {}, None)

    def add(self, team_id: str, amount: int, reason: str, request_id: str | None) -> Any:
        return self.credits.add(ADMIN, team_id, amount, reason, {}, request_id or "")

    def set_status(self, team_id: str, status: str) -> Any:
        return self.tenancy.set_team_status(ADMIN, team_id, status, "x")


class Env:
    """One event loop, one database and two replicas for a whole Hypothesis run."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.url = self.run(fresh_database(kind, tmp))
        self.replicas = (Replica(self.url), Replica(self.url))
        self.db = self.replicas[0].db
        self.org = "org_" + uuid.uuid4().hex[:8]
        self.run(self.replicas[0].tenancy.create_organization(ADMIN, self.org, "Org", {}))
        self.steps = 0
        self._next = 0

    def replica(self, i: int | None = None) -> Replica:
        """Replica i (mod 2), or the next one in turn."""
        if i is None:
            i = self._next
            self._next += 1
        return self.replicas[i % 2]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        for r in self.replicas:
            self.run(r.db.dispose())
        self.loop.close()


ENV: Env | None = None


def env() -> Env:
    assert ENV is not None
    return ENV


async def gather(*coros: Coroutine[Any, Any, Any]) -> list[Any]:
    return list(await asyncio.gather(*coros, return_exceptions=True))


class CreditMachine(RuleBasedStateMachine):
    jobs_b = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.team = ""
        self.allocated = self.used = self.reserved = 0
        self.suspended = False
        self.jobs: dict[str, JobModel] = {}
        self.create_keys: dict[str, str] = {}  # request_id -> job_id
        self.add_keys: dict[str, int] = {}  # request_id -> amount

    # --- helpers -----------------------------------------------------------------------------

    @property
    def available(self) -> int:
        return self.allocated - self.used - self.reserved

    def _create(
        self, request_id: str | None, job_type: str = "work", replica: int | None = None
    ) -> Coroutine[Any, Any, Any]:
        return env().replica(replica).create(self.team, request_id, job_type)  # type: ignore[no-any-return]

    def _settle(self, job_id: str, status: str) -> None:
        j = self.jobs[job_id]
        charge = status == "completed" and not j.failed_call
        j.status, j.charged = status, charge
        self.reserved -= 1
        if charge:
            self.used += 1

    # --- rules -------------------------------------------------------------------------------

    @initialize(credits=st.integers(0, 6))
    def make_team(self, credits: int) -> None:
        self.team = "team_" + uuid.uuid4().hex[:10]
        env().run(
            env()
            .replica(0)
            .tenancy.create_team(
                ADMIN,
                organization_id=env().org,
                team_id=self.team,
                team_alias="",
                model_groups=[],
                access_groups=[],
                credits_allocated=credits,
                metadata={},
            )
        )
        self.allocated = credits

    @rule(target=jobs_b, request_id=st.none() | st.sampled_from(["r1", "r2", "r3"]))
    def create(self, request_id: str | None) -> str:
        try:
            job, replayed = env().run(self._create(request_id))
        except InsufficientCredits:
            assert not self.suspended and self.available < 1
            assert request_id not in self.create_keys
            return "none"
        except FailedPrecondition as exc:
            assert self.suspended and exc.reason == "TEAM_SUSPENDED", exc
            return "none"
        if request_id in self.create_keys:
            assert replayed and job.job_id == self.create_keys[request_id]
            return job.job_id
        assert not replayed and not self.suspended and self.available >= 1
        self.jobs[job.job_id] = JobModel()
        self.reserved += 1
        if request_id:
            self.create_keys[request_id] = job.job_id
        return job.job_id

    @precondition(lambda self: bool(self.create_keys))
    @rule(data=st.data())
    def reuse_key_with_other_body(self, data: st.DataObject) -> None:
        keys = sorted(self.create_keys)
        rid = keys[data.draw(st.integers(0, 10_000)) % len(keys)]
        try:
            env().run(self._create(rid, job_type="other"))
        except AlreadyExists as exc:
            assert exc.reason == "IDEMPOTENCY_KEY_REUSED"
        else:
            raise AssertionError("a request_id reused with another body must be refused")

    @rule(n=st.integers(2, 6))
    def concurrent_creates(self, n: int) -> None:
        results = env().run(gather(*(self._create(None, replica=i) for i in range(n))))
        made = [r for r in results if not isinstance(r, BaseException)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if self.suspended:
            assert not made and all(isinstance(e, FailedPrecondition) for e in errors), errors
            return
        assert all(isinstance(e, InsufficientCredits) for e in errors), errors
        assert len(made) == min(n, self.available), (n, self.available, results)
        for job, _ in made:
            self.jobs[job.job_id] = JobModel()
            self.reserved += 1

    @rule(n=st.integers(2, 5), rid=st.sampled_from(["d1", "d2", "d3"]))
    def concurrent_duplicate_creates(self, n: int, rid: str) -> None:
        """The same idempotent create sent n times at once: one job at most, and every answer
        that is not an error is that job."""
        results = env().run(gather(*(self._create(rid, replica=i) for i in range(n))))
        made = {r[0].job_id for r in results if not isinstance(r, BaseException)}
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(made) <= 1, results
        if rid in self.create_keys:
            assert made == {self.create_keys[rid]} and not errors, results
            return
        if self.suspended or self.available < 1:
            assert not made, results
            return
        assert len(made) == 1 and not errors, results
        job_id = made.pop()
        self.jobs[job_id] = JobModel()
        self.reserved += 1
        self.create_keys[rid] = job_id

    @rule(job_id=jobs_b, ok=st.booleans())
    def call(self, job_id: str, ok: bool) -> None:
        j = self.jobs.get(job_id)
        if j is None or j.status not in OPEN:
            return  # the domain refuses calls on ended jobs before storage
        env().run(
            env()
            .replica()
            .jobs_repo.record_call(
                NewCall(
                    job_id=job_id,
                    team_id=self.team,
                    model_group="g",
                    model="simulator/ok",
                    purpose="",
                    status="success" if ok else "failed",
                    streamed=False,
                    prompt_tokens=3,
                    completion_tokens=5 if ok else 0,
                    usage_estimated=False,
                    cost_usd=None,
                    latency_ms=1,
                    ttft_ms=None,
                    error=None if ok else "boom",
                    attempts=[],
                )
            )
        )
        j.status = "in_progress"
        j.failed_call = j.failed_call or not ok

    @rule(job_id=jobs_b, status=st.sampled_from(["completed", "failed"]))
    def complete(self, job_id: str, status: str) -> None:
        j = self.jobs.get(job_id)
        if j is None:
            return
        try:
            job, replayed = env().run(env().replica().complete(job_id, status))
        except FailedPrecondition:
            assert j.status not in OPEN and j.status != status, (j, status)
            return
        if j.status in OPEN:
            assert not replayed
            self._settle(job_id, status)
        else:
            assert replayed and j.status == status
        assert job.status == j.status and job.credit_applied == j.charged, (job, j)

    @rule(
        job_id=jobs_b,
        statuses=st.lists(st.sampled_from(["completed", "failed"]), min_size=2, max_size=4),
    )
    def concurrent_completes(self, job_id: str, statuses: list[str]) -> None:
        j = self.jobs.get(job_id)
        if j is None:
            return
        if not j.failed_call:
            # Mixed statuses on a chargeable job would make the credits depend on which
            # complete wins, and Hypothesis needs runs it can replay: duplicates only here
            # (test_racing_completes_and_sweeper covers the mixed races).
            statuses = [statuses[0]] * len(statuses)
        was_open = j.status in OPEN
        results = env().run(
            gather(*(env().replica(i).complete(job_id, s) for i, s in enumerate(statuses)))
        )
        fresh = [r for r in results if not isinstance(r, BaseException) and not r[1]]
        errors = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(e, FailedPrecondition) for e in errors), errors
        if not was_open:
            assert not fresh
            return
        assert len(fresh) == 1, results  # exactly one complete settles the credit
        winner = fresh[0][0].status
        self._settle(job_id, winner)
        for s, r in zip(statuses, results, strict=True):
            # The others replay (same status) or are refused (another status).
            assert isinstance(r, BaseException) == (s != winner), (statuses, results)

    @rule(amount=st.integers(1, 4), request_id=st.none() | st.sampled_from(["a1", "a2"]))
    def add_credits(self, amount: int, request_id: str | None) -> None:
        try:
            entry, _ = env().run(env().replica().add(self.team, amount, "top-up", request_id))
        except AlreadyExists:
            assert request_id in self.add_keys and self.add_keys[request_id] != amount
            return
        if request_id in self.add_keys:
            assert self.add_keys[request_id] == amount and entry.credits_amount == amount
            return
        self.allocated += amount
        if request_id:
            self.add_keys[request_id] = amount

    @rule(n=st.integers(2, 5), rid=st.sampled_from(["c1", "c2"]))
    def concurrent_duplicate_adds(self, n: int, rid: str) -> None:
        amount = 2
        results = env().run(
            gather(*(env().replica(i).add(self.team, amount, "dup", rid) for i in range(n)))
        )
        if rid in self.add_keys and self.add_keys[rid] != amount:
            assert all(isinstance(r, AlreadyExists) for r in results), results
            return
        assert not any(isinstance(r, BaseException) for r in results), results
        ids = {r[0].transaction_id for r in results}
        assert len(ids) == 1, results  # one ledger row, n identical answers
        if rid not in self.add_keys:
            self.allocated += amount
            self.add_keys[rid] = amount

    @rule(job_id=jobs_b, race_complete=st.none() | st.sampled_from(["completed", "failed"]))
    def expire(self, job_id: str, race_complete: str | None) -> None:
        """The job goes idle past the timeout; the sweeper (maybe racing a complete) runs."""
        j = self.jobs.get(job_id)
        if j is None:
            return
        if race_complete == "completed" and not j.failed_call:
            race_complete = "failed"  # released either way: a replayable outcome
        past = utcnow() - timedelta(hours=2)

        async def backdate() -> None:
            async with env().db.tx() as conn:
                await conn.execute(
                    update(jobs).where(jobs.c.job_id == job_id).values(updated_at=past)
                )

        env().run(backdate())
        cutoff = utcnow() - timedelta(hours=1)
        ops: list[Coroutine[Any, Any, Any]] = [env().replica(0).jobs_repo.expire_stale_jobs(cutoff)]
        if race_complete:
            ops.append(env().replica(1).complete(job_id, race_complete))
        results = env().run(gather(*ops))
        expired = results[0]
        assert not isinstance(expired, BaseException), expired
        if j.status not in OPEN:
            assert expired == 0
            if race_complete:
                r = results[1]
                assert isinstance(r, FailedPrecondition) == (j.status != race_complete), r
            return
        if race_complete:
            r = results[1]
            if expired == 1:
                assert isinstance(r, FailedPrecondition), r
            else:
                assert not isinstance(r, BaseException) and not r[1], r
                self._settle(job_id, race_complete)
                return
        assert expired == 1, results
        j.status = "expired"
        self.reserved -= 1

    @rule(race=st.booleans(), data=st.data())
    def suspend_and_resume(self, race: bool, data: st.DataObject) -> None:
        """Suspending ends the open jobs as failed (credits released); creates are refused
        until the team is resumed. Optionally races a complete of an open job."""
        open_jobs = [k for k, j in self.jobs.items() if j.status in OPEN]
        # An index drawn whatever the number of open jobs, so that a replay draws the same
        # choices even when a race went the other way.
        pick = data.draw(st.integers(0, 10_000))
        target = open_jobs[pick % len(open_jobs)] if race and open_jobs else None
        ops: list[Coroutine[Any, Any, Any]] = [env().replica(0).set_status(self.team, "suspended")]
        if target:
            # "failed" (or a job with a failed call): released whoever wins, replayable.
            race_status = "completed" if self.jobs[target].failed_call else "failed"
            ops.append(env().replica(1).complete(target, race_status))
        results = env().run(gather(*ops))
        # Never a deadlock (an aborted transaction) between the two: both lock the job first.
        assert not isinstance(results[0], BaseException), results
        if target:
            r = results[1]
            if isinstance(r, BaseException):
                # The suspension came first and ended the job as failed.
                assert race_status == "completed", r
                assert isinstance(r, FailedPrecondition) and r.reason == "JOB_ALREADY_COMPLETED", r
            else:
                self._settle(target, race_status)
        for k in open_jobs:
            if self.jobs[k].status in OPEN:
                self._settle(k, "failed")
        self.suspended = True
        if data.draw(st.booleans()):
            env().run(env().replica().set_status(self.team, "active"))
            self.suspended = False

    @precondition(lambda self: self.suspended)
    @rule()
    def resume(self) -> None:
        env().run(env().replica().set_status(self.team, "active"))
        self.suspended = False

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def team_row_matches_model(self) -> None:
        if not self.team:
            return
        credits = env().run(env().replica().ledger_repo.balance(self.team))
        assert credits is not None
        assert (credits.allocated, credits.used, credits.reserved) == (
            self.allocated,
            self.used,
            self.reserved,
        ), (credits, self.allocated, self.used, self.reserved)
        assert credits.remaining >= 0
        env().steps += 1

    def teardown(self) -> None:
        if not self.team:
            return
        report = env().run(audit(env().db))
        assert report.ok, report.violations


async def test_racing_completes_and_sweeper(db_url: str) -> None:
    """The races the state machine keeps replayable, with every outcome: completes with mixed
    statuses, and the sweeper, on chargeable jobs, spread over two replicas. Exactly one
    settles each job; the ledger audits clean."""
    import random

    replicas = (Replica(db_url), Replica(db_url))
    one = replicas[0]
    rnd = random.Random(11)
    try:
        org, team = "org_" + uuid.uuid4().hex[:8], "team_" + uuid.uuid4().hex[:8]
        await one.tenancy.create_organization(ADMIN, org, "Org", {})
        await one.tenancy.create_team(
            ADMIN,
            organization_id=org,
            team_id=team,
            team_alias="",
            model_groups=[],
            access_groups=[],
            credits_allocated=60,
            metadata={},
        )
        charged = 0
        for i in range(60):
            job, _ = await replicas[i % 2].create(team, None, "t")
            statuses = [rnd.choice(["completed", "failed"]) for _ in range(rnd.randint(2, 4))]
            ops: list[Coroutine[Any, Any, Any]] = [
                replicas[k % 2].complete(job.job_id, s) for k, s in enumerate(statuses)
            ]
            if i % 3 == 0:
                async with one.db.tx() as conn:
                    await conn.execute(
                        update(jobs)
                        .where(jobs.c.job_id == job.job_id)
                        .values(updated_at=utcnow() - timedelta(hours=2))
                    )
                sweeper = replicas[rnd.randint(0, 1)].jobs_repo
                ops.insert(
                    rnd.randint(0, len(ops)),
                    sweeper.expire_stale_jobs(utcnow() - timedelta(hours=1)),
                )
            results = await gather(*ops)
            settled = [
                r
                for r in results
                if (isinstance(r, int) and r == 1) or (isinstance(r, tuple) and not r[1])
            ]
            assert len(settled) == 1, results
            final = await one.jobs_repo.get_job(job.job_id)
            assert final is not None and final.status in ("completed", "failed", "expired")
            charged += final.credit_applied
            assert final.credit_applied == (final.status == "completed")
        credits = await one.ledger_repo.balance(team)
        assert credits is not None
        assert (credits.allocated, credits.used, credits.reserved) == (60, charged, 0)
        report = await audit(one.db)
        assert report.ok, report.violations
    finally:
        for r in replicas:
            await r.db.dispose()


def _run(kind: str, tmp: Path, examples: int, steps: int) -> None:
    global ENV
    ENV = Env(kind, tmp)
    try:
        run_state_machine_as_test(
            CreditMachine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                derandomize=False,
            ),
        )
        print(f"stateful credits [{kind}]: {examples} runs, {ENV.steps} checked steps")
    finally:
        ENV.close()
        ENV = None


def test_credit_rules_state_machine(db_kind: str, tmp_path: Path) -> None:
    _run(db_kind, tmp_path, examples=25, steps=30)


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_soak_credit_rules_state_machine(db_kind: str, tmp_path: Path) -> None:
    _run(db_kind, tmp_path, examples=400, steps=60)
