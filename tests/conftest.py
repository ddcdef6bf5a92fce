"""Shared fixtures: real databases (SQLite file and a fresh PostgreSQL
database), a real grpc.aio server on an ephemeral port, real gRPC stubs."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from saas_llm.v1 import (
    credit_service_pb2_grpc,
    health_service_pb2_grpc,
    job_service_pb2_grpc,
    model_group_service_pb2_grpc,
    organization_service_pb2_grpc,
    team_service_pb2_grpc,
)
from service.server import App
from service.settings import Settings
from service.storage.migrate import migrate
from tests.support.procs import MASTER_KEY
from tests.support.upstream import FakeUpstream

# Every service the tests start, in process or as a child process, serves its metrics on a free
# port (never the default 9464, which `make run` may be using).
os.environ.setdefault("METRICS_PORT", "0")
PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fresh_database(kind: str, tmp: Path) -> str:
    """A new, migrated, empty database URL of the given kind."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / ('gw-' + uuid.uuid4().hex[:8] + '.db')}"
    else:
        if not _pg_available():
            if os.environ.get("CI") == "true":
                pytest.fail("PostgreSQL at 127.0.0.1:5432 is unreachable (required in CI)")
            pytest.skip("PostgreSQL not reachable")
        name = "gw_test_" + uuid.uuid4().hex[:12]
        await _pg_admin(f'CREATE DATABASE "{name}"')
        _created_pg.append(name)
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    await asyncio.to_thread(migrate, url)
    return url


_created_pg: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _drop_pg_databases() -> Iterator[None]:
    yield
    if not _created_pg:
        return

    async def drop() -> None:
        for name in _created_pg:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    asyncio.run(drop())


def make_settings(url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": url,
        "master_key": MASTER_KEY,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "log_level": "WARNING",
        "shutdown_grace": 1.0,
        "sweeper_interval": 3600.0,
        "metrics_port": 0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class Client:
    """Real gRPC stubs on one channel."""

    channel: grpc.aio.Channel
    app: App
    url: str

    def __post_init__(self) -> None:
        ch = self.channel
        self.orgs = organization_service_pb2_grpc.OrganizationServiceStub(ch)
        self.groups = model_group_service_pb2_grpc.ModelGroupServiceStub(ch)
        self.teams = team_service_pb2_grpc.TeamServiceStub(ch)
        self.credits = credit_service_pb2_grpc.CreditServiceStub(ch)
        self.jobs = job_service_pb2_grpc.JobServiceStub(ch)
        self.health = health_service_pb2_grpc.HealthServiceStub(ch)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.port}"


def admin() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {MASTER_KEY}"),)


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def start_client(url: str, **overrides: object) -> Client:
    app = App(make_settings(url, **overrides))
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    return Client(channel=channel, app=app, url=url)


async def stop_client(c: Client) -> None:
    await c.channel.close()
    await c.app.stop(grace=0.5)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db_url(db_kind: str, tmp_path: Path) -> str:
    return await fresh_database(db_kind, tmp_path)


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[Client]:
    c = await start_client(db_url)
    try:
        yield c
    finally:
        await stop_client(c)


@pytest.fixture(scope="session")
async def sqlite_client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """One shared server on SQLite, for tests that isolate themselves by ids."""
    url = await fresh_database("sqlite", tmp_path_factory.mktemp("shared"))
    c = await start_client(url)
    try:
        yield c
    finally:
        await stop_client(c)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    """A fake OpenAI-compatible upstream over real HTTP, one per test (tests/support/upstream.py).
    Suites that share one per module or session override it."""
    async with FakeUpstream() as fake:
        yield fake
