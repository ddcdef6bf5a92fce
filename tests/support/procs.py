"""Child processes of the tests and the bench: the one launcher both use.

- `free_port()`, `free_ports(n)`: ephemeral loopback ports.
- `spawn(name, argv, ...) -> Child`: a process in its own session (so that a signal meant for it
  never reaches pytest or the bench, and `stop()` reaches its whole process group), dying with
  its parent where util-linux `setpriv` exists (PR_SET_PDEATHSIG, even when the parent is
  SIGKILLed), its output in `<log_dir>/<name>.log`.
- `wait_tcp(port, ...)`, `grpc_health(port)`, `wait_grpc_serving(port, ...)`: readiness.
- `ServiceProc`, `start_services(...)`: `python -m service serve` replicas on ephemeral ports,
  restartable on the same port and log (the reliability and security suites).

Envoy is in `tests.support.envoy`, the fake upstreams in `tests.support.upstream` (configurable,
in process) and `tests.support.fast_upstream` (a subprocess that costs next to nothing). The
bench (`python -m bench`, run from the repository root) imports this module too, so it imports
neither pytest nor grpc at module level (the bench pins its main thread before any thread
exists).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
# The admin key of the services the tests start (tests.conftest re-exports it).
MASTER_KEY = "sk-master-test-" + "x" * 24


def die_with_parent(sig: str = "TERM") -> list[str]:
    """Command prefix that sends the child `sig` when its parent dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG via util-linux `setpriv`), so that no orphan keeps its ports. Empty where
    setpriv is missing. (Not preexec_fn: forking a process that runs gRPC threads is unsafe.)"""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", sig, "--"] if setpriv else []


def free_port() -> int:
    """A loopback port free now (bound then released just before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def free_port_run(n: int) -> int:
    """The first of n consecutive loopback ports that are all free now: for launchers that give
    replica i the port first + i (run-cluster's DIRECT_HTTP_PORT)."""
    for _ in range(200):
        first = free_port()
        if first + n > 65536:
            continue
        socks = []
        try:
            for port in range(first, first + n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no run of {n} free loopback ports found")


@dataclass
class Child:
    """A started process, its log file, and `stop()`."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float  # time.perf_counter() when spawned

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after `timeout`."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    async def stop_async(self, timeout: float = 5.0) -> None:
        """stop() without blocking the event loop."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await asyncio.to_thread(self.proc.wait)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_dir: Path,
    stdout_pipe: bool = False,
    prefix: Sequence[str] = (),
    append: bool = False,
    pdeathsig: str = "TERM",
) -> Child:
    """Start argv in its own session; stderr (and stdout unless piped) go to
    log_dir/<name>.log (appended to with `append`, for a restarted process). prefix (e.g.
    `taskset -c 0`) must exec the program so that the child's pid is the program's."""
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab" if append else "wb")
    try:
        proc = subprocess.Popen(
            [*die_with_parent(pdeathsig), *prefix, *argv],
            env=dict(env),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else log,
            stderr=log,
            start_new_session=True,
        )
    finally:
        log.close()
    return Child(name=name, proc=proc, log_path=log_path, started_at=time.perf_counter())


async def wait_tcp(port: int, timeout: float, child: Child | None = None) -> None:
    """Until 127.0.0.1:port accepts a connection (or child exits, or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited during startup:\n{child.log_tail()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"port {port} not open after {timeout}s") from None
            await asyncio.sleep(0.01)
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return


# Short reconnect backoffs: a gRPC channel whose first connect fails otherwise backs off ~1 s,
# which would count as start time.
_FAST_RECONNECT = [
    ("grpc.initial_reconnect_backoff_ms", 10),
    ("grpc.min_reconnect_backoff_ms", 10),
    ("grpc.max_reconnect_backoff_ms", 50),
]


async def grpc_health(port: int, timeout: float = 1.0) -> int | None:
    """grpc.health.v1 status of the server ("" service), or None when it does not answer."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            r = await health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.aio.AioRpcError:
            return None
        return int(r.status)


async def wait_grpc_serving(port: int, child: Child, timeout: float) -> None:
    """Until the gRPC health check of 127.0.0.1:port says SERVING: the port first, then the
    check on one channel with short reconnect backoffs."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    await wait_tcp(port, timeout, child)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=_FAST_RECONNECT) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited during startup:\n{child.log_tail()}")
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{child.name} not serving after {timeout}s:\n{child.log_tail()}"
                )
            await asyncio.sleep(0.005)


# --- The service ------------------------------------------------------------------------------

# The service's own settings, which a child does not inherit from the test process.
_SERVICE_SETTINGS = frozenset(
    {
        "DATABASE_URL",
        "MASTER_KEY",
        "GRPC_PORT",
        "GRPC_PORTS",
        "GRPC_HOST",
        "HTTP_PORT",
        "DIRECT_HTTP_PORT",
        "ENVOY_ADMIN_PORT",
        "JOB_TIMEOUT",
        "SWEEPER_INTERVAL",
        "SHUTDOWN_GRACE",
        "LOG_LEVEL",
        "REPLICAS",
    }
)


def base_env(**overrides: object) -> dict[str, str]:
    """The environment of a child: this one minus the service's own settings, plus overrides."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SERVICE_SETTINGS}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(ROOT)])
    env["PYTHONUNBUFFERED"] = "1"
    env["MASTER_KEY"] = MASTER_KEY
    env["GRPC_HOST"] = "127.0.0.1"
    for k, v in overrides.items():
        env[k.upper()] = str(v)
    return env


@dataclass
class ServiceProc:
    """One `python -m service serve` process (restartable on the same port and log)."""

    database_url: str
    workdir: Path
    port: int = field(default_factory=free_port)
    # The HTTP handler (OpenAI-compatible and job flow REST paths): Envoy's service_http cluster.
    direct_port: int = field(default_factory=free_port)
    settings: dict[str, object] = field(default_factory=dict)
    name: str = "service"
    child: Child | None = None
    starts: int = 0

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.child is None else self.child.proc

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        settings: dict[str, object] = {"LOG_LEVEL": "INFO", **self.settings}
        return base_env(
            DATABASE_URL=self.database_url,
            GRPC_PORT=self.port,
            DIRECT_HTTP_PORT=self.direct_port,
            **settings,
        )

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.child = spawn(
            self.name,
            [sys.executable, "-m", "service", "serve"],
            env=self.env(),
            cwd=ROOT,
            log_dir=self.workdir,
            append=True,
            pdeathsig="KILL",
        )
        self.starts += 1

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until a health check on a channel with default options says SERVING. (Default
        options on purpose: gRPC shares subchannels between channels of equal options, and a
        test's channel to a restarted replica must not inherit the backoff of a connection
        refused while it was down.)"""
        from grpc_health.v1 import health_pb2

        child = self.child
        assert child is not None
        deadline = time.monotonic() + timeout
        while True:
            if not child.alive():
                raise RuntimeError(
                    f"{self.name} exited with {child.proc.returncode}:\n{child.log_tail()}"
                )
            if await grpc_health(self.port, 0.5) == health_pb2.HealthCheckResponse.SERVING:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not serving after {timeout}s:\n{child.log_tail()}")
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
    """n service replicas on one database, each on its own ephemeral port, all SERVING."""
    procs = [
        ServiceProc(database_url, workdir, settings=dict(settings), name=f"service-{i + 1}")
        for i in range(n)
    ]
    ports = free_ports(2 * n)
    for i, p in enumerate(procs):
        p.port, p.direct_port = ports[2 * i], ports[2 * i + 1]
        p.start()
    try:
        await asyncio.gather(*(p.wait_ready() for p in procs))
    except BaseException:
        await asyncio.gather(*(p.stop() for p in procs))
        raise
    return procs
