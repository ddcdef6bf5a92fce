"""The monitoring that docker-compose.yml brings up, checked without Docker (no engine here):
the Prometheus config by promtool, its targets against the compose services, the Envoy config
the compose Envoy renders (stats listener and tracing) by the real Envoy, Grafana's provisioning,
and the dashboard's queries: valid PromQL (promtool) over metrics that the service and Envoy
really expose."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from saas_llm.v1 import job_service_pb2 as job_pb
from service import metrics
from service.devrun import envoy_binary
from tests.conftest import Client, bearer
from tests.flows import make_group, make_team, user_msg
from tests.observability.scrape import scrape
from tests.support.envoy import DESCRIPTOR, start_envoy

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
OBS = ROOT / "observability"
PROMETHEUS = OBS / "prometheus.yml"
DASHBOARD = OBS / "grafana" / "dashboards" / "gateway.json"
PROMTOOL = ROOT / "build" / "tools" / "promtool"
needs_promtool = pytest.mark.skipif(not PROMTOOL.exists(), reason="make install fetches promtool")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _envoy_args(compose: dict[str, Any]) -> list[str]:
    command = compose["services"]["envoy"]["command"][-1]
    return shlex.split(command.split("&&")[0])


@needs_promtool
def test_promtool_accepts_the_prometheus_config() -> None:
    r = subprocess.run(
        [str(PROMTOOL), "check", "config", str(PROMETHEUS)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_prometheus_scrapes_every_replica_and_envoy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    jobs = {j["job_name"]: j for j in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    replicas = sorted(
        n for n, s in services.items() if s.get("command") == services["service-1"]["command"]
    )
    assert replicas == ["service-1", "service-2"]
    wanted = [f"{n}:{services[n]['environment']['METRICS_PORT']}" for n in replicas]
    assert jobs["gateway"]["static_configs"][0]["targets"] == wanted
    args = _envoy_args(compose)
    stats_port = args[args.index("--stats-port") + 1]
    assert jobs["envoy"]["static_configs"][0]["targets"] == [f"envoy:{stats_port}"]
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    # Mounted files exist; Grafana's datasource is the one the dashboard names.
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    (source,) = yaml.safe_load(
        (OBS / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    assert source["url"] == "http://prometheus:9090"
    uids = {
        t["datasource"]["uid"]
        for p in json.loads(DASHBOARD.read_text())["panels"]
        for t in p.get("targets", [])
    }
    assert uids == {source["uid"]}
    for name in ("service-1", "envoy"):
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in services[name]["environment"]
    assert "tracing" in services["jaeger"]["profiles"]


@pytest.mark.envoy
@pytest.mark.parametrize("otlp", ["", "http://jaeger:4317"])
def test_the_compose_envoy_config_is_valid(
    compose: dict[str, Any], tmp_path: Path, otlp: str
) -> None:
    """The compose Envoy's own command (stats listener; tracing when the endpoint is set)."""
    args = _envoy_args(compose)
    assert args[:3] == ["python", "-m", "gateway.envoy_config"]
    args[args.index("--descriptor") + 1] = str(DESCRIPTOR)
    args[args.index("-o") + 1] = str(tmp_path / "envoy.yaml")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OTEL_EXPORTER_OTLP_ENDPOINT": otlp}
    subprocess.run([sys.executable, *args[1:]], check=True, env=env, cwd=ROOT)
    text = (tmp_path / "envoy.yaml").read_text()
    assert "name: stats" in text
    assert ("envoy.tracers.opentelemetry" in text) == bool(otlp)
    r = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(tmp_path / "envoy.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    exprs = _exprs()
    assert len(exprs) >= 20
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:panel_{i}", "expr": e.replace("$__rate_interval", "1m")}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    r = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _families(text: str) -> dict[str, set[tuple[tuple[str, str], ...]]]:
    """Family name (counters without _total) -> the label sets of its samples."""
    out: dict[str, set[tuple[tuple[str, str], ...]]] = {}
    for f in text_string_to_metric_families(text):
        out.setdefault(f.name, set()).update(tuple(sorted(s.labels.items())) for s in f.samples)
    return out


@pytest.mark.envoy
async def test_the_dashboard_reads_metrics_the_service_and_envoy_expose(client: Client) -> None:
    c = client
    group = await make_group(c, [("simulator/dash", {"response": "a b c"})])
    team, key = await make_team(c, groups=[group])
    envoy = await start_envoy(c.app.port, direct_hosts=[c.app.direct_http_port])
    try:
        async with aiohttp.ClientSession(base_url=envoy.base_url) as http:
            headers = {"Authorization": f"Bearer {key}"}
            async with http.post(
                "/api/jobs/create", json={"team_id": team, "job_type": "t"}, headers=headers
            ) as r:
                job = (await r.json())["job_id"]
        async for _ in c.jobs.LlmCallStream(
            job_pb.LlmCallRequest(job_id=job, messages=[user_msg("hi")]), metadata=bearer(key)
        ):
            pass
        _, body = await envoy.admin_get("/stats/prometheus")
    finally:
        await envoy.stop()
    # The metrics whose features feed them later (limits, breaker, cache, storage executor).
    metrics.refused("rate_limit", "rpm")
    metrics.breaker_state("simulator/dash", "closed")
    metrics.cache(group, "miss")
    metrics.db_statement(0.001)
    await c.app.sweep_once()
    exposed = _families((await scrape(c)).text) | _families(body.decode())
    referenced = set()
    for expr in _exprs():
        # Metric names only: not the label names of selectors and `by (...)` clauses.
        names = re.sub(r"\{[^}]*\}|\bby \([^)]*\)", "", expr)
        referenced |= set(re.findall(r"\b((?:gateway|envoy|process)_[a-z_]+)\b", names))
    assert len(referenced) >= 15, referenced
    for name in referenced:
        family = re.sub(r"_(bucket|count|sum|total)$", "", name)
        assert family in exposed or name in exposed, name
    # The labels the Envoy panels select on.
    assert any(
        dict(labels).get("envoy_http_conn_manager_prefix") == "rest"
        and "envoy_response_code_class" in dict(labels)
        for labels in exposed["envoy_http_downstream_rq_xx"]
    )
