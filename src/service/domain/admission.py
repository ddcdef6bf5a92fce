"""Admission: the one step every LLM call passes before any provider is contacted, for both the
job API (domain/jobs.py) and the OpenAI-compatible API (domain/direct.py). DESIGN.md
"Operations" fixes the rules:

- Rate limits per team (`rpm_limit`, `tpm_limit`; 0 = none) over fixed windows of
  RATE_LIMIT_WINDOW_SECONDS (60), counted by a RateLimiter port (Redis across replicas, or in
  process). Over a limit: RESOURCE_EXHAUSTED `RATE_LIMITED` with `retry_after_seconds`.
- Per-job bounds (`max_calls_per_job`, `max_tokens_per_job`, `max_job_cost_usd`): past one,
  FAILED_PRECONDITION `JOB_LIMIT_EXCEEDED` naming it. A call's `max_tokens` is capped by what
  the job has left of max_tokens_per_job. The calls count is taken atomically by the store
  (JobStore.admit_call); tokens and cost are checked against the job's recorded totals, so
  calls running at the same moment may pass those two by their own usage (docs/decisions.md).

A refusal writes nothing: the checks that read come first, the rate limiter counts only what it
admits, and the job's count is taken last (the rate limiter's count is given back when it
fails). Tokens: a call is admitted on an estimate (its prompt, at ~4 bytes a token, plus its
max_tokens when set), and its Ticket corrects the window by the actual usage once the call is
recorded.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from saas_llm.v1.reasons import Reason
from service.domain.errors import (
    FailedPrecondition,
    RateLimited,
    job_limit_exceeded,
    team_not_found,
)
from service.domain.models import OPEN_STATUSES, JobRef, TeamLimits
from service.domain.ports import JobStore, RateDecision, RateLimiter, TeamDirectory
from service.providers.base import ChatRequest

log = logging.getLogger("service.admission")

# Called once per refusal: (kind, limit), kind "rate_limit" or "job_limit" (service/metrics.py
# refused()).
OnRefused = Callable[[str, str], None]


def estimate_tokens(payload: Any) -> int:
    """Tokens of a prompt (messages or embedding input), at about 4 bytes a token."""
    return max(1, len(orjson.dumps(payload)) // 4)


def output_tokens(params: Mapping[str, Any]) -> int:
    """The output bound a request sets (max_completion_tokens or max_tokens, times n), else 0."""
    limit = params.get("max_completion_tokens", params.get("max_tokens"))
    n = params.get("n")
    if not isinstance(limit, int) or isinstance(limit, bool):
        return 0
    return limit * (n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1)


@dataclass(slots=True)
class Ticket:
    """An admitted call's count in the rate limiter: corrected by the call's actual tokens when
    it is recorded (`settle`), or given back when a later step refuses it (`refund`). Both are
    best effort and happen once."""

    limiter: RateLimiter | None = None
    team_id: str = ""
    window: int = 0
    tokens: int = 0
    tpm: bool = False
    _done: bool = field(default=False, repr=False)

    async def settle(self, actual_tokens: int) -> None:
        if self._done or self.limiter is None:
            return
        self._done = True
        if self.tpm and actual_tokens != self.tokens:
            await self._adjust(0, actual_tokens - self.tokens)

    async def refund(self) -> None:
        if self._done or self.limiter is None:
            return
        self._done = True
        await self._adjust(-1, -self.tokens)

    async def _adjust(self, requests: int, tokens: int) -> None:
        assert self.limiter is not None
        # The limiter fails open on its own; anything else must not fail the call it counts.
        try:
            await self.limiter.adjust(self.team_id, self.window, requests, tokens)
        except Exception:
            log.warning("rate limit correction failed", exc_info=True)


# A call admitted without rate limits: nothing to settle or refund.
NO_TICKET = Ticket()


class Admission:
    def __init__(
        self,
        teams: TeamDirectory,
        jobs: JobStore | None,
        limiter: RateLimiter,
        on_refused: OnRefused | None = None,
    ) -> None:
        self.teams = teams
        self.jobs = jobs
        self.limiter = limiter
        self.on_refused = on_refused or (lambda kind, limit: None)

    async def limits(self, team_id: str) -> TeamLimits:
        """The team's limits (cached by the directory)."""
        found = await self.teams.limits_of(team_id)
        if found is None:
            raise team_not_found(team_id)
        return found

    async def rate(
        self, team_id: str, limits: TeamLimits, prompt: Any, params: Mapping[str, Any]
    ) -> Ticket:
        """Count a call (its `prompt`, messages or embedding input, and the output bound its
        `params` set) against the team's rpm and tpm limits, or refuse it (RateLimited) having
        counted nothing. No limits: nothing is asked (no round trip) and nothing estimated."""
        if not limits.rate_limited:
            return NO_TICKET
        tokens = estimate_tokens(prompt) + output_tokens(params)
        decision = await self.limiter.acquire(
            team_id, limits.rpm_limit, limits.tpm_limit, tokens if limits.tpm_limit else 0
        )
        if not decision.allowed:
            self.on_refused("rate_limit", decision.limit)
            value = limits.rpm_limit if decision.limit == "rpm" else limits.tpm_limit
            raise RateLimited(team_id, decision.limit, value, max(1, decision.retry_after))
        return Ticket(
            limiter=self.limiter,
            team_id=team_id,
            window=decision.window,
            tokens=tokens if limits.tpm_limit else 0,
            tpm=bool(limits.tpm_limit),
        )

    def check_job(self, job: JobRef, limits: TeamLimits, request: ChatRequest) -> ChatRequest:
        """The per-job bounds against what the job has used (read with it): refuses a call
        past one, else returns the request with max_tokens capped by what the job has left of
        max_tokens_per_job. Writes nothing."""
        if limits.max_calls_per_job and job.calls_admitted >= limits.max_calls_per_job:
            self._refuse_job("calls")
            raise job_limit_exceeded(
                job.job_id,
                "max_calls_per_job",
                limits.max_calls_per_job,
                f": {job.calls_admitted} calls made",
            )
        if limits.max_job_cost_usd and job.total_cost_usd >= limits.max_job_cost_usd:
            self._refuse_job("cost")
            raise job_limit_exceeded(
                job.job_id,
                "max_job_cost_usd",
                limits.max_job_cost_usd,
                f": ${job.total_cost_usd:.6f} spent",
            )
        if not limits.max_tokens_per_job:
            return request
        prompt = estimate_tokens(request.messages)
        left = limits.max_tokens_per_job - job.total_tokens - prompt
        if left < 1:
            self._refuse_job("tokens")
            raise job_limit_exceeded(
                job.job_id,
                "max_tokens_per_job",
                limits.max_tokens_per_job,
                f": {job.total_tokens} tokens used, and this prompt needs about {prompt}",
            )
        asked = request.params.get("max_tokens")
        if isinstance(asked, int) and not isinstance(asked, bool) and asked <= left:
            return request
        return replace(request, params={**request.params, "max_tokens": left})

    async def admit_job_call(
        self, job: JobRef, request: ChatRequest, ticket: Ticket | None = None
    ) -> tuple[ChatRequest, Ticket]:
        """A job's call: its bounds, the team's rate limits (unless `ticket` says they were
        counted already, by create-and-call), then the job's calls count, atomically. Returns
        the request to send (max_tokens capped) and the ticket to settle."""
        assert self.jobs is not None, "an admission without a job store admits no job call"
        limits = job.limits if job.limits is not None else await self.limits(job.team_id)
        request = self.check_job(job, limits, request)
        if ticket is None:
            ticket = await self.rate(job.team_id, limits, request.messages, request.params)
        if limits.max_calls_per_job:
            try:
                admitted = await self.jobs.admit_call(job.job_id, limits.max_calls_per_job)
            except BaseException:
                await ticket.refund()
                raise
            if not admitted:
                await ticket.refund()
                await self._why_not_admitted(job, limits)
        return request, ticket

    async def _why_not_admitted(self, job: JobRef, limits: TeamLimits) -> None:
        assert self.jobs is not None
        now = await self.jobs.job_ref(job.job_id)
        if now is not None and now.status not in OPEN_STATUSES:
            raise FailedPrecondition(
                f"Job '{job.job_id}' is {now.status}; create a new job for more calls",
                reason=Reason.JOB_NOT_OPEN,
            )
        self._refuse_job("calls")
        raise job_limit_exceeded(
            job.job_id,
            "max_calls_per_job",
            limits.max_calls_per_job,
            f": {now.calls_admitted if now else limits.max_calls_per_job} calls made",
        )

    def _refuse_job(self, limit: str) -> None:
        self.on_refused("job_limit", limit)


