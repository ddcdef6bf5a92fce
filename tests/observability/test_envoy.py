"""Envoy's side of observability, with the real Envoy binary: its stats at /stats/prometheus
(admin on loopback; the stats listener docker-compose scrapes), and one trace from Envoy's span
through the service's RPC span to the provider attempt."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import grpc
import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from gateway.envoy_config import ENVOY_YAML, render
from service.devrun import envoy_command
from service.server import App
from tests.conftest import Client, fresh_database, make_settings, stop_client
from tests.flows import make_group, make_team
from tests.support.envoy import DESCRIPTOR, start_envoy
from tests.support.otlp import OtlpCollector
from tests.support.procs import free_ports

pytestmark = pytest.mark.envoy


def test_the_admin_interface_listens_on_loopback_only() -> None:
    config = yaml.safe_load(ENVOY_YAML.read_text())
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


async def test_envoy_stats_are_prometheus_text(client: Client) -> None:
    envoy = await start_envoy(client.app.port, direct_hosts=[client.app.direct_http_port])
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{envoy.base_url}/health") as r:
            assert r.status == 200
        status, body = await envoy.admin_get("/stats/prometheus")
        assert status == 200
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        requests = families["envoy_cluster_upstream_rq"]
        assert any(
            s.labels.get("envoy_cluster_name") == "grpc_service" and s.value >= 1
            for s in requests.samples
        )
        assert "envoy_http_downstream_rq_xx" in families
    finally:
        await envoy.stop()


async def test_the_stats_listener_serves_stats_and_nothing_else(tmp_path: Path) -> None:
    """What docker-compose's Prometheus scrapes (`--stats-port`): /stats/prometheus, proxied to
    the admin interface, which stays on loopback; no other admin path."""
    http, admin, stats, upstream = free_ports(4)
    config = tmp_path / "envoy.yaml"
    config.write_text(
        render(
            http_port=http,
            admin_port=admin,
            grpc_port=upstream,
            descriptor_path=DESCRIPTOR,
            listen_address="127.0.0.1",
            stats_port=stats,
        )
    )
    proc = await asyncio.create_subprocess_exec(
        *envoy_command(config, "--concurrency", "1"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{stats}/stats/prometheus") as r:
                        body = await r.text()
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert proc.returncode is None, "envoy exited"
                await asyncio.sleep(0.05)
            names = {f.name for f in text_string_to_metric_families(body)}
            assert "envoy_server_live" in names
            for path in ("/quitquitquit", "/config_dump", "/ready", "/stats"):
                async with session.get(f"http://127.0.0.1:{stats}{path}") as r:
                    assert r.status == 404, path
    finally:
        proc.terminate()
        await proc.wait()


async def test_one_trace_from_envoy_through_the_service_to_the_provider(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    url = await fresh_database("sqlite", tmp_path)
    app = App(make_settings(url), tracer_provider=provider)
    await app.start()
    c = Client(grpc.aio.insecure_channel(f"127.0.0.1:{app.port}"), app, url)
    try:
        model = f"simulator/traced-{uuid.uuid4().hex[:6]}"
        team, key = await make_team(c, groups=[await make_group(c, [(model, {})])])
        async with OtlpCollector() as collector:
            envoy = await start_envoy(
                app.port, direct_hosts=[app.direct_http_port], otlp_endpoint=collector.endpoint
            )
            try:
                auth = {"Authorization": f"Bearer {key}", "x-request-id": "req-traced"}
                async with aiohttp.ClientSession(base_url=envoy.base_url) as http:
                    async with http.post(
                        "/api/jobs/create", json={"team_id": team, "job_type": "t"}, headers=auth
                    ) as r:
                        assert r.status == 200, await r.text()
                        job = (await r.json())["job_id"]
                    exporter.clear()
                    body = {"messages": [{"role": "user", "content": "hello"}]}
                    async with http.post(f"/api/jobs/{job}/llm-call", json=body, headers=auth) as r:
                        assert r.status == 200, await r.text()
                        # Tracing leaves the request id as the client sent it.
                        assert r.headers["x-request-id"] == "req-traced"
                spans = exporter.get_finished_spans()
                (rpc,) = [s for s in spans if s.name == "/saas_llm.v1.JobService/LlmCall"]
                trace_id = format(rpc.context.trace_id, "032x")
                assert rpc.parent is not None
                parent = format(rpc.parent.span_id, "016x")
                envoy_spans = await collector.wait_for(
                    lambda got: any(s.span_id == parent for s in got)
                )
            finally:
                await envoy.stop()
        (ingress,) = [s for s in envoy_spans if s.span_id == parent]
        assert ingress.service == "saas-llm-gateway-envoy"
        assert ingress.trace_id == trace_id
        (attempt,) = [s for s in spans if s.name == f"chat {model}"]
        assert attempt.parent is not None and attempt.parent.span_id == rpc.context.span_id
    finally:
        await stop_client(c)
