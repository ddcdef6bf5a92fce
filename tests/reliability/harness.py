"""Real processes for the reliability and security suites: `python -m service serve` replicas,
Envoy in front of them, the auditor CLI, and a log scanner.

Every child runs in its own session (so that a signal meant for one never reaches pytest) and,
where util-linux `setpriv` exists, with PR_SET_PDEATHSIG so that it dies with the test process even
when pytest is killed. Ports are ephemeral (bound to port 0 and released just before use) and on
loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.devrun import envoy_command
from tests.conftest import MASTER_KEY

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DESCRIPTOR = ROOT / "build" / "descriptor.pb"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.envoy_config import render  # noqa: E402


def die_with_parent() -> list[str]:
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """n distinct ephemeral ports (held together while choosing, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def base_env(**overrides: object) -> dict[str, str]:
    """The environment of a child: this one minus the service's own settings, plus overrides."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper()
        not in {
            "DATABASE_URL",
            "MASTER_KEY",
            "GRPC_PORT",
            "GRPC_PORTS",
            "GRPC_HOST",
            "HTTP_PORT",
            "ENVOY_ADMIN_PORT",
            "JOB_TIMEOUT",
            "SWEEPER_INTERVAL",
            "SHUTDOWN_GRACE",
            "LOG_LEVEL",
            "REPLICAS",
        }
    }
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    env["MASTER_KEY"] = MASTER_KEY
    env["GRPC_HOST"] = "127.0.0.1"
    for k, v in overrides.items():
        env[k.upper()] = str(v)
    return env


async def grpc_health(port: int, timeout: float = 1.0) -> int | None:
    """grpc.health.v1 status of the server ("" service), or None when it does not answer."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            r = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return None
        return int(r.status)


@dataclass
class ServiceProc:
    """One `python -m service serve` process (restartable on the same port and log)."""

    database_url: str
    workdir: Path
    port: int = field(default_factory=free_port)
    settings: dict[str, object] = field(default_factory=dict)
    name: str = "service"
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        settings: dict[str, object] = {"LOG_LEVEL": "INFO", **self.settings}
        return base_env(DATABASE_URL=self.database_url, GRPC_PORT=self.port, **settings)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*die_with_parent(), sys.executable, "-m", "service", "serve"],
                env=self.env(),
                cwd=str(ROOT),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.starts += 1

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            if await grpc_health(self.port, 0.5) == health_pb2.HealthCheckResponse.SERVING:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} not serving after {timeout}s:\n{self.log()[-3000:]}"
                )
            await asyncio.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, sig)

    async def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout}s")
            await asyncio.sleep(0.02)
        return int(self.proc.returncode)

    async def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, like a crashed machine."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            await self.wait_exit(10)

    async def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.signal(signal.SIGTERM)
        try:
            return await self.wait_exit(timeout)
        except TimeoutError:
            await self.kill()
            return None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


async def start_services(
    database_url: str, workdir: Path, n: int, **settings: object
) -> list[ServiceProc]:
    procs = [
        ServiceProc(database_url, workdir, settings=dict(settings), name=f"service-{i + 1}")
        for i in range(n)
    ]
    ports = free_ports(n)
    for p, port in zip(procs, ports, strict=True):
        p.port = port
        p.start()
    try:
        await asyncio.gather(*(p.wait_ready() for p in procs))
    except BaseException:
        await asyncio.gather(*(p.stop() for p in procs))
        raise
    return procs


# --- Envoy (synchronous, for tests that run outside the event loop: schemathesis) ----------


@dataclass
class EnvoyProc:
    process: subprocess.Popen[bytes]
    workdir: Path
    port: int = 0
    admin_port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        try:
            return (self.workdir / "envoy.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_envoy_sync(grpc_ports: Sequence[int], timeout: float = 20.0) -> EnvoyProc:
    workdir = Path(tempfile.mkdtemp(prefix="envoy-rel-"))
    (workdir / "envoy.yaml").write_text(
        render(
            http_port=0,
            admin_port=0,
            descriptor_path=DESCRIPTOR,
            grpc_hosts=list(grpc_ports),
            listen_address="127.0.0.1",
        )
    )
    admin_path = workdir / "admin.address"
    with (workdir / "envoy.log").open("wb") as log:
        process = subprocess.Popen(
            [
                *die_with_parent(),
                *envoy_command(
                    workdir / "envoy.yaml",
                    "--concurrency",
                    "2",
                    "--admin-address-path",
                    str(admin_path),
                ),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=str(workdir),
            start_new_session=True,
        )
    envoy = EnvoyProc(process, workdir)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"envoy exited with {process.returncode}:\n{envoy.log()[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"envoy not ready:\n{envoy.log()[-3000:]}")
            if not envoy.admin_port and admin_path.exists():
                text = admin_path.read_text().strip()
                if text:
                    envoy.admin_port = int(text.rpartition(":")[2])
            if envoy.admin_port:
                with contextlib.suppress(OSError, ValueError, KeyError, urllib.error.URLError):
                    admin = f"http://127.0.0.1:{envoy.admin_port}"
                    with urllib.request.urlopen(admin + "/ready", timeout=1) as r:
                        ready = r.status == 200
                    if ready:
                        with urllib.request.urlopen(
                            admin + "/listeners?format=json", timeout=1
                        ) as r:
                            statuses = json.loads(r.read())["listener_statuses"]
                        envoy.port = int(
                            statuses[0]["local_address"]["socket_address"]["port_value"]
                        )
                        with socket.create_connection(("127.0.0.1", envoy.port), timeout=1):
                            return envoy
            time.sleep(0.02)
    except BaseException:
        envoy.stop()
        raise


# --- The auditor CLI -------------------------------------------------------------------------


@dataclass
class AuditResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def violations(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith("VIOLATION")]


def run_audit_cli(database_url: str, *args: str, module: str = "service.audit") -> AuditResult:
    """`python -m service.audit --database-url URL ...` (module "service" runs
    `python -m service audit`, what `make audit` does)."""
    argv = [sys.executable, "-m", module]
    if module == "service":
        argv.append("audit")
    r = subprocess.run(
        [*argv, "--database-url", database_url, *args],
        env=base_env(),
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    return AuditResult(r.returncode, r.stdout, r.stderr)


async def audit_cli(database_url: str, *args: str, module: str = "service.audit") -> AuditResult:
    return await asyncio.to_thread(run_audit_cli, database_url, *args, module=module)


# --- Log scanning ----------------------------------------------------------------------------


def leaked(texts: Iterable[str], secrets: Iterable[str]) -> list[tuple[str, str]]:
    """(secret, context) for each secret found in any text. Secrets shorter than 8 characters
    are ignored (they would match by chance)."""
    found: list[tuple[str, str]] = []
    wanted = [s for s in secrets if s and len(s) >= 8]
    for text in texts:
        for s in wanted:
            i = text.find(s)
            if i >= 0:
                found.append((s, text[max(0, i - 200) : i + len(s) + 50]))
    return found


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out
