"""Circuit breakers ("cooldowns"): a model that keeps failing is skipped by its groups for a
while instead of being tried first on every call (issue 16, DESIGN "Circuit breaking").

Per model:
- closed: tried as usual. Each retryable failure (connection, timeout, 408/409/429, 5xx, an
  invalid answer) adds one to its failures in a row; a success resets them.
- open: after `failures` failures in a row, or at once when the provider answered with a
  Retry-After, the model is skipped for max(`cooldown`, Retry-After) seconds.
- half-open: when that time is over, one call (the trial) tries it again; meanwhile the others
  still skip it. The trial's success closes the breaker, its failure opens it again.

A call whose group has every model open fails fast with UNAVAILABLE (domain/llm.py) instead of
waiting on providers known to be down.

Shared state: with a `SharedBreakers` store (Redis, service/redis_state.py) failures, openings and
trials are counted cluster-wide, and each replica mirrors the store's state in memory, refreshed
every `sync_interval` seconds by one round trip (`snapshot`). The per-call check (`check`) is a
dict lookup on that mirror and never waits on the store; the store is only written when
something fails, when a model with failures succeeds, and for a trial. A store that fails is
logged (at most once per LOG_EVERY_S) and the breaker goes on with its own process's state:
it fails open, never refusing calls because Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from service.observe import CallObserver, LogObserver
from service.providers.base import ModelSpec

log = logging.getLogger(__name__)

# What check() says of a model.
ALLOW = 0  # closed (or failing below the threshold): try it
SKIP = 1  # open, or half-open with its trial in flight: skip it
TRIAL = 2  # half-open: this call may be the trial (claim it with try_trial)

# Seconds between two log lines about a failing shared store.
LOG_EVERY_S = 30.0


def breaker_key(model: ModelSpec) -> str:
    """What a breaker is kept for: the model name, and for a model served at its own
    `api_base` a short hash of it (two deployments of one name fail separately; the URL itself,
    which may carry credentials, is never shown)."""
    base = model.config.get("api_base")
    if not base:
        return model.model_name
    memo = (model.model_name, str(base))
    key = _KEYS.get(memo)
    if key is None:
        if len(_KEYS) >= 10_000:
            _KEYS.clear()
        digest = hashlib.sha256(memo[1].encode()).hexdigest()[:8]
        key = _KEYS[memo] = f"{model.model_name}@{digest}"
    return key


_KEYS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True, slots=True)
class SharedState:
    """One model's state as the shared store reports it: failures in a row, whether it has been
    opened since it was last closed, seconds left until its opening ends (<= 0: its cooldown is
    over) and seconds left of a trial in flight (<= 0: none)."""

    failures: int
    opened: bool
    open_for: float
    trial_for: float


class SharedBreakers(Protocol):
    """The cluster-wide store of breaker state (service/redis_state.py). Every method may raise
    on a store error; the caller then falls back to its process's own state."""

    async def failure(
        self, model: str, *, threshold: int, cooldown: float, retry_after: float
    ) -> SharedState:
        """Count a failure in a row; open the breaker (for max(cooldown, retry_after)) when the
        threshold is reached, when it was open before (a failed trial), or for a Retry-After."""
        ...

    async def success(self, model: str) -> None:
        """Close the breaker: forget the model's failures."""
        ...

    async def claim_trial(self, model: str, window: float) -> SharedState | None:
        """None when this caller may try the model (it is closed, or its cooldown is over and
        no other trial is in flight: this caller's trial then holds for `window` seconds); else
        the state that refuses it."""
        ...

    async def release_trial(self, model: str) -> None:
        """A trial ended without an answer either way (cancelled): let another caller try."""
        ...

    async def snapshot(self) -> dict[str, SharedState]:
        """Every model that is failing, open or half-open."""
        ...


@dataclass(slots=True)
class _Local:
    """A model's state in this process (times on this process's monotonic clock)."""

    failures: int = 0
    opened: bool = False
    open_until: float = 0.0
    trial_until: float = 0.0


