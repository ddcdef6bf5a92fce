"""The rate limiter shared by every replica: per-team requests and tokens per fixed window, in
Redis (domain/ports.py RateLimiter; domain/admission.py has the in-process one).

One Lua script per admission checks both counters of the team's current window and increments
them only when the call fits, atomically: N replicas together admit exactly `rpm` calls a
window. Keys: `<prefix>rl:<team>:<window>:r` (requests) and `...:t` (tokens), expiring after
two windows. The window is the replicas' clock (time.time() // window seconds; injectable):
replicas on NTP-synced hosts agree to milliseconds at a window's edge.

It runs on the process's one Redis connection pool (redis_state.RedisState, shared with the
breakers and the response cache). Redis unreachable (or slower than REDIS_TIMEOUT_SECONDS, the
pool's socket timeouts): the call is admitted (fail open: a Redis
outage must not stop every tenant's traffic), counted in gateway_rate_limiter_errors_total,
and logged at most once per LOG_EVERY_S; after a failure Redis is not asked again for
RETRY_AFTER_S, so that an outage costs no latency (docs/decisions.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from service import metrics
from service.domain.ports import RateDecision

log = logging.getLogger("service.ratelimit")

RETRY_AFTER_S = 1.0
LOG_EVERY_S = 10.0

# KEYS: requests, tokens. ARGV: rpm, tpm, tokens, ttl (ms). Returns {1} or {0, 1=rpm|2=tpm}.
# A call bigger than the whole tpm_limit passes only as the first of its window.
_ACQUIRE = """
local r = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = tonumber(redis.call('GET', KEYS[2]) or '0')
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if rpm > 0 and r + 1 > rpm then return {0, 1} end
if tpm > 0 and t > 0 and t + tokens > tpm then return {0, 2} end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if tokens > 0 then
  redis.call('INCRBY', KEYS[2], tokens)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return {1}
"""
# KEYS: requests, tokens. ARGV: requests delta, tokens delta, ttl (ms). Never below 0.
_ADJUST = """
for i = 1, 2 do
  local d = tonumber(ARGV[i])
  if d ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    local v = redis.call('INCRBY', KEYS[i], d)
    if v < 0 then redis.call('SET', KEYS[i], 0, 'PX', ARGV[3]) end
  end
end
return 1
"""


class RedisRateLimiter:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "gw:",
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`client`: a pool with short socket timeouts and no retries (RedisState's); its owner
        closes it."""
        self.redis: Any = client
        self.prefix = prefix
        self.window_seconds = window_seconds
        self.clock = clock
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._adjust = self.redis.register_script(_ADJUST)
        self._ttl_ms = int(window_seconds * 2000) + 1000
        self._down_until = 0.0
        self._logged_at = -math.inf

    def _keys(self, team_id: str, window: int) -> list[str]:
        base = f"{self.prefix}rl:{team_id}:{window}"
        return [base + ":r", base + ":t"]

    async def acquire(self, team_id: str, rpm: int, tpm: int, tokens: int) -> RateDecision:
        now = self.clock()
        window = int(now // self.window_seconds)
        if time.monotonic() < self._down_until:
            return RateDecision(True, window)
        try:
            found = await self._acquire(
                keys=self._keys(team_id, window), args=[rpm, tpm, tokens, self._ttl_ms]
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return RateDecision(True, window)
        if int(found[0]) == 1:
            return RateDecision(True, window)
        retry_after = max(1, math.ceil((window + 1) * self.window_seconds - now))
        return RateDecision(False, window, "rpm" if int(found[1]) == 1 else "tpm", retry_after)

    async def adjust(self, team_id: str, window: int, requests: int, tokens: int) -> None:
        if (not requests and not tokens) or time.monotonic() < self._down_until:
            return
        try:
            await self._adjust(
                keys=self._keys(team_id, window), args=[requests, tokens, self._ttl_ms]
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        metrics.limiter_error()
        self._down_until = time.monotonic() + RETRY_AFTER_S
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "rate limiter: Redis unreachable, calls are admitted without rate limits "
                "(fail open)",
                extra={"error": type(exc).__name__, "detail": str(exc)[:200]},
            )
