"""domain/breaker.py on a fake clock: the state machine without the network."""

from __future__ import annotations

import pytest

from service.domain.breaker import ALLOW, SKIP, TRIAL, Breakers, SharedState, breaker_key
from service.providers.base import ModelSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    def __init__(self) -> None:
        self.states: list[tuple[str, str]] = []

    def attempt(self, *args: object) -> None: ...

    def call(self, *args: object, **kwargs: object) -> None: ...

    def cache(self, model_group: str, hit: bool) -> None: ...

    def breaker(self, model: str, state: str) -> None:
        self.states.append((model, state))


def make(**kwargs: object) -> tuple[Breakers, Clock, Recorder]:
    clock, rec = Clock(), Recorder()
    b = Breakers(clock=clock, observer=rec, **kwargs)  # type: ignore[arg-type]
    return b, clock, rec


async def test_opens_after_the_threshold_and_a_success_resets_the_count() -> None:
    b, _clock, rec = make(failures=3, cooldown=10)
    await b.failure("m")
    await b.failure("m")
    await b.success("m")  # not in a row any more
    await b.failure("m")
    await b.failure("m")
    assert b.check("m") == ALLOW
    await b.failure("m")
    assert b.check("m") == SKIP and rec.states == [("m", "open")]
    assert b.retry_in("m") == pytest.approx(10)
    assert [(r.model, r.state, r.consecutive_failures) for r in b.report()] == [("m", "open", 3)]


async def test_half_open_lets_one_trial_through() -> None:
    b, clock, rec = make(failures=1, cooldown=10)
    await b.failure("m")
    clock.now += 10.5
    assert b.check("m") == TRIAL
    assert await b.try_trial("m") is True
    assert b.check("m") == SKIP  # the trial is in flight
    assert await b.try_trial("m") is False
    # A trial that fails opens it again for a whole cooldown.
    await b.failure("m")
    assert b.check("m") == SKIP and b.retry_in("m") == pytest.approx(10)
    clock.now += 10.5
    assert await b.try_trial("m") is True
    # A cancelled trial lets the next call try at once.
    b.abandon("m")
    assert b.check("m") == TRIAL and await b.try_trial("m") is True
    await b.success("m")
    assert b.check("m") == ALLOW and b.report() == []
    opened, trial, closed = ("m", "open"), ("m", "half_open"), ("m", "closed")
    assert rec.states == [opened, trial, opened, trial, trial, closed]


async def test_retry_after_opens_at_once_for_as_long() -> None:
    b, clock, _ = make(failures=5, cooldown=2)
    await b.failure("m", retry_after=30)
    assert b.check("m") == SKIP and b.retry_in("m") == pytest.approx(30)
    clock.now += 29
    assert b.check("m") == SKIP
    clock.now += 1.5
    assert b.check("m") == TRIAL


class BrokenStore:
    async def failure(self, model: str, **kwargs: object) -> SharedState:
        raise ConnectionError("redis down")

    async def success(self, model: str) -> None:
        raise ConnectionError("redis down")

    async def claim_trial(self, model: str, window: float) -> SharedState | None:
        raise ConnectionError("redis down")

    async def release_trial(self, model: str) -> None:
        raise ConnectionError("redis down")

    async def snapshot(self) -> dict[str, SharedState]:
        raise ConnectionError("redis down")


async def test_a_failing_store_falls_back_to_the_process_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    b, clock, _ = make(failures=2, cooldown=5, shared=BrokenStore())
    await b.failure("m")
    await b.failure("m")
    await b.sync_once()
    assert b.check("m") == SKIP
    clock.now += 6
    assert await b.try_trial("m") is True
    await b.success("m")
    assert b.check("m") == ALLOW
    warnings = [r for r in caplog.records if "store unavailable" in r.getMessage()]
    assert len(warnings) == 1  # at most one line per LOG_EVERY_S


def test_keys_tell_deployments_apart_without_showing_the_url() -> None:
    plain = ModelSpec("gpt-4o", 0, {})
    one = ModelSpec("gpt-4o", 0, {"api_base": "https://user:secret@a.example/v1"})
    two = ModelSpec("gpt-4o", 0, {"api_base": "https://b.example/v1"})
    assert breaker_key(plain) == "gpt-4o"
    assert breaker_key(one) != breaker_key(two)
    assert breaker_key(one).startswith("gpt-4o@") and "secret" not in breaker_key(one)
