"""Fixtures for the REST tests: a real Envoy (envoy.yaml, rendered) in front of a gRPC server.

`grpc_target` is the port (or ports) Envoy fronts. Here it is the stub server of stubs.py; to run
the REST tests against the real service, override `grpc_target` with a fixture that starts it and
returns its port. `envoy` / `base_url` / `http` do not depend on what serves gRPC.

The real service behind the same Envoy configuration (tests/rest/real_service.py): `rest_sqlite`
and `rest_postgres` (one service + Envoy each per session), `rest_any` (a test on both databases),
`api` / `api_any` (master-key `RestClient`s of those).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest

from service.devrun import envoy_binary
from tests.rest.real_service import RestClient, RestService, serve_real
from tests.support.envoy import Envoy, start_envoy

_HERE = Path(__file__).resolve().parent


def _load_stubs() -> ModuleType:
    # Loaded under a unique module name so that no other tests/*/stubs.py can shadow it.
    name = "saas_llm_rest_stubs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _HERE / "stubs.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


stubs = _load_stubs()

try:
    envoy_binary()
except FileNotFoundError as exc:  # pragma: no cover - only without the dev extras
    pytest.skip(str(exc), allow_module_level=True)


@pytest.fixture(scope="session")
async def stub_factory() -> AsyncIterator[Callable[[], Awaitable[Any]]]:
    """Start extra stub gRPC servers (stopped at the end of the session); returns their state."""
    servers: list[Any] = []

    async def start() -> Any:
        server, state = await stubs.start_stub_server()
        servers.append(server)
        return state

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(None)


@pytest.fixture(scope="session")
async def stub(stub_factory: Callable[[], Awaitable[Any]]) -> Any:
    """The stub gRPC server's state (port, recorded requests and metadata)."""
    return await stub_factory()


@pytest.fixture(scope="session")
def grpc_target(stub: Any) -> int | list[int]:
    return int(stub.port)


@pytest.fixture(scope="session")
async def envoy(grpc_target: int | list[int]) -> AsyncIterator[Envoy]:
    # A stub gRPC server has no HTTP handler: every job path goes through the transcoder.
    proxy = await start_envoy(grpc_target, job_flow_over_http=False)
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.fixture(scope="session")
def base_url(envoy: Envoy) -> str:
    return envoy.base_url


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


# --------------------------------------------------------------------------- the real service
# The same Envoy configuration in front of the real service (tests/rest/real_service.py): one
# SQLite pair for the session, one PostgreSQL pair for the tests that touch storage
# (`rest_any` runs them on both). Tests isolate themselves by unique ids.


@pytest.fixture(scope="session")
async def rest_sqlite(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RestService]:
    async with serve_real("sqlite", tmp_path_factory.mktemp("rest-sqlite")) as svc:
        yield svc


@pytest.fixture(scope="session")
async def rest_postgres(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RestService]:
    async with serve_real("postgres", tmp_path_factory.mktemp("rest-postgres")) as svc:
        yield svc


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def rest_any(request: pytest.FixtureRequest) -> RestService:
    """The real service on SQLite, then on PostgreSQL."""
    return request.getfixturevalue(f"rest_{request.param}")  # type: ignore[no-any-return]


@pytest.fixture
def api(http: aiohttp.ClientSession, rest_sqlite: RestService) -> RestClient:
    """Admin (master key) client of the shared SQLite service."""
    return RestClient(http, rest_sqlite.base_url, rest_sqlite.master_key)


@pytest.fixture
def api_any(http: aiohttp.ClientSession, rest_any: RestService) -> RestClient:
    """Admin client of the service on each database."""
    return RestClient(http, rest_any.base_url, rest_any.master_key)
