"""The domain services on the in-memory ports (tests/support/memory.py) and a scripted provider
(tests/support/scripted.py; models without a script are the simulator's). No database, no
server: every test runs in milliseconds.

After every test: no task the test started is still running (a stream's pump, its watcher, a
shielded record), and the ledger invariants hold (tests/support/memory.py violations())."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from service.domain.credits import CreditsService
from service.domain.jobs import CallInput, JobsService
from service.domain.llm import CallRunner
from service.domain.models import Job
from service.domain.principal import ADMIN, Principal
from service.domain.tenancy import TenancyService
from service.providers.base import ChatRequest, ModelSpec
from service.providers.simulator import SimulatorProvider
from tests.support.memory import MemoryStore
from tests.support.scripted import ScriptedProvider

TEAM = "t1"
GROUP = "g"
# The default group: two scripted models, in priority order.
MODEL_A = "scripted/a"
MODEL_B = "scripted/b"
TEAM_KEY = Principal(is_admin=False, team_id=TEAM)
# Seconds a test waits for its tasks to end after it returned.
_TASKS_GRACE_S = 1.0


@dataclass
class Domain:
    store: MemoryStore
    provider: ScriptedProvider
    jobs: JobsService
    tenancy: TenancyService
    credits: CreditsService

    async def add_group(self, name: str, *models: str | ModelSpec) -> None:
        specs = [
            m if isinstance(m, ModelSpec) else ModelSpec(model_name=m, priority=i)
            for i, m in enumerate(models)
        ]
        await self.tenancy.create_model_group(ADMIN, name, "", "", specs, {})

    async def add_team(self, team_id: str, credits: int, groups: list[str] | None = None) -> None:
        await self.tenancy.create_team(
            ADMIN,
            organization_id="org",
            team_id=team_id,
            team_alias="",
            model_groups=[GROUP] if groups is None else groups,
            access_groups=[],
            credits_allocated=credits,
            metadata={},
        )

    async def new_job(
        self, team_id: str = TEAM, request_id: str = "", metadata: dict[str, Any] | None = None
    ) -> Job:
        job, replayed = await self.jobs.create(
            ADMIN,
            team_id=team_id,
            user_id="u1",
            job_type="test",
            metadata=metadata or {},
            request_id=request_id,
        )
        assert not replayed
        return job


def call(group: str = GROUP, content: str = "hello there", **params: Any) -> CallInput:
    return CallInput(
        model_group=group,
        purpose="unit",
        request=ChatRequest(messages=[{"role": "user", "content": content}], params=params),
    )


async def _tasks_end(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """The tasks started since `before` still running after a grace period (cancelled)."""
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    until = loop.time() + _TASKS_GRACE_S
    while True:
        left = [t for t in asyncio.all_tasks() if t not in before and t is not me and not t.done()]
        if not left or loop.time() > until:
            break
        await asyncio.sleep(0.01)
    for t in left:
        t.cancel()
    return left


@pytest.fixture
async def domain() -> AsyncIterator[Domain]:
    before = asyncio.all_tasks()
    store = MemoryStore()
    provider = ScriptedProvider(fallback=SimulatorProvider())
    runner = CallRunner(provider, default_timeout=5.0)
    d = Domain(
        store=store,
        provider=provider,
        jobs=JobsService(store, store, store, store, runner),
        tenancy=TenancyService(store, store),
        credits=CreditsService(store, store),
    )
    await d.tenancy.create_organization(ADMIN, "org", "Org", {})
    await d.add_group(GROUP, MODEL_A, MODEL_B)
    await d.add_team(TEAM, credits=10)
    yield d
    left = await _tasks_end(before)
    assert not left, f"tasks still running after the test: {left}"
    store.check_ledger()
