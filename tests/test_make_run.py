"""`make run`'s launcher end to end: migrate, service + Envoy as children,
demo mode on, clean stop on SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.procs import Child, free_port, spawn

ROOT = Path(__file__).resolve().parent.parent


def _call(url: str, key: str, body: dict[str, object] | None = None) -> dict[str, object]:
    req = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _start_run_all(argv: list[str], env: dict[str, str], tmp_path: Path) -> Child:
    """`python -m service run-all` (or argv doing the same) in its own session, output logged."""
    return spawn("run-all", [sys.executable, *argv], env=env, cwd=ROOT, log_dir=tmp_path)


def _wait_healthy(child: Child, base: str, key: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while True:
        try:
            return _call(f"{base}/health", key)
        except OSError:
            assert child.alive(), child.log()
            assert time.monotonic() < deadline, "run-all did not come up"
            time.sleep(0.2)


def _interrupt(child: Child) -> tuple[int, str]:
    """Ctrl-C, as a terminal would send it: (exit code, output)."""
    child.proc.send_signal(signal.SIGINT)
    try:
        code = child.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        raise
    return code, child.log()


def test_run_all_serves_the_quick_start(tmp_path: Path) -> None:
    http, grpc_port, admin = free_port(), free_port(), free_port()
    key = "sk-master-" + "k" * 32
    env = {
        **os.environ,
        "HTTP_PORT": str(http),
        "GRPC_PORT": str(grpc_port),
        "ENVOY_ADMIN_PORT": str(admin),
        # Not the default 50090: tests run in parallel and each launcher binds its own.
        "DIRECT_HTTP_PORT": str(free_port()),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        "MASTER_KEY": key,
        "PYTHONPATH": str(ROOT / "src"),
    }
    env.pop("OPENAI_API_KEY", None)
    env.pop("SIMULATE_WITHOUT_KEYS", None)
    child = _start_run_all(["-m", "service", "run-all"], env, tmp_path)
    base = f"http://127.0.0.1:{http}"
    try:
        health = _wait_healthy(child, base, key)
        assert health["status"] == "healthy"
        _call(f"{base}/api/organizations/create", key, {"organization_id": "org_a", "name": "A"})
        _call(
            f"{base}/api/model-groups/create",
            key,
            {
                "group_name": "ChatAgent",
                "models": [
                    {"model_name": "gpt-3.5-turbo", "priority": 0},
                    {"model_name": "gpt-4", "priority": 1},
                ],
            },
        )
        team = _call(
            f"{base}/api/teams/create",
            key,
            {
                "organization_id": "org_a",
                "team_id": "team_a",
                "model_groups": ["ChatAgent"],
                "credits_allocated": 10,
            },
        )
        tk = str(team["virtual_key"])
        job = _call(f"{base}/api/jobs/create", tk, {"team_id": "team_a", "job_type": "demo"})
        # Demo mode: gpt-3.5-turbo without OPENAI_API_KEY is simulated.
        answer = _call(
            f"{base}/api/jobs/{job['job_id']}/llm-call",
            tk,
            {"messages": [{"role": "user", "content": "Say hello!"}]},
        )
        assert answer["response"]["content"]  # type: ignore[index]
        done = _call(f"{base}/api/jobs/{job['job_id']}/complete", tk, {"status": "completed"})
        assert done["costs"]["credits_remaining"] == 9  # type: ignore[index]
    finally:
        code, out = _interrupt(child)
    assert code == 0, out


def test_run_all_comes_up_when_the_envoy_admin_port_is_taken(tmp_path: Path) -> None:
    """Issue 21, item 11: `make run` used to fail when 9901 was taken (Envoy could not bind its
    admin port). Without ENVOY_ADMIN_PORT it now picks a free port and says so. (The test makes
    a port of its own the default instead of taking 9901, which tests must leave alone.)"""
    http, grpc_port = free_port(), free_port()
    key = "sk-master-" + "k" * 32
    env = {
        **os.environ,
        "HTTP_PORT": str(http),
        "GRPC_PORT": str(grpc_port),
        "DIRECT_HTTP_PORT": str(free_port()),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
        "MASTER_KEY": key,
        "PYTHONPATH": str(ROOT / "src"),
    }
    env.pop("ENVOY_ADMIN_PORT", None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        script = (
            "import service.devrun as d; "
            f"d.DEFAULT_ENVOY_ADMIN_PORT = {busy}; "
            "raise SystemExit(d.run_all())"
        )
        child = _start_run_all(["-c", script], env, tmp_path)
        try:
            health = _wait_healthy(child, f"http://127.0.0.1:{http}", key)
            assert health["status"] == "healthy"
        finally:
            code, out = _interrupt(child)
    assert code == 0, out
    assert f"port {busy} is in use: Envoy's admin interface listens on 127.0.0.1:" in out, out


def test_run_all_names_a_taken_envoy_admin_port(tmp_path: Path) -> None:
    """ENVOY_ADMIN_PORT set to a port in use: run-all stops before starting anything and says
    which setting to change."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            **os.environ,
            "HTTP_PORT": str(free_port()),
            "GRPC_PORT": str(free_port()),
            "DIRECT_HTTP_PORT": str(free_port()),
            "ENVOY_ADMIN_PORT": str(taken.getsockname()[1]),
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gw.db'}",
            "MASTER_KEY": "sk-master-" + "k" * 32,
            "PYTHONPATH": str(ROOT / "src"),
        }
        done = subprocess.run(
            [sys.executable, "-m", "service", "run-all"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "(ENVOY_ADMIN_PORT) is already in use" in done.stdout, done.stdout
    assert not (tmp_path / "gw.db").exists()  # nothing started, not even the migration


def test_readme_documents_every_setting() -> None:
    """Every setting of service/settings.py, and the launchers' ENVOY_ADMIN_PORT, has a row in
    README.md's configuration table."""
    from service.settings import Settings

    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    wanted = {name.upper() for name in Settings.model_fields} | {"ENVOY_ADMIN_PORT"}
    assert not wanted - documented, sorted(wanted - documented)
