"""The per-call hot path (storage/fastpath.py) and the short read caches (storage/teams.py):
same results as the SQLAlchemy path, no blocked event loop when another process holds the
SQLite lock, a bounded WAL, and caches that never outlive a write of the same process."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from service.storage import fastpath
from service.storage.jobs import NewCall
from service.storage.teams import ReadCache
from tests.conftest import Client, fresh_database, start_client, stop_client
from tests.flows import make_team


def _call(job_id: str, team_id: str, status: str = "success") -> NewCall:
    return NewCall(
        job_id=job_id,
        team_id=team_id,
        model_group="g",
        model="openai/m",
        purpose="p",
        status=status,
        streamed=False,
        prompt_tokens=3,
        completion_tokens=4,
        usage_estimated=False,
        cost_usd=None,
        latency_ms=5,
        ttft_ms=None,
        error=None,
        attempts=[{"model": "openai/m", "error": None, "latency_ms": 5}],
    )


async def _open_job(c: Client) -> tuple[str, str]:
    team_id, _key = await make_team(c, credits=10)
    job, _ = await c.app.jobs_repo.create(
        team_id=team_id, user_id="", job_type="t", metadata={}, request_id=None, request_hash=None
    )
    return job.job_id, team_id


async def test_record_and_read_back_like_sqlalchemy(client: Client) -> None:
    assert client.app.db.fast is not None  # both SQLite files and PostgreSQL use it
    repo = client.app.jobs_repo
    job_id, team_id = await _open_job(client)
    target = await repo.call_target(job_id)
    assert target is not None and (target.team_id, target.status) == (team_id, "pending")
    assert await repo.call_target("no-such-job") is None
    record = await repo.record_call(_call(job_id, team_id))
    job = await repo.get(job_id)
    assert job is not None and job.status == "in_progress"
    (stored,) = job.calls
    assert (stored.call_id, stored.tokens, stored.cost_usd, stored.status) == (
        record.call_id,
        7,
        None,
        "success",
    )
    assert abs((stored.created_at - record.created_at).total_seconds()) < 0.001
    done, _ = await repo.complete(job_id, "completed", {}, None)
    assert done.status == "completed" and done.credit_applied
    target = await repo.call_target(job_id)
    assert target is not None and target.status == "completed"


async def test_sqlite_lock_held_by_another_process_does_not_block_the_loop(
    tmp_path: Path,
) -> None:
    c = await start_client(await fresh_database("sqlite", tmp_path))
    try:
        job_id, team_id = await _open_job(c)
        path = make_url(c.app.db.url).database
        assert path
        other = sqlite3.connect(path, isolation_level=None)  # "another process"
        other.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        tick_task = asyncio.create_task(ticker())
        record = asyncio.create_task(c.app.jobs_repo.record_call(_call(job_id, team_id)))
        await asyncio.sleep(0.3)
        assert not record.done()
        assert ticks >= 20, f"event loop blocked: {ticks} ticks in 0.3 s"
        other.execute("COMMIT")
        other.close()
        await asyncio.wait_for(record, 5)
        tick_task.cancel()
        target = await c.app.jobs_repo.call_target(job_id)
        assert target is not None and target.status == "in_progress"
    finally:
        await stop_client(c)


async def test_sqlite_wal_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "CHECKPOINT_EVERY", 50)
    c = await start_client(await fresh_database("sqlite", tmp_path))
    try:
        job_id, team_id = await _open_job(c)
        for _ in range(600):
            await c.app.jobs_repo.record_call(_call(job_id, team_id))
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)  # the last checkpoint
        path = make_url(c.app.db.url).database
        wal = Path(f"{path}-wal")
        # ~20 KB of WAL per record without checkpoints (12 MB here).
        assert wal.stat().st_size < 3_000_000, wal.stat().st_size
    finally:
        await stop_client(c)


class _Db:
    config_version = 0


async def test_read_cache_shares_misses_and_obeys_writes() -> None:
    db: Any = _Db()
    cache: ReadCache[str, str] = ReadCache(db, ttl=0.2)
    loads = 0

    async def load() -> str:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.01)
        return f"v{loads}"

    assert await asyncio.gather(*(cache.get("k", load) for _ in range(20))) == ["v1"] * 20
    assert loads == 1
    assert await cache.get("k", load) == "v1"  # cached
    db.config_version += 1  # a write through this process
    assert await cache.get("k", load) == "v2"
    time.sleep(0.25)  # expiry
    assert await cache.get("k", load) == "v3"

    async def missing() -> str | None:
        return None

    assert await cache.get("absent", missing) is None
    assert await cache.get("absent", load) == "v4"  # "not found" is never cached


def test_sqlite_timestamps_are_stored_as_sqlalchemy_stores_them() -> None:
    from datetime import UTC, datetime

    from sqlalchemy.dialects import sqlite

    to_text = sqlite.DATETIME().bind_processor(sqlite.dialect())
    assert to_text is not None
    for value in (
        datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC),
        datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1999, 12, 31, 0, 0, 0, 7, tzinfo=UTC),
    ):
        assert fastpath._sqlite_ts(value) == to_text(value.replace(tzinfo=None))
