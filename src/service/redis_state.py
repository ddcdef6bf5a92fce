"""State shared by every replica through Redis (REDIS_URL): circuit breakers and the response
cache. The domain sees them through its ports (domain/breaker.py SharedBreakers,
domain/response_cache.py CacheStore); server.py wires them in only when REDIS_URL is set.

Keys (all under REDIS_KEY_PREFIX):
- `<prefix>breakers`: one hash, field = model name, value "failures|opened|open_until|trial_until"
  with times on Redis's own clock (TIME), so that replicas' clocks never matter: what a replica
  is told is always "seconds from now". Each change is one Lua script (atomic); the hash expires
  an hour after its last change, so models nobody calls any more do not linger.
- `<prefix>cache:<sha256>`: one string per cached answer, with the group's TTL (SET PX).

A Redis that fails (down, slow past REDIS_TIMEOUT_SECONDS) raises `RedisUnavailable` at once for
the next REDIS_RETRY_SECONDS instead of making every call wait on a connect timeout; the domain
then falls back to its process's own state (breakers) or to a miss (cache), and logs it.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from service.domain.breaker import SharedState

# Seconds the breaker hash lives after its last change.
_BREAKERS_TTL_S = 3600

_PARSE = """
local function parse(v)
  if not v then return 0, 0, 0, 0 end
  local a, b, c, d = string.match(v, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  return tonumber(a) or 0, tonumber(b) or 0, tonumber(c) or 0, tonumber(d) or 0
end
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function store(key, field, f, o, u, tr, ttl)
  redis.call('HSET', key, field,
    f .. '|' .. o .. '|' .. string.format('%.3f', u) .. '|' .. string.format('%.3f', tr))
  redis.call('EXPIRE', key, ttl)
end
"""

# KEYS[1] hash; ARGV: model, threshold, cooldown, retry_after, ttl.
# -> {failures, opened, open_for, trial_for}
_FAILURE = (
    _PARSE
    + """
local t = now()
local f, o, u, tr = parse(redis.call('HGET', KEYS[1], ARGV[1]))
f = f + 1
local open_for = 0
if f >= tonumber(ARGV[2]) or o == 1 then open_for = tonumber(ARGV[3]) end
local ra = tonumber(ARGV[4])
if ra > open_for then open_for = ra end
if open_for > 0 then
  o = 1
  if t + open_for > u then u = t + open_for end
  tr = 0
end
store(KEYS[1], ARGV[1], f, o, u, tr, ARGV[5])
return {f, o, string.format('%.3f', u - t), string.format('%.3f', tr - t)}
"""
)

# KEYS[1] hash; ARGV: model, window, ttl. -> {} when the caller may try the model, else the state.
_CLAIM = (
    _PARSE
    + """
local t = now()
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {} end
local f, o, u, tr = parse(v)
if o == 0 then return {} end
if u > t or tr > t then
  return {f, o, string.format('%.3f', u - t), string.format('%.3f', tr - t)}
end
store(KEYS[1], ARGV[1], f, o, u, t + tonumber(ARGV[2]), ARGV[3])
return {}
"""
)

# KEYS[1] hash; ARGV: model, ttl.
_RELEASE = (
    _PARSE
    + """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local f, o, u, tr = parse(v)
store(KEYS[1], ARGV[1], f, o, u, 0, ARGV[2])
return 1
"""
)


class RedisUnavailable(Exception):
    """Redis failed a moment ago: not tried again before REDIS_RETRY_SECONDS."""


def _state(reply: list[Any]) -> SharedState:
    f, o, open_for, trial_for = reply
    return SharedState(
        failures=int(f), opened=int(o) == 1, open_for=float(open_for), trial_for=float(trial_for)
    )


class RedisState:
    """The process's one Redis connection pool (the breakers, the response cache and the rate
    limiter use it), with the fail-fast window of the breakers and the cache."""

    def __init__(self, url: str, prefix: str, *, timeout: float, retry_after: float) -> None:
        self.client: aioredis.Redis = aioredis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # One try: a failing Redis must cost a call at most one timeout (then the window).
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
        )
        self.prefix = prefix
        self.retry_after = retry_after
        self._down_until = 0.0

    async def run(self, operation: Any) -> Any:
        """Await `operation` (a Redis call's coroutine factory) unless Redis failed recently."""
        if time.monotonic() < self._down_until:
            raise RedisUnavailable("Redis failed recently")
        try:
            return await operation()
        except Exception:
            self._down_until = time.monotonic() + self.retry_after
            raise

    async def aclose(self) -> None:
        await self.client.aclose()


class RedisBreakers:
    """domain/breaker.py SharedBreakers on one Redis hash."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.key = state.prefix + "breakers"
        client = state.client
        self._failure = client.register_script(_FAILURE)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    async def failure(
        self, model: str, *, threshold: int, cooldown: float, retry_after: float
    ) -> SharedState:
        reply = await self.state.run(
            lambda: self._failure(
                keys=[self.key], args=[model, threshold, cooldown, retry_after, _BREAKERS_TTL_S]
            )
        )
        return _state(reply)

    async def success(self, model: str) -> None:
        await self.state.run(lambda: self.state.client.hdel(self.key, model))

    async def claim_trial(self, model: str, window: float) -> SharedState | None:
        reply = await self.state.run(
            lambda: self._claim(keys=[self.key], args=[model, window, _BREAKERS_TTL_S])
        )
        return _state(reply) if reply else None

    async def release_trial(self, model: str) -> None:
        await self.state.run(lambda: self._release(keys=[self.key], args=[model, _BREAKERS_TTL_S]))

    async def snapshot(self) -> dict[str, SharedState]:
        async def read() -> list[Any]:
            async with self.state.client.pipeline(transaction=False) as pipe:
                pipe.time()
                pipe.hgetall(self.key)
                result: list[Any] = await pipe.execute()
                return result

        (seconds, micros), fields = await self.state.run(read)
        now = seconds + micros / 1_000_000
        out: dict[str, SharedState] = {}
        for raw_model, raw in fields.items():
            try:
                f, o, u, tr = (float(x) for x in raw.decode().split("|"))
            except ValueError:
                continue
            out[raw_model.decode()] = SharedState(
                failures=int(f), opened=o == 1, open_for=u - now, trial_for=tr - now
            )
        return out


class RedisCacheStore:
    """domain/response_cache.py CacheStore on Redis strings with a TTL."""

    def __init__(self, state: RedisState) -> None:
        self.state = state
        self.prefix = state.prefix + "cache:"

    async def get(self, key: str) -> bytes | None:
        value = await self.state.run(lambda: self.state.client.get(self.prefix + key))
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            return
        await self.state.run(
            lambda: self.state.client.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))
        )
