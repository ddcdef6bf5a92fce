"""grpcurl (the PyPI wrapper installed by `make`) sees every service through
server reflection, and the standard health service answers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.server import SERVICE_NAMES
from tests.conftest import Client

GRPCURL = Path(sys.executable).parent / "grpcurl"


async def test_grpcurl_lists_services(sqlite_client: Client) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        sqlite_client.target,
        "list",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    listed = set(out.decode().split())
    assert set(SERVICE_NAMES) <= listed
    assert "grpc.health.v1.Health" in listed


async def test_grpcurl_describes_and_calls(sqlite_client: Client) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        sqlite_client.target,
        "saas_llm.v1.HealthService/Check",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert '"status": "healthy"' in out.decode()


async def test_standard_health(sqlite_client: Client) -> None:
    stub = health_pb2_grpc.HealthStub(sqlite_client.channel)
    r = await stub.Check(health_pb2.HealthCheckRequest(service="saas_llm.v1.JobService"))
    assert r.status == health_pb2.HealthCheckResponse.SERVING
