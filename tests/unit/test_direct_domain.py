"""The OpenAI-compatible API's rules (domain/direct.py) on the in-memory ports: model naming,
the budget's reservation and settlement (exact under concurrency), what a refusal says, and a
dropped stream paying for what it was sent."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from service.domain.direct import ChatDelta, ChatEnd, DirectService
from service.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from service.domain.principal import ADMIN
from service.domain.streaming import StreamStopped
from service.providers.base import ChatRequest, ModelSpec, StreamChunk, TokenUsage
from tests.support.scripted import Gate
from tests.unit.conftest import GROUP, MODEL_A, TEAM, TEAM_KEY, Domain

# Output at $0.001 a token, prompt free: a call of max_tokens=10 reserves exactly $0.01, and the
# simulator writes exactly 10 tokens, so it also costs $0.01.
EXACT = {"completion_tokens": 10, "input_cost_per_token": 0, "output_cost_per_token": 0.001}
HI = ChatRequest(messages=[{"role": "user", "content": "hi"}], params={"max_tokens": 10})


@pytest.fixture
def direct(domain: Domain) -> DirectService:
    return DirectService(
        domain.store, domain.store, domain.jobs.runner, domain.jobs.draining, default_max_tokens=50
    )


async def _priced_team(domain: Domain, team: str, credits: int) -> None:
    await domain.add_group(f"{team}-g", ModelSpec("simulator/exact", 0, EXACT))
    await domain.add_team(team, credits=credits, groups=[f"{team}-g"])


async def test_models_and_names(domain: Domain, direct: DirectService) -> None:
    listed = [m.id for m in await direct.models(TEAM_KEY)]
    assert listed == [MODEL_A, "scripted/b", GROUP]
    for name, group_models in ((GROUP, 2), (MODEL_A, 1), ("a", 1)):
        target = await direct.resolve(TEAM, name)
        assert target.group_name == GROUP and len(target.group.models) == group_models
    with pytest.raises(NotFound, match="'other' does not exist or you do not have access"):
        await direct.resolve(TEAM, "other")
    with pytest.raises(Unauthenticated):
        await direct.models(ADMIN)


async def test_concurrent_calls_never_pass_the_budget(
    domain: Domain, direct: DirectService
) -> None:
    from service.domain.principal import Principal

    await _priced_team(domain, "tb", credits=1)  # $0.10: ten calls
    who = Principal(is_admin=False, team_id="tb")
    results = await asyncio.gather(
        *(direct.chat(who, "exact", HI, None) for _ in range(50)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, FailedPrecondition)]
    assert len(ok) == 10 and len(refused) == 40
    assert all(r.message.startswith("Budget exceeded: spent $") for r in refused)
    assert "of $0.10" in refused[-1].message and "up to $0.01" in refused[-1].message
    found = await domain.store.budget_state("tb")
    assert found is not None
    _, budget = found
    assert (budget.spent_nanos, budget.reserved_nanos) == (100_000_000, 0)


async def test_refusals(domain: Domain, direct: DirectService) -> None:
    from service.domain.principal import Principal

    await domain.add_group("free", ModelSpec("scripted/unpriced", 0))
    await domain.add_team("tu", credits=10, groups=["free"])
    with pytest.raises(FailedPrecondition, match="has no price"):
        await direct.chat(Principal(is_admin=False, team_id="tu"), "unpriced", HI, None)
    with pytest.raises(InvalidArgument, match="n must be between"):
        await direct.chat(TEAM_KEY, GROUP, ChatRequest(HI.messages, {"n": 99}), None)
    await _priced_team(domain, "tp", credits=1)
    await domain.tenancy.set_team_status(ADMIN, "tp", "suspended")
    with pytest.raises(PermissionDenied, match="suspended"):
        await direct.chat(Principal(is_admin=False, team_id="tp"), "exact", HI, None)


async def test_a_dropped_stream_pays_for_what_it_was_sent(
    domain: Domain, direct: DirectService
) -> None:
    config = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.001}
    await domain.add_group("s", ModelSpec("scripted/s", 0, config))
    await domain.add_team("ts", credits=10, groups=["s"])
    gate = Gate()
    domain.provider.script("scripted/s", StreamChunk("one "), StreamChunk("two "), gate)
    from service.domain.principal import Principal

    opened = await direct.chat_stream(Principal(is_admin=False, team_id="ts"), "s", HI, None)
    async with contextlib.aclosing(opened.events) as events:
        assert await anext(events) == ChatDelta("one ")
    # The client went away: the call settled cancelled, with the tokens seen, nothing held.
    (row,) = domain.store.direct.values()
    assert row.status == "cancelled" and row.cost_nanos > 0
    found = await domain.store.budget_state("ts")
    assert found is not None and found[1].reserved_nanos == 0
    assert found[1].spent_nanos == row.cost_nanos
    gate.open()


async def test_a_suspension_ends_a_direct_stream(
    domain: Domain, direct: DirectService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.domain import streaming

    monkeypatch.setattr(streaming, "STREAM_CHECK_S", 0.01)
    config = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.001}
    await domain.add_group("s2", ModelSpec("scripted/s2", 0, config))
    await domain.add_team("t2", credits=10, groups=["s2"])
    gate = Gate()
    domain.provider.script(
        "scripted/s2", StreamChunk("one "), gate, StreamChunk(usage=TokenUsage(1, 1))
    )
    from service.domain.principal import Principal

    opened = await direct.chat_stream(Principal(is_admin=False, team_id="t2"), "s2", HI, None)
    got = []
    async with contextlib.aclosing(opened.events) as events:
        got.append(await anext(events))
        await domain.tenancy.set_team_status(ADMIN, "t2", "suspended")
        async for e in events:
            got.append(e)
    gate.open()
    assert got[0] == ChatDelta("one ")
    assert not any(isinstance(e, ChatEnd) for e in got)
    assert getattr(got[-1], "code", None) == 7
    assert StreamStopped  # the same stop as the job API's streams
