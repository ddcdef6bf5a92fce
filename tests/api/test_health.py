"""Readiness (Check) follows the database; liveness (Live) does not touch it."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from saas_llm.v1 import health_service_pb2 as pb
from tests.conftest import Client, _pg_admin, fresh_database, start_client, stop_client


async def test_live_needs_no_key_and_reports_the_process(client: Client) -> None:
    for metadata in ((), (("authorization", "Bearer garbage"),)):
        live = await client.health.Live(pb.LiveRequest(), metadata=metadata)
        assert live.status == "alive"
        assert live.version
        assert live.uptime_seconds > 0


@pytest.mark.postgres
async def test_live_stays_alive_while_the_database_is_down(tmp_path: Path) -> None:
    url = await fresh_database("postgres", tmp_path)
    name = url.rsplit("/", 1)[1]
    c = await start_client(url)
    try:
        assert (await c.health.Check(pb.CheckRequest())).status == "healthy"
        # The database stops taking connections and drops the ones it has.
        await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await _pg_admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        check = await c.health.Check(pb.CheckRequest(), timeout=30)
        assert (check.status, check.database) != ("healthy", "ok"), check
        assert check.status == "unhealthy"
        live = await c.health.Live(pb.LiveRequest(), timeout=5)
        assert live.status == "alive"
        # Shutting down shows in liveness too (set as App.stop sets it).
        c.app.health.shutting_down = True
        live = await c.health.Live(pb.LiveRequest(), timeout=5)
        assert live.status == "shutting_down"
    except grpc.aio.AioRpcError as exc:  # pragma: no cover - the assertion message is the point
        pytest.fail(f"health RPC failed: {exc.code()} {exc.details()}")
    finally:
        await _pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await stop_client(c)
