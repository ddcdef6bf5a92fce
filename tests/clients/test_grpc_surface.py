"""The contract used with generic tools: grpcurl `describe` (reflection v1alpha) and `buf curl`
(reflection v1) on the service's port and on Envoy's, which passes native gRPC through without
buffering; and CORS on the REST routes when origins are configured (off by default)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.clients.conftest import envoy_target, grpc_target
from tests.rest.real_service import RestService
from tests.support.envoy import start_envoy

pytestmark = pytest.mark.envoy

BIN = Path(sys.executable).parent


async def _run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, (argv, err.decode())
    return out.decode()


@pytest.mark.parametrize("port", ["service", "envoy"])
async def test_describe_methods_and_error_reasons(gateway: RestService, port: str) -> None:
    target = grpc_target(gateway) if port == "service" else envoy_target(gateway)
    grpcurl = [str(BIN / "grpcurl"), "-plaintext", target]
    method = await _run(*grpcurl, "describe", "saas_llm.v1.JobService.CreateJob")
    assert "rpc CreateJob ( .saas_llm.v1.CreateJobRequest )" in method
    reasons = await _run(*grpcurl, "describe", "saas_llm.v1.ErrorReason")
    assert "ERROR_REASON_INSUFFICIENT_CREDITS = 13;" in reasons
    info = await _run(*grpcurl, "describe", "google.rpc.ErrorInfo")
    assert "string reason = 1;" in info

    buf_curl = [str(BIN / "buf"), "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
    listed = await _run(
        *buf_curl, "--reflect-protocol", "grpc-v1", "--list-services", f"http://{target}"
    )
    assert {"saas_llm.v1.JobService", "grpc.reflection.v1.ServerReflection"} <= set(listed.split())
    live = await _run(
        *buf_curl,
        "--reflect-protocol",
        "grpc-v1",
        f"http://{target}/saas_llm.v1.HealthService/Live",
    )
    assert '"status": "alive"' in live


async def _preflight(base_url: str, origin: str) -> tuple[int, dict[str, str]]:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.options(f"{base_url}/api/jobs/create", headers=headers) as resp,
    ):
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}


async def test_cors_off_by_default_and_on_for_configured_origins(gateway: RestService) -> None:
    _, headers = await _preflight(gateway.base_url, "https://app.example.com")
    assert "access-control-allow-origin" not in headers

    assert gateway.app_client is not None
    envoy = await start_envoy(
        gateway.app_client.app.port,
        direct_hosts=[gateway.app_client.app.direct_http_port],
        cors_allowed_origins=["https://app.example.com"],
    )
    try:
        status, headers = await _preflight(envoy.base_url, "https://app.example.com")
        assert status == 200
        assert headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in headers["access-control-allow-headers"]
        _, headers = await _preflight(envoy.base_url, "https://evil.example.com")
        assert "access-control-allow-origin" not in headers
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{envoy.base_url}/health", headers={"Origin": "https://app.example.com"}
            ) as resp,
        ):
            assert resp.status == 200
            assert resp.headers["access-control-allow-origin"] == "https://app.example.com"
            assert resp.headers["access-control-expose-headers"] == "x-request-id"
    finally:
        await envoy.stop()