class LocalRateLimiter:
    """The in-process RateLimiter (no REDIS_URL): fixed windows of `window_seconds` on
    `clock` (injectable for tests). One process's counts only: with several replicas each
    admits up to the limit (use Redis there)."""

    def __init__(
        self, window_seconds: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.window_seconds = window_seconds
        self.clock = clock
        # team -> [window, requests, tokens]
        self._counts: dict[str, list[int]] = {}

    def _window(self) -> tuple[int, int]:
        now = self.clock()
        window = int(now // self.window_seconds)
        left = (window + 1) * self.window_seconds - now
        return window, max(1, math.ceil(left))

    async def acquire(self, team_id: str, rpm: int, tpm: int, tokens: int) -> RateDecision:
        window, retry_after = self._window()
        counts = self._counts.get(team_id)
        if counts is None or counts[0] != window:
            if len(self._counts) > 100_000:
                self._counts = {t: c for t, c in self._counts.items() if c[0] == window}
            counts = self._counts[team_id] = [window, 0, 0]
        if rpm and counts[1] + 1 > rpm:
            return RateDecision(False, window, "rpm", retry_after)
        # A call bigger than the whole tpm_limit passes only as the first of its window.
        if tpm and counts[2] > 0 and counts[2] + tokens > tpm:
            return RateDecision(False, window, "tpm", retry_after)
        counts[1] += 1
        counts[2] += tokens
        return RateDecision(True, window)

    async def adjust(self, team_id: str, window: int, requests: int, tokens: int) -> None:
        counts = self._counts.get(team_id)
        if counts is not None and counts[0] == window:
            counts[1] = max(0, counts[1] + requests)
            counts[2] = max(0, counts[2] + tokens)