@dataclass(frozen=True, slots=True)
class BreakerReport:
    """A model whose breaker is not closed (GET /health)."""

    model: str
    state: str  # open | half_open
    retry_in_seconds: float
    consecutive_failures: int


def _state_name(st: _Local | None, now: float) -> str:
    if st is None or not st.opened:
        return "closed"
    return "open" if st.open_until > now else "half_open"


class Breakers:
    def __init__(
        self,
        *,
        failures: int = 5,
        cooldown: float = 30.0,
        shared: SharedBreakers | None = None,
        observer: CallObserver | None = None,
        sync_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = max(1, failures)
        self.cooldown = cooldown
        self.shared = shared
        self.observer = observer or LogObserver()
        self.sync_interval = sync_interval
        self.clock = clock
        self._states: dict[str, _Local] = {}
        self._logged_at = -LOG_EVERY_S
        self._sync_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        # When this replica last changed each model's state itself: a snapshot asked for before
        # that is older than what the replica knows, and leaves the model alone.
        self._changed: dict[str, float] = {}

    # The per-call path --------------------------------------------------------------------

    def check(self, model: str) -> int:
        """ALLOW, SKIP or TRIAL for a call about to try `model`: no I/O."""
        st = self._states.get(model)
        if st is None or not st.opened:
            return ALLOW
        now = self.clock()
        if st.open_until > now or st.trial_until > now:
            return SKIP
        return TRIAL

    async def try_trial(self, model: str) -> bool:
        """Claim the trial of a half-open model (check() said TRIAL): True when this call is it."""
        window = max(self.cooldown, 1.0)
        if self.shared is not None:
            try:
                refused = await self.shared.claim_trial(model, window)
            except Exception as exc:
                self._store_failed("claim_trial", exc)
            else:
                if refused is not None:
                    self._apply(model, refused)
                    return False
                mine = self._states.setdefault(model, _Local())
                mine.trial_until = self.clock() + window
                self._changed[model] = self.clock()
                self.observer.breaker(model, "half_open")
                return True
        st = self._states.get(model)
        now = self.clock()
        if st is None or not st.opened:
            return True
        if st.open_until > now or st.trial_until > now:
            return False
        st.trial_until = now + window
        self.observer.breaker(model, "half_open")
        return True

    def abandon(self, model: str) -> None:
        """The trial of `model` ended without an answer (cancelled, out of time before it
        started): another call may try it."""
        st = self._states.get(model)
        if st is not None:
            st.trial_until = 0.0
        if self.shared is not None:
            task = asyncio.get_running_loop().create_task(self._release(model))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _release(self, model: str) -> None:
        assert self.shared is not None
        try:
            await self.shared.release_trial(model)
        except Exception as exc:
            self._store_failed("release_trial", exc)

    def tracked(self, model: str) -> bool:
        """Whether this replica knows of failures of `model` (else success() has nothing to do:
        the caller skips it, and its coroutine, on the common path)."""
        return model in self._states

    async def success(self, model: str) -> None:
        """The model answered: close its breaker. Nothing to do (no I/O) when it had no
        failures, as far as this replica knows."""
        st = self._states.pop(model, None)
        if st is None:
            return
        self._changed[model] = self.clock()
        if st.opened:
            self.observer.breaker(model, "closed")
            log.info("circuit closed", extra={"model": model})
        if self.shared is not None:
            try:
                await self.shared.success(model)
            except Exception as exc:
                self._store_failed("success", exc)

    async def failure(self, model: str, retry_after: float | None = None) -> None:
        """The model failed (a retryable error): one more failure in a row."""
        wait = retry_after or 0.0
        if self.shared is not None:
            try:
                state = await self.shared.failure(
                    model, threshold=self.threshold, cooldown=self.cooldown, retry_after=wait
                )
            except Exception as exc:
                self._store_failed("failure", exc)
            else:
                self._apply(model, state)
                return
        st = self._states.setdefault(model, _Local())
        st.failures += 1
        open_for = self.cooldown if st.failures >= self.threshold or st.opened else 0.0
        open_for = max(open_for, wait)
        if open_for > 0:
            was = _state_name(st, self.clock())
            st.opened = True
            st.open_until = max(st.open_until, self.clock() + open_for)
            st.trial_until = 0.0
            if was != "open":
                self._opened(model, st, open_for)

    def retry_in(self, model: str) -> float:
        """Seconds until an open model may be tried again (0 when it may be now)."""
        st = self._states.get(model)
        if st is None:
            return 0.0
        return max(0.0, max(st.open_until, st.trial_until) - self.clock())

    # State from the shared store ------------------------------------------------------------

    def _apply(self, model: str, shared: SharedState, *, mine: bool = True) -> None:
        """Take the store's state of `model`: from this replica's own change (`mine`), or from a
        snapshot."""
        now = self.clock()
        if mine:
            self._changed[model] = now
        st = self._states.get(model)
        was = _state_name(st, now)
        if shared.failures <= 0 and not shared.opened:
            self._states.pop(model, None)
            if was != "closed":
                self.observer.breaker(model, "closed")
            return
        if st is None:
            st = self._states[model] = _Local()
        st.failures = shared.failures
        st.opened = shared.opened
        st.open_until = now + shared.open_for if shared.opened else 0.0
        st.trial_until = now + shared.trial_for if shared.trial_for > 0 else 0.0
        state = _state_name(st, now)
        if state != was:
            if state == "open":
                self._opened(model, st, shared.open_for)
            else:
                self.observer.breaker(model, state)

    def _opened(self, model: str, st: _Local, seconds: float) -> None:
        self.observer.breaker(model, "open")
        log.warning(
            "circuit open: the model is skipped by its groups",
            extra={"model": model, "failures": st.failures, "seconds": round(seconds, 3)},
        )

    async def sync_once(self) -> None:
        """Mirror the shared store (one round trip)."""
        if self.shared is None:
            return
        asked = self.clock()
        try:
            snapshot = await self.shared.snapshot()
        except Exception as exc:
            self._store_failed("snapshot", exc)
            return
        changed = self._changed
        self._changed = {m: t for m, t in changed.items() if t >= asked}
        closed = SharedState(0, False, 0.0, 0.0)
        for model in [m for m in self._states if m not in snapshot]:
            if changed.get(model, -1.0) < asked:
                self._apply(model, closed, mine=False)
        for model, state in snapshot.items():
            if changed.get(model, -1.0) < asked:
                self._apply(model, state, mine=False)

    async def _sync_forever(self) -> None:
        while True:
            await self.sync_once()
            await asyncio.sleep(self.sync_interval)

    def start(self) -> None:
        """Mirror the shared store in the background (nothing to do without one)."""
        if self.shared is not None and self._sync_task is None:
            self._sync_task = asyncio.get_running_loop().create_task(
                self._sync_forever(), name="breaker-sync"
            )

    async def stop(self) -> None:
        task, self._sync_task = self._sync_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _store_failed(self, what: str, exc: Exception) -> None:
        now = self.clock()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "circuit breaker store unavailable: this replica uses its own state",
                extra={"operation": what, "error": type(exc).__name__},
            )

    # Reports --------------------------------------------------------------------------------

    def report(self) -> list[BreakerReport]:
        """The models whose breaker is not closed, by name."""
        now = self.clock()
        out = []
        for model in sorted(self._states):
            st = self._states[model]
            state = _state_name(st, now)
            if state == "closed":
                continue
            out.append(
                BreakerReport(
                    model=model,
                    state=state,
                    retry_in_seconds=round(max(0.0, st.open_until - now), 3),
                    consecutive_failures=st.failures,
                )
            )
        return out
