"""The response cache (issue 16, DESIGN "Response cache"): exact-match and opt-in per model
group (`cache_ttl_seconds`, 0 = off).

Key: SHA-256 of a canonical JSON (sorted keys, no whitespace) of the caller's organization, the
group's name, the time it was last changed and its models (a group changed by an update never
serves answers of its old models), the messages and every parameter. Two teams of one
organization share answers; another organization's identical request misses.

Only non-streamed chat answers are cached (a stream's timing cannot be replayed faithfully, and
an answer cut by a client that went away is not an answer); embeddings are not. A hit calls no
provider: the call is recorded as a success of the model that first answered, with its token
counts and no provider cost, and still counts as a call of its job.

Stores: Redis (service/redis_state.py) when REDIS_URL is set, shared by every replica; else
`LocalCacheStore`, a bounded LRU in the process. A store error is a miss (logged at most once
per LOG_EVERY_S): the call goes to the provider as if there were no cache.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from service.domain.models import ModelGroup
from service.domain.ports import TeamDirectory
from service.observe import CallObserver, LogObserver
from service.providers.base import ChatRequest, ChatResult, Choice, TokenUsage

log = logging.getLogger(__name__)

LOG_EVERY_S = 30.0
# Teams whose organization is remembered (a team never changes organization).
_MAX_SCOPES = 10_000


class CacheStore(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...


class LocalCacheStore:
    """An in-process LRU with a TTL per entry, bounded by entries and by bytes (the least
    recently used go first). Plain OrderedDict: a get or set is O(1), nothing runs in the
    background (an expired entry goes when it is read or pushed out)."""

    def __init__(
        self,
        max_entries: int = 1000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max(1, max_entries)
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= self.clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0 or len(value) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self.clock() + ttl, value)
        self._bytes += len(value)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(value)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    model: str  # the model that answered first
    result: ChatResult


def cache_key(organization_id: str, group: ModelGroup, request: ChatRequest) -> str:
    canonical = orjson.dumps(
        [
            organization_id,
            group.group_name,
            group.updated_at.isoformat(),
            [m.model_name for m in group.models],
            request.messages,
            request.params,
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(canonical).hexdigest()


def encode(model: str, r: ChatResult) -> bytes:
    return orjson.dumps(
        {
            "m": model,
            "c": r.content,
            "f": r.finish_reason,
            "u": [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.estimated],
            "t": r.tool_calls,
            "x": [[c.content, c.finish_reason, c.tool_calls] for c in r.more_choices],
        }
    )


def decode(raw: bytes) -> CachedAnswer:
    d: dict[str, Any] = orjson.loads(raw)
    prompt, completion, estimated = d["u"]
    return CachedAnswer(
        model=str(d["m"]),
        result=ChatResult(
            content=str(d["c"]),
            finish_reason=str(d["f"]),
            usage=TokenUsage(int(prompt), int(completion), bool(estimated)),
            tool_calls=list(d["t"]),
            more_choices=tuple(Choice(str(c), str(f), list(t)) for c, f, t in d["x"]),
        ),
    )


@dataclass(frozen=True, slots=True)
class Lookup:
    """A lookup that missed: where to store the answer once the provider gives it."""

    key: str
    ttl: int


class ResponseCache:
    def __init__(
        self,
        store: CacheStore,
        teams: TeamDirectory,
        observer: CallObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.teams = teams
        self.observer = observer or LogObserver()
        self.clock = clock
        self._orgs: dict[str, str] = {}
        self._logged_at = -LOG_EVERY_S

    async def _organization(self, team_id: str) -> str | None:
        org = self._orgs.get(team_id)
        if org is None:
            team = await self.teams.get_team(team_id)
            if team is None:
                return None
            if len(self._orgs) >= _MAX_SCOPES:
                self._orgs.clear()
            org = self._orgs[team_id] = team.organization_id
        return org

    async def lookup(
        self, team_id: str, group: ModelGroup, request: ChatRequest
    ) -> CachedAnswer | Lookup | None:
        """A cached answer, or where to store one (a miss); None when the group does not cache.
        Counted in the cache metrics either way."""
        if group.cache_ttl_seconds <= 0:
            return None
        org = await self._organization(team_id)
        if org is None:
            return None
        key = cache_key(org, group, request)
        raw: bytes | None = None
        try:
            raw = await self.store.get(key)
        except Exception as exc:
            self._store_failed("get", exc)
        if raw is not None:
            try:
                answer = decode(raw)
            except (ValueError, KeyError, TypeError):
                log.warning("response cache: unreadable entry ignored")
            else:
                self.observer.cache(group.group_name, True)
                return answer
        self.observer.cache(group.group_name, False)
        return Lookup(key=key, ttl=group.cache_ttl_seconds)

    async def store_answer(self, where: Lookup, model: str, result: ChatResult) -> None:
        try:
            await self.store.set(where.key, encode(model, result), where.ttl)
        except Exception as exc:
            self._store_failed("set", exc)

    def _store_failed(self, what: str, exc: Exception) -> None:
        now = self.clock()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "response cache store unavailable: calls go to the provider",
                extra={"operation": what, "error": type(exc).__name__},
            )
