"""The domain's ports (service/domain/ports.py) in memory, for unit tests without a database.

`MemoryStore` is one database: it implements JobStore, Ledger, TeamDirectory, Catalog,
UsageStore and HealthProbe at once, with the semantics of the storage writers the domain relies
on (storage/money_sqlite.py and money_postgres.py are the reference):

- every operation is atomic: it applies between two awaits of the event loop, after one yield
  (a database round trip lets other requests run first);
- a money writer that cannot apply writes nothing and says so (False / None), like the
  conditional UPDATEs; uniqueness and references raise ConstraintViolation / UnknownReference;
- JSON columns are stored and read back as copies (a caller's dict is never shared).

Test seams (not mocks of our own code): `before(op, action)` runs `action` when operation `op`
starts, before it reads anything: another request slipping in between two steps of the domain,
or a failure (`raise StorageUnavailable(...)`: nothing written). `violations()` lists what the
ledger auditor (service/audit.py) would report; `check_ledger()` asserts there is none.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from service.domain import ledger_text
from service.domain.models import (
    OPEN_STATUSES,
    AccessGroup,
    CallRecord,
    Credits,
    DirectUsageRow,
    Job,
    JobRef,
    LedgerEntry,
    ModelGroup,
    Organization,
    Team,
    TeamAuth,
    TeamLimits,
    UsageRow,
)
from service.domain.ports import (
    BUDGET_NANOS_PER_CREDIT,
    NANOS_PER_USD,
    Budget,
    BudgetStore,
    Catalog,
    ConstraintViolation,
    DirectSettlement,
    HealthProbe,
    JobClaim,
    JobStore,
    Ledger,
    NewAddition,
    NewCall,
    NewDirectCall,
    NewJob,
    NewTeam,
    StoredAddition,
    TeamDirectory,
    TeamState,
    UnknownReference,
    UsageStore,
)
from service.providers.base import ModelSpec

Action = Callable[[], Awaitable[None]]

# Signed effect of each ledger row type on credits_remaining (as in service/audit.py).
_EFFECT = {
    "allocation": 1,
    "addition": 1,
    "reservation": -1,
    "deduction": 0,
    "release": 1,
    "expiry": 1,
}
_JOB_KINDS = ("reservation", "deduction", "release", "expiry")


def _copy(value: Any) -> Any:
    """A JSON column's value as the database hands it back: a copy, JSON-typed."""
    return orjson.loads(orjson.dumps(value))


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(slots=True)
class _TeamRow:
    team_id: str
    organization_id: str
    team_alias: str
    status: str
    metadata: dict[str, Any]
    key_hash: str
    key_prefix: str
    allocated: int
    used: int
    reserved: int
    created_at: datetime
    updated_at: datetime
    groups: list[str]
    access_groups: list[str]
    # The OpenAI-compatible API's budget, nano-USD.
    budget_spent: int = 0
    budget_reserved: int = 0
    limits: TeamLimits = field(default_factory=TeamLimits)

    @property
    def credits(self) -> Credits:
        return Credits(allocated=self.allocated, used=self.used, reserved=self.reserved)


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """An llm_calls row: what the domain sees (`record`) and what it sent (`call`: streamed,
    usage_estimated, ttft_ms, attempts)."""

    record: CallRecord
    call: NewCall


@dataclass(slots=True)
class JobRow:
    job_id: str
    team_id: str
    user_id: str
    job_type: str
    status: str
    metadata: dict[str, Any]
    result_metadata: dict[str, Any] | None
    error_message: str | None
    credit_applied: bool
    credits_remaining_after: int | None
    request_id: str | None
    request_hash: str | None
    replay_response: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    total_tokens: int = 0
    total_cost_usd: float = 0.0
    calls_admitted: int = 0
    calls: list[RecordedCall] = field(default_factory=list)

    def view(self, *, with_calls: bool = True) -> Job:
        return Job(
            job_id=self.job_id,
            team_id=self.team_id,
            user_id=self.user_id,
            job_type=self.job_type,
            status=self.status,
            metadata=_copy(self.metadata),
            result_metadata=_copy(self.result_metadata),
            error_message=self.error_message,
            credit_applied=self.credit_applied,
            credits_remaining_after=self.credits_remaining_after,
            created_at=self.created_at,
            updated_at=self.updated_at,
            completed_at=self.completed_at,
            calls=[c.record for c in self.calls] if with_calls else [],
            replay_response=_copy(self.replay_response),
        )


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """A credit_transactions row."""

    entry: LedgerEntry
    metadata: dict[str, Any]
    request_id: str | None
    request_hash: str | None


