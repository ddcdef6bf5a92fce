"""`make run-cluster` (`python -m service run-cluster`): the scale-out shape on one machine.

1. DATABASE_URL must be PostgreSQL (default postgresql+asyncpg://postgres@127.0.0.1:5432/gateway);
   the database is created when missing, then migrated (`python -m service migrate`).
2. REPLICAS (default 2) `python -m service serve` processes start on GRPC_PORTS (comma-separated;
   default GRPC_PORT, GRPC_PORT+1, ... from 50051), all on that one database.
3. One Envoy (REST on HTTP_PORT 8080, admin on ENVOY_ADMIN_PORT: 9901, or a free port when 9901
   is taken) balances over all of them: envoy.yaml rendered by gateway/envoy_config.render with
   one endpoint per replica (127.0.0.1, where the replicas listen) into build/envoy.cluster.yaml.
   Replica N's HTTP handler for the OpenAI-compatible paths is on DIRECT_HTTP_PORT + N - 1
   (default 50090, 50091, ...).
4. Replica N serves its metrics on METRICS_PORT + N - 1 (default 9464, 9465, ...); Envoy's stats
   are at ENVOY_ADMIN_PORT/stats/prometheus; OTEL_EXPORTER_OTLP_ENDPOINT traces everything.
5. MASTER_KEY as in `make run` (environment, else data/master_key). SIGINT/SIGTERM stop every
   child (each one SIGTERM, so the replicas drain); if any child exits, the rest are stopped and
   run_cluster returns that child's exit code.

docker-compose.yml describes the same cluster with containers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from service.devrun import (
    DEFAULT_DIRECT_HTTP_PORT,
    _port,
    envoy_admin_port,
    envoy_config,
    migrate,
    observability,
    ports_free,
    prepare,
    run_children,
)

DEFAULT_CLUSTER_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/gateway"


def _say(text: str) -> None:
    print(f"[run-cluster] {text}", flush=True)


def grpc_ports(env: Mapping[str, str]) -> list[int]:
    """GRPC_PORTS ("50051,50052"), else REPLICAS ports counting up from GRPC_PORT."""
    listed = [p.strip() for p in env.get("GRPC_PORTS", "").split(",") if p.strip()]
    if listed:
        ports = [int(p) for p in listed]
    else:
        replicas = int(env.get("REPLICAS", "").strip() or 2)
        if replicas < 1:
            raise ValueError("REPLICAS must be at least 1")
        first = _port(env, "GRPC_PORT", 50051)
        ports = [first + i for i in range(replicas)]
    if len(set(ports)) != len(ports):
        raise ValueError(f"GRPC_PORTS has duplicates: {ports}")
    return ports


async def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database of `url` when it does not exist; True if created."""
    import asyncpg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    name = u.database
    if not name:
        raise ValueError(f"{url}: no database name")
    conn = await asyncpg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username or "postgres",
        password=u.password,
        database="postgres",
    )
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:  # created concurrently
            return False
        return True
    finally:
        await conn.close()


def run_cluster() -> int:
    prepared = prepare(_say, "run-cluster")
    if prepared is None:
        return 2
    root, env, key, from_file = prepared
    env.setdefault("DATABASE_URL", DEFAULT_CLUSTER_DATABASE_URL)
    url = env["DATABASE_URL"]
    if not url.startswith("postgresql"):
        _say(f"DATABASE_URL must be PostgreSQL for a cluster (got {url.split(':', 1)[0]})")
        return 2
    try:
        ports = grpc_ports(env)
    except ValueError as exc:
        _say(str(exc))
        return 2
    http_port = _port(env, "HTTP_PORT", 8080)
    admin_port = envoy_admin_port(env, _say)
    first_direct = _port(env, "DIRECT_HTTP_PORT", DEFAULT_DIRECT_HTTP_PORT)
    direct_ports = [first_direct + i for i in range(len(ports))]
    env["HTTP_PORT"] = str(http_port)
    metrics, otlp = observability(_say, env, len(ports), admin_port)
    busy = [
        *((p, "GRPC_PORTS") for p in ports),
        (http_port, "HTTP_PORT"),
        (admin_port, "ENVOY_ADMIN_PORT"),
        *((p, "DIRECT_HTTP_PORT") for p in direct_ports),
        *metrics,
    ]
    if not ports_free(_say, busy):
        return 1

    try:
        if asyncio.run(ensure_database(url)):
            _say("created the database")
    except Exception as exc:
        _say(f"cannot reach PostgreSQL for {url}: {type(exc).__name__}: {exc}")
        return 1
    _say("migrating the database")
    if failed := migrate(_say, env, root):
        return failed
    config = envoy_config(
        root,
        "envoy.cluster.yaml",
        http_port=http_port,
        admin_port=admin_port,
        grpc_hosts=[("127.0.0.1", p) for p in ports],
        direct_hosts=[("127.0.0.1", p) for p in direct_ports],
        otlp_endpoint=otlp,
    )
    return run_children(
        env, root, config, ports, http_port, admin_port, key, from_file, direct_ports
    )
