"""One real gateway (service + Envoy, SQLite) per test module, and a team to call it with, for the
clients' tests (Python REST and gRPC transports, Node, Go, grpcurl). Tests isolate themselves by
team: each makes its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.rest.real_service import (
    RestClient,
    RestService,
    create_group,
    create_team,
    serve_real,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Team:
    team_id: str
    key: str
    group: str


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RestService]:
    async with serve_real("sqlite", tmp_path_factory.mktemp("clients")) as svc:
        yield svc


@pytest.fixture(scope="module")
async def admin(gateway: RestService) -> AsyncIterator[RestClient]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        yield RestClient(http, gateway.base_url, gateway.master_key)


def grpc_target(gateway: RestService) -> str:
    """The service's own gRPC port."""
    assert gateway.app_client is not None
    return gateway.app_client.target


def envoy_target(gateway: RestService) -> str:
    """Envoy's port, which passes native gRPC through."""
    return gateway.base_url.removeprefix("http://")


async def new_team(
    admin: RestClient, *, credits: int = 10, models: list[tuple[str, dict]] | None = None
) -> Team:
    group = await create_group(admin, models or [("simulator/fast", {})])
    team_id, key = await create_team(admin, credits=credits, groups=[group])
    return Team(team_id, key, group)