@dataclass(slots=True)
class _Hook:
    action: Action
    times: int


@dataclass(slots=True)
class DirectRow:
    """A direct_calls row."""

    call: NewDirectCall
    status: str = "in_flight"
    cost_nanos: int = 0
    tokens: int = 0
    settlement: DirectSettlement | None = None


class MemoryStore:
    """JobStore, Ledger, TeamDirectory, Catalog, UsageStore and HealthProbe in memory."""

    def __init__(self) -> None:
        self.organizations: dict[str, Organization] = {}
        self.model_groups: dict[str, ModelGroup] = {}
        self.access_groups: dict[str, AccessGroup] = {}
        self.teams: dict[str, _TeamRow] = {}
        self.jobs: dict[str, JobRow] = {}
        # In commit order (the `id` column of credit_transactions).
        self.ledger: list[StoredEntry] = []
        # The OpenAI-compatible API's calls (direct_calls rows), by call id.
        self.direct: dict[str, DirectRow] = {}
        # How many times each operation was called (hooks included).
        self.ops: Counter[str] = Counter()
        self._hooks: dict[str, list[_Hook]] = {}
        self._clock = datetime.now(UTC)

    # Test seams -----------------------------------------------------------------------------

    def before(self, op: str, action: Action, *, times: int = 1) -> None:
        """Run `action` at the start of the next `times` calls of operation `op` (a method
        name), before it reads anything. An exception it raises fails the operation, with
        nothing written."""
        self._hooks.setdefault(op, []).append(_Hook(action, times))

    async def _enter(self, op: str) -> None:
        self.ops[op] += 1
        # A round trip: whatever else is runnable runs first.
        await asyncio.sleep(0)
        hooks = self._hooks.get(op)
        if hooks:
            hook = hooks[0]
            hook.times -= 1
            if hook.times <= 0:
                hooks.pop(0)
            await hook.action()

    def _now(self) -> datetime:
        """The wall clock, strictly increasing (two writes never share a timestamp, so "recorded
        before the job ended" is never a tie)."""
        now = datetime.now(UTC)
        if now <= self._clock:
            now = self._clock + timedelta(microseconds=1)
        self._clock = now
        return now

    # Reads for the tests --------------------------------------------------------------------

    def credits(self, team_id: str) -> Credits:
        return self.teams[team_id].credits

    def entries(self, team_id: str | None = None, job_id: str | None = None) -> list[LedgerEntry]:
        """Ledger rows in commit order, of a team and/or a job."""
        return [
            s.entry
            for s in self.ledger
            if (team_id is None or s.entry.team_id == team_id)
            and (job_id is None or s.entry.job_id == job_id)
        ]

    def calls_of(self, job_id: str) -> list[RecordedCall]:
        return list(self.jobs[job_id].calls)

    def violations(self) -> list[str]:
        """The ledger invariants of service/audit.py (1-4), in words; empty when they hold."""
        out: list[str] = []
        sums: dict[str, Counter[str]] = {}
        running: dict[str, int] = {}
        for stored in self.ledger:
            e = stored.entry
            sums.setdefault(e.team_id, Counter())[e.transaction_type] += e.credits_amount
            if e.transaction_type not in _EFFECT:
                out.append(f"ledger row {e.transaction_id}: unknown type {e.transaction_type!r}")
                continue
            balance = running.get(e.team_id, 0) + _EFFECT[e.transaction_type] * e.credits_amount
            running[e.team_id] = balance
            if e.balance_after != balance:
                out.append(
                    f"ledger row {e.transaction_type} of team {e.team_id} (job {e.job_id}): "
                    f"balance_after {e.balance_after}, running balance {balance}"
                )
            if balance < 0:
                out.append(f"team {e.team_id}: the ledger goes negative ({balance})")
            if e.transaction_type in _JOB_KINDS:
                job = self.jobs.get(e.job_id or "")
                if job is None or job.team_id != e.team_id:
                    out.append(f"ledger row {e.transaction_type} names no job of its team")
            elif e.job_id is not None:
                out.append(f"ledger row {e.transaction_type} names job {e.job_id}")
        for team in self.teams.values():
            s = sums.get(team.team_id, Counter())
            want = (
                s["allocation"] + s["addition"],
                s["deduction"],
                s["reservation"] - s["deduction"] - s["release"] - s["expiry"],
            )
            have = (team.allocated, team.used, team.reserved)
            if want != have:
                out.append(
                    f"team {team.team_id}: (allocated, used, reserved)={have}, the ledger "
                    f"sums to {want}"
                )
            if team.credits.remaining < 0 or team.used < 0 or team.reserved < 0:
                out.append(f"team {team.team_id}: negative credits {have}")
            open_jobs = sum(
                1
                for j in self.jobs.values()
                if j.team_id == team.team_id and j.status in OPEN_STATUSES
            )
            if team.reserved != open_jobs:
                out.append(f"team {team.team_id}: reserved {team.reserved}, open jobs {open_jobs}")
        for job in self.jobs.values():
            kinds = Counter(e.transaction_type for e in self.entries(job_id=job.job_id))
            row = f"job {job.job_id} ({job.status}, credit_applied={job.credit_applied})"
            settled = kinds["release"] + kinds["expiry"]
            if kinds["reservation"] != 1:
                out.append(f"{row}: {kinds['reservation']} reservations")
            if job.status in OPEN_STATUSES:
                if kinds["deduction"] or settled:
                    out.append(f"{row}: open but settled")
            elif job.credit_applied:
                if job.status != "completed" or kinds["deduction"] != 1 or settled:
                    out.append(f"{row}: charged needs completed, 1 deduction, 0 releases")
            elif kinds["deduction"] or settled != 1:
                out.append(f"{row}: uncharged needs 0 deductions and 1 release or expiry")
        return out

    def check_ledger(self) -> None:
        problems = self.violations()
        assert not problems, "ledger invariants broken:\n" + "\n".join(problems)

    # Writing helpers ------------------------------------------------------------------------

    def _entry(
        self,
        *,
        team_id: str,
        kind: str,
        amount: int,
        balance_after: int,
        reason: str,
        job_id: str | None,
        now: datetime,
        metadata: dict[str, Any] | None = None,
        request_id: str | None = None,
        request_hash: str | None = None,
    ) -> LedgerEntry:
        entry = LedgerEntry(
            transaction_id=_new_id(),
            team_id=team_id,
            transaction_type=kind,
            credits_amount=amount,
            balance_after=balance_after,
            reason=reason,
            job_id=job_id,
            created_at=now,
        )
        self.ledger.append(StoredEntry(entry, _copy(metadata or {}), request_id, request_hash))
        return entry

    def _settle(self, job: JobRow, *, charge: bool, kind: str, reason: str, now: datetime) -> int:
        """End a claimed job's reservation (the caller checked the team holds one)."""
        team = self.teams[job.team_id]
        team.reserved -= 1
        if charge:
            team.used += 1
        team.updated_at = now
        remaining = team.credits.remaining
        self._entry(
            team_id=team.team_id,
            kind=kind,
            amount=1,
            balance_after=remaining,
            reason=reason,
            job_id=job.job_id,
            now=now,
        )
        job.credit_applied = charge
        job.credits_remaining_after = remaining
        return remaining

    def _holds_reservation(self, job: JobRow) -> None:
        if self.teams[job.team_id].reserved < 1:
            # As the writers do: fail the operation rather than corrupt the ledger.
            raise RuntimeError(f"ledger invariant broken: team {job.team_id} has no reservation")

    def _end(self, job: JobRow, status: str, now: datetime) -> None:
        job.status = status
        job.completed_at = now
        job.updated_at = now

    # JobStore -------------------------------------------------------------------------------

    async def create_job(self, job: NewJob) -> bool:
        await self._enter("create_job")
        team = self.teams.get(job.team_id)
        if team is None or team.status != "active" or team.credits.remaining < 1:
            return False
        if job.job_id in self.jobs:
            return False
        if job.request_id is not None and any(
            j.team_id == job.team_id and j.request_id == job.request_id for j in self.jobs.values()
        ):
            return False  # the unique (team_id, request_id) index: the reservation rolls back
        now = job.created_at
        team.reserved += 1
        team.updated_at = now
        self._entry(
            team_id=team.team_id,
            kind="reservation",
            amount=1,
            balance_after=team.credits.remaining,
            reason=ledger_text.reserve_reason(job.job_type),
            job_id=job.job_id,
            now=now,
        )
        self.jobs[job.job_id] = JobRow(
            job_id=job.job_id,
            team_id=job.team_id,
            user_id=job.user_id,
            job_type=job.job_type,
            status="pending",
            metadata=_copy(job.metadata),
            result_metadata=None,
            error_message=None,
            credit_applied=False,
            credits_remaining_after=None,
            request_id=job.request_id,
            request_hash=job.request_hash,
            replay_response=None,
            created_at=now,
            updated_at=now,
            completed_at=None,
        )
        return True

    async def job_by_request(self, team_id: str, request_id: str) -> tuple[Job, str | None] | None:
        await self._enter("job_by_request")
        for j in self.jobs.values():
            if j.team_id == team_id and j.request_id == request_id:
                return j.view(), j.request_hash
        return None

    async def get_job(self, job_id: str, *, with_calls: bool = True) -> Job | None:
        await self._enter("get_job")
        job = self.jobs.get(job_id)
        return None if job is None else job.view(with_calls=with_calls)

    async def job_ref(self, job_id: str) -> JobRef | None:
        await self._enter("job_ref")
        job = self.jobs.get(job_id)
        if job is None:
            return None
        return JobRef(
            job_id,
            job.team_id,
            job.status,
            calls_admitted=job.calls_admitted,
            total_tokens=job.total_tokens,
            total_cost_usd=job.total_cost_usd,
            limits=self.teams[job.team_id].limits,
        )

    async def admit_call(self, job_id: str, max_calls: int) -> bool:
        await self._enter("admit_call")
        job = self.jobs.get(job_id)
        if job is None or job.status not in OPEN_STATUSES or job.calls_admitted >= max_calls:
            return False
        job.calls_admitted += 1
        return True

    async def record_call(self, call: NewCall) -> CallRecord:
        await self._enter("record_call")
        job = self.jobs.get(call.job_id)
        if job is None:
            raise ConstraintViolation(f"llm_calls.job_id {call.job_id!r} names no job")
        if call.status not in ("success", "failed", "cancelled"):
            raise ConstraintViolation(f"llm_calls.status {call.status!r}")
        now = self._now()
        record = CallRecord(
            call_id=_new_id(),
            job_id=call.job_id,
            model_group=call.model_group,
            model=call.model,
            purpose=call.purpose,
            status=call.status,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            cost_usd=call.cost_usd,
            latency_ms=call.latency_ms,
            error=call.error,
            created_at=now,
        )
        job.calls.append(RecordedCall(record, call))
        # Whatever the job's status: a call that ends after its job still cost money.
        job.total_tokens += call.prompt_tokens + call.completion_tokens
        job.total_cost_usd += call.cost_usd or 0.0
        if job.status in OPEN_STATUSES:
            job.status = "in_progress"
            job.updated_at = now
        return record

    async def complete_job(self, claim: JobClaim) -> Job | None:
        await self._enter("complete_job")
        job = self.jobs.get(claim.job_id)
        if job is None or job.status not in OPEN_STATUSES:
            return None
        if claim.team_id is not None and job.team_id != claim.team_id:
            return None
        self._holds_reservation(job)
        now = self._now()
        self._end(job, claim.status, now)
        job.result_metadata = _copy(claim.result_metadata)
        job.error_message = claim.error_message
        job.replay_response = _copy(claim.replay_response)
        # Every call recorded before the claim counts (they all are: the claim is atomic).
        failed = any(c.record.status == "failed" for c in job.calls)
        charge = claim.status == "completed" and not failed
        self._settle(
            job,
            charge=charge,
            kind="deduction" if charge else "release",
            reason=ledger_text.settle_reason(job.job_type, claim.status, charged=charge),
            now=now,
        )
        return job.view()

    async def update_job_metadata(
        self, job_id: str, merge: Callable[[str, dict[str, Any]], dict[str, Any]]
    ) -> Job | None:
        await self._enter("update_job_metadata")
        job = self.jobs.get(job_id)
        if job is None:
            return None
        merged = merge(job.status, _copy(job.metadata))
        job.metadata = _copy(merged)
        job.updated_at = self._now()
        return job.view()

    async def expire_stale_jobs(self, cutoff: datetime, batch: int = 100) -> int:
        await self._enter("expire_stale_jobs")
        stale = [
            j.job_id
            for j in self.jobs.values()
            if j.status in OPEN_STATUSES and j.updated_at < cutoff
        ][:batch]
        expired = 0
        for job_id in stale:
            # One transaction per job, as the writers do: others may run in between.
            await asyncio.sleep(0)
            job = self.jobs[job_id]
            if job.status not in OPEN_STATUSES or job.updated_at >= cutoff:
                continue  # completed (or used) meanwhile
            self._holds_reservation(job)
            now = self._now()
            self._end(job, "expired", now)
            self._settle(
                job,
                charge=False,
                kind="expiry",
                reason=ledger_text.expiry_reason(job.job_type),
                now=now,
            )
            expired += 1
        return expired

    async def list_team_jobs(
        self, team_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[int, list[Job]]:
        await self._enter("list_team_jobs")
        rows = [
            j
            for j in self.jobs.values()
            if j.team_id == team_id and (status is None or j.status == status)
        ]
        # created_at DESC, job_id ASC
        rows.sort(key=lambda j: j.job_id)
        rows.sort(key=lambda j: j.created_at, reverse=True)
        return len(rows), [j.view() for j in rows[offset : offset + limit]]

    async def team_remaining(self, team_id: str) -> int | None:
        await self._enter("team_remaining")
        team = self.teams.get(team_id)
        return None if team is None else team.credits.remaining

    # Ledger ---------------------------------------------------------------------------------

    async def balance(self, team_id: str) -> Credits | None:
        await self._enter("balance")
        team = self.teams.get(team_id)
        return None if team is None else team.credits

    async def team_state(self, team_id: str) -> TeamState | None:
        await self._enter("team_state")
        team = self.teams.get(team_id)
        return None if team is None else TeamState(status=team.status, credits=team.credits)

    async def add_credits(self, addition: NewAddition) -> tuple[LedgerEntry, Credits] | None:
        await self._enter("add_credits")
        team = self.teams.get(addition.team_id)
        if team is None or team.allocated > addition.max_total - addition.amount:
            return None
        if addition.request_id is not None and any(
            s.entry.team_id == addition.team_id and s.request_id == addition.request_id
            for s in self.ledger
        ):
            raise ConstraintViolation(f"request_id {addition.request_id!r} is taken")
        now = self._now()
        team.allocated += addition.amount
        team.updated_at = now
        entry = self._entry(
            team_id=team.team_id,
            kind="addition",
            amount=addition.amount,
            balance_after=team.credits.remaining,
            reason=addition.reason or ledger_text.ADDITION,
            job_id=None,
            now=now,
            metadata=addition.metadata,
            request_id=addition.request_id,
            request_hash=addition.request_hash,
        )
        return entry, team.credits

    async def addition_by_request(self, team_id: str, request_id: str) -> StoredAddition | None:
        await self._enter("addition_by_request")
        for s in self.ledger:
            if s.entry.team_id == team_id and s.request_id == request_id:
                return StoredAddition(s.entry, s.request_hash, self.teams[team_id].credits)
        return None

    async def transactions(
        self, team_id: str, limit: int, offset: int
    ) -> tuple[int, list[LedgerEntry]]:
        await self._enter("transactions")
        rows = self.entries(team_id)
        rows.reverse()  # newest first
        return len(rows), rows[offset : offset + limit]

    # TeamDirectory --------------------------------------------------------------------------

    def _resolve(self, names: Sequence[str], known: dict[str, Any], kind: str) -> list[str]:
        for name in names:
            if name not in known:
                raise UnknownReference(kind, name)
        if len(set(names)) != len(names):
            raise ConstraintViolation(f"duplicate {kind} in {list(names)}")
        return list(names)

    def _groups(self, team: _TeamRow) -> list[ModelGroup]:
        names = list(team.groups)
        for access in team.access_groups:
            names.extend(self.access_groups[access].model_groups)
        return [self.model_groups[n] for n in dict.fromkeys(names) if n in self.model_groups]

    def _team(self, team: _TeamRow) -> Team:
        groups = self._groups(team)
        return Team(
            team_id=team.team_id,
            organization_id=team.organization_id,
            team_alias=team.team_alias,
            status=team.status,
            metadata=_copy(team.metadata),
            key_prefix=team.key_prefix,
            credits=team.credits,
            model_groups=[g.group_name for g in groups],
            allowed_models=list(dict.fromkeys(m.model_name for g in groups for m in g.models)),
            created_at=team.created_at,
            updated_at=team.updated_at,
            access_groups=list(team.access_groups),
            limits=team.limits,
        )

    async def create_team(self, team: NewTeam) -> Team:
        await self._enter("create_team")
        if team.organization_id not in self.organizations:
            raise UnknownReference("organization", team.organization_id)
        groups = self._resolve(team.group_names, self.model_groups, "model_group")
        access = self._resolve(team.access_group_names, self.access_groups, "access_group")
        if team.team_id in self.teams:
            raise ConstraintViolation(f"team {team.team_id!r} exists")
        if any(t.key_hash == team.key_hash for t in self.teams.values()):
            raise ConstraintViolation("key_hash is taken")
        now = self._now()
        row = _TeamRow(
            team_id=team.team_id,
            organization_id=team.organization_id,
            team_alias=team.team_alias,
            status="active",
            metadata=_copy(team.metadata),
            key_hash=team.key_hash,
            key_prefix=team.key_prefix,
            allocated=team.credits_allocated,
            used=0,
            reserved=0,
            created_at=now,
            updated_at=now,
            groups=groups,
            access_groups=access,
            limits=team.limits,
        )
        self.teams[team.team_id] = row
        if team.credits_allocated > 0:
            self._entry(
                team_id=team.team_id,
                kind="allocation",
                amount=team.credits_allocated,
                balance_after=team.credits_allocated,
                reason=ledger_text.ALLOCATION,
                job_id=None,
                now=now,
            )
        return self._team(row)

    async def get_team(self, team_id: str) -> Team | None:
        await self._enter("get_team")
        row = self.teams.get(team_id)
        return None if row is None else self._team(row)

    async def limits_of(self, team_id: str) -> TeamLimits | None:
        await self._enter("limits_of")
        row = self.teams.get(team_id)
        return None if row is None else row.limits

    async def set_limits(self, team_id: str, changes: dict[str, int | float]) -> Team | None:
        await self._enter("set_limits")
        row = self.teams.get(team_id)
        if row is None:
            return None
        row.limits = replace(row.limits, **changes)  # type: ignore[arg-type]
        row.updated_at = self._now()
        return self._team(row)

    async def groups_of(self, team_id: str) -> list[ModelGroup]:
        await self._enter("groups_of")
        row = self.teams.get(team_id)
        return [] if row is None else self._groups(row)

    async def teams_of_organization(self, organization_id: str) -> list[Team]:
        await self._enter("teams_of_organization")
        rows = [t for t in self.teams.values() if t.organization_id == organization_id]
        rows.sort(key=lambda t: (t.created_at, t.team_id))
        return [self._team(t) for t in rows]

    async def auth_by_key_hash(self, key_hash: str) -> TeamAuth | None:
        await self._enter("auth_by_key_hash")
        for t in self.teams.values():
            if t.key_hash == key_hash:
                return TeamAuth(team_id=t.team_id, status=t.status)
        return None

    async def set_model_groups(self, team_id: str, group_names: Sequence[str]) -> Team | None:
        await self._enter("set_model_groups")
        row = self.teams.get(team_id)
        if row is None:
            return None
        row.groups = self._resolve(group_names, self.model_groups, "model_group")
        row.updated_at = self._now()
        return self._team(row)

    async def rotate_key(self, team_id: str, key_hash: str, key_prefix: str) -> bool:
        await self._enter("rotate_key")
        row = self.teams.get(team_id)
        if row is None:
            return False
        row.key_hash, row.key_prefix = key_hash, key_prefix
        row.updated_at = self._now()
        return True

    async def set_status(self, team_id: str, status: str, error_message: str) -> Team | None:
        await self._enter("set_status")
        row = self.teams.get(team_id)
        if row is None:
            return None
        now = self._now()
        row.status = status
        row.updated_at = now
        if status == "suspended":
            for job in self.jobs.values():
                if job.team_id == team_id and job.status in OPEN_STATUSES:
                    self._holds_reservation(job)
                    self._end(job, "failed", now)
                    job.error_message = error_message
                    self._settle(
                        job,
                        charge=False,
                        kind="release",
                        reason=ledger_text.suspension_reason(job.job_type),
                        now=now,
                    )
        return self._team(row)

    # Catalog --------------------------------------------------------------------------------

    async def create_organization(
        self, organization_id: str, name: str, metadata: dict[str, Any]
    ) -> Organization:
        await self._enter("create_organization")
        if organization_id in self.organizations:
            raise ConstraintViolation(f"organization {organization_id!r} exists")
        now = self._now()
        org = Organization(organization_id, name, "active", _copy(metadata), now, now)
        self.organizations[organization_id] = org
        return org

    async def get_organization(self, organization_id: str) -> Organization | None:
        await self._enter("get_organization")
        return self.organizations.get(organization_id)

    async def list_organizations(self, limit: int, offset: int) -> tuple[list[Organization], int]:
        await self._enter("list_organizations")
        ordered = [self.organizations[k] for k in sorted(self.organizations)]
        return ordered[offset : offset + limit], len(ordered)

    async def create_model_group(
        self,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
        *,
        cache_ttl_seconds: int = 0,
    ) -> ModelGroup:
        await self._enter("create_model_group")
        if group_name in self.model_groups:
            raise ConstraintViolation(f"model group {group_name!r} exists")
        now = self._now()
        group = ModelGroup(
            model_group_id=_new_id(),
            group_name=group_name,
            display_name=display_name,
            description=description,
            status="active",
            models=_models(models),
            metadata=_copy(metadata),
            created_at=now,
            updated_at=now,
            cache_ttl_seconds=cache_ttl_seconds,
        )
        self.model_groups[group_name] = group
        return group

    async def get_model_group(self, group_name: str) -> ModelGroup | None:
        await self._enter("get_model_group")
        return self.model_groups.get(group_name)

    async def list_model_groups(self) -> list[ModelGroup]:
        await self._enter("list_model_groups")
        return [self.model_groups[n] for n in sorted(self.model_groups)]

    async def update_model_group(
        self,
        group_name: str,
        display_name: str,
        description: str,
        models: list[ModelSpec],
        metadata: dict[str, Any],
        *,
        cache_ttl_seconds: int = 0,
    ) -> ModelGroup | None:
        await self._enter("update_model_group")
        old = self.model_groups.get(group_name)
        if old is None:
            return None
        group = ModelGroup(
            model_group_id=old.model_group_id,
            group_name=group_name,
            display_name=display_name,
            description=description,
            status=old.status,
            models=_models(models),
            metadata=_copy(metadata),
            created_at=old.created_at,
            updated_at=self._now(),
            cache_ttl_seconds=cache_ttl_seconds,
        )
        self.model_groups[group_name] = group
        return group

    async def delete_model_group(self, group_name: str) -> int | None:
        await self._enter("delete_model_group")
        if group_name not in self.model_groups:
            return None
        users = sum(1 for t in self.teams.values() if group_name in t.groups) + sum(
            1 for a in self.access_groups.values() if group_name in a.model_groups
        )
        if users:
            return users
        del self.model_groups[group_name]
        return 0

    async def create_access_group(
        self, group_name: str, description: str, model_groups: Sequence[str]
    ) -> AccessGroup:
        await self._enter("create_access_group")
        members = self._resolve(model_groups, self.model_groups, "model_group")
        if group_name in self.access_groups:
            raise ConstraintViolation(f"access group {group_name!r} exists")
        group = AccessGroup(group_name, description, members, self._now())
        self.access_groups[group_name] = group
        return group

    async def list_access_groups(self) -> list[AccessGroup]:
        await self._enter("list_access_groups")
        return [self.access_groups[n] for n in sorted(self.access_groups)]

    async def get_access_group(self, group_name: str) -> AccessGroup | None:
        await self._enter("get_access_group")
        return self.access_groups.get(group_name)

    # UsageStore -----------------------------------------------------------------------------

    async def by_team_and_type(
        self,
        start: datetime,
        end: datetime,
        *,
        team_id: str | None = None,
        org_id: str | None = None,
    ) -> dict[tuple[str, str], UsageRow]:
        await self._enter("by_team_and_type")
        slices: dict[tuple[str, str], list[JobRow]] = {}
        for j in self.jobs.values():
            if not start <= j.created_at < end:
                continue
            if team_id is not None and j.team_id != team_id:
                continue
            if org_id is not None and self.teams[j.team_id].organization_id != org_id:
                continue
            slices.setdefault((j.team_id, j.job_type), []).append(j)
        return {
            key: UsageRow(
                total_jobs=len(rows),
                successful_jobs=sum(
                    1 for j in rows if j.status == "completed" and j.credit_applied
                ),
                failed_jobs=sum(1 for j in rows if j.status in ("failed", "expired")),
                total_cost_usd=sum(j.total_cost_usd for j in rows),
                total_tokens=sum(j.total_tokens for j in rows),
            )
            for key, rows in slices.items()
        }

    async def direct_calls(
        self,
        start: datetime,
        end: datetime,
        *,
        team_id: str | None = None,
        org_id: str | None = None,
    ) -> DirectUsageRow:
        await self._enter("direct_calls")
        rows = [
            r
            for r in self.direct.values()
            if start <= r.call.created_at < end
            and (team_id is None or r.call.team_id == team_id)
            and (org_id is None or self.teams[r.call.team_id].organization_id == org_id)
        ]
        return DirectUsageRow(
            total_calls=len(rows),
            successful_calls=sum(1 for r in rows if r.status == "success"),
            total_tokens=sum(r.tokens for r in rows),
            total_cost_usd=sum(r.cost_nanos for r in rows) / NANOS_PER_USD,
        )

    # BudgetStore ----------------------------------------------------------------------------

    async def reserve_budget(self, call: NewDirectCall) -> bool:
        await self._enter("reserve_budget")
        team = self.teams.get(call.team_id)
        if team is None or team.status != "active" or call.call_id in self.direct:
            return False
        budget = team.allocated * BUDGET_NANOS_PER_CREDIT
        if budget - team.budget_spent - team.budget_reserved < call.reserved_nanos:
            return False
        team.budget_reserved += call.reserved_nanos
        self.direct[call.call_id] = DirectRow(call=call)
        return True

    async def settle_budget(self, settlement: DirectSettlement) -> bool:
        await self._enter("settle_budget")
        row = self.direct.get(settlement.call_id)
        if row is None or row.status != "in_flight":
            return False
        team = self.teams[row.call.team_id]
        team.budget_reserved -= row.call.reserved_nanos
        team.budget_spent += settlement.cost_nanos
        row.status = settlement.status
        row.cost_nanos = settlement.cost_nanos
        row.tokens = settlement.prompt_tokens + settlement.completion_tokens
        row.settlement = settlement
        return True

    async def budget_state(self, team_id: str) -> tuple[str, Budget] | None:
        await self._enter("budget_state")
        team = self.teams.get(team_id)
        if team is None:
            return None
        return team.status, Budget(
            team.allocated * BUDGET_NANOS_PER_CREDIT, team.budget_spent, team.budget_reserved
        )

    async def expire_direct_calls(self, cutoff: datetime) -> int:
        await self._enter("expire_direct_calls")
        stale = [
            r
            for r in self.direct.values()
            if r.status == "in_flight" and r.call.created_at < cutoff
        ]
        for r in stale:
            team = self.teams[r.call.team_id]
            team.budget_reserved -= r.call.reserved_nanos
            r.status = "expired"
        return len(stale)

    # HealthProbe ----------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._enter("ping")


def _models(models: list[ModelSpec]) -> list[ModelSpec]:
    """A group's models as the catalog stores them: in priority order, unique priorities."""
    if len({m.priority for m in models}) != len(models):
        raise ConstraintViolation("two models share a priority")
    return [
        ModelSpec(m.model_name, m.priority, _copy(dict(m.config)))
        for m in sorted(models, key=lambda m: m.priority)
    ]


def as_ports(
    store: MemoryStore,
) -> tuple[JobStore, Ledger, TeamDirectory, Catalog, UsageStore, HealthProbe, BudgetStore]:
    """The store as each port (mypy checks that it implements every one)."""
    return store, store, store, store, store, store, store
