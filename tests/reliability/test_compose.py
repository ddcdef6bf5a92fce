"""docker-compose.yml describes the cluster that `make run-cluster` runs: PostgreSQL -> migrate ->
2 service replicas -> Envoy, each with a healthcheck and started in that order. (No Docker daemon
here: the file's structure is checked, and the Envoy config its envoy container renders is
validated by the real Envoy binary.)"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from service.devrun import envoy_binary
from tests.support.envoy import DESCRIPTOR, ROOT, render

COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def test_services_and_start_order(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {
        "postgres",
        "migrate",
        "service-1",
        "service-2",
        "envoy",
        # Observability (tests/observability/test_deploy.py checks them).
        "prometheus",
        "grafana",
        "jaeger",
    }
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("service-1", "service-2"):
        s = services[name]
        assert s["command"] == ["python", "-m", "service", "serve"]
        assert s["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
        assert s["environment"]["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert s["environment"]["GRPC_PORT"] == "50051"
    assert services["envoy"]["depends_on"] == {
        "service-1": {"condition": "service_healthy"},
        "service-2": {"condition": "service_healthy"},
    }
    for name, s in services.items():
        if name not in ("migrate", "jaeger"):
            assert "healthcheck" in s, name
    # One image for everything but PostgreSQL, built from files that exist.
    build = services["migrate"]["build"]["dockerfile_inline"]
    for line in build.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), src


def test_healthcheck_snippets_compile(compose: dict) -> None:
    for name in ("service-1", "envoy"):
        test = compose["services"][name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        compile(test[3], name, "exec")


def test_envoy_config_of_the_compose_cluster_is_valid(compose: dict, tmp_path: Path) -> None:
    command = compose["services"]["envoy"]["command"][-1]
    args = shlex.split(command.split("&&")[0])
    hosts = [args[i + 1] for i, a in enumerate(args) if a == "--grpc"]
    assert hosts == ["service-1:50051", "service-2:50051"]
    text = render(descriptor_path=DESCRIPTOR, grpc_hosts=hosts)
    assert "type: STRICT_DNS" in text
    assert len(re.findall(r"address: service-\d, port_value: 50051", text)) == 2
    config = tmp_path / "envoy.yaml"
    config.write_text(text)
    r = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_replicas_listen_on_the_compose_network(compose: dict) -> None:
    """The service listens on loopback by default (GRPC_HOST); inside a container Envoy reaches
    it over the compose network, so the replicas set 0.0.0.0 (their port is not published)."""
    for name in ("service-1", "service-2"):
        service = compose["services"][name]
        assert service["environment"]["GRPC_HOST"] == "0.0.0.0"
        assert "ports" not in service
