"""How the gateway scales with cores: N service processes behind one Envoy (an Envoy cluster of
N ports, as `make run REPLICAS=N` and docker-compose run them), on PostgreSQL, llm-call through
Envoy REST at concurrency 64.

    python -m bench.scaling [--replicas 1,2] [--requests 6000] [--rounds 2]

With N replicas the gateway (the N services and Envoy) gets the first N CPUs (taskset); the load
generator and the fake upstream get the CPUs left, or share all of them when none is left (then
the CPU per request, not the RPS, is the number to read). Prints one JSON object and writes
bench/results/scaling.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench import loadgen, pinning, procs, run
from service.devrun import envoy_command

CONCURRENCY = 64


async def _start(
    n: int, cpus: tuple[int, ...], db_url: str, workdir: Path
) -> tuple[run.Gateway, list[procs.Child]]:
    master_key = "sk-master-" + secrets.token_urlsafe(24)
    layout = pinning.Layout(gateway=cpus, load=())
    prefix = pinning.prefix(layout)
    grpc_ports = [procs.free_port() for _ in range(n)]
    direct_ports = [procs.free_port() for _ in range(n)]
    http_port, admin_port = procs.free_port(), procs.free_port()
    env0 = run._service_env(db_url, master_key, grpc_ports[0], direct_ports[0])
    migrated = subprocess.run(
        [sys.executable, "-m", "service", "migrate"], env=env0, cwd=run.ROOT, capture_output=True
    )
    if migrated.returncode != 0:
        raise RuntimeError(migrated.stderr.decode()[-2000:])
    services = []
    for i in range(n):
        env = run._service_env(db_url, master_key, grpc_ports[i], direct_ports[i])
        child = procs.spawn(
            f"service-{n}-{i}",
            [sys.executable, "-m", "service", "serve"],
            env=env,
            cwd=run.ROOT,
            log_dir=workdir,
            prefix=prefix,
        )
        services.append(child)
    for port, child in zip(grpc_ports, services, strict=True):
        await run._grpc_serving(port, child, 60)
    from gateway.envoy_config import render

    config = workdir / f"envoy-{n}.yaml"
    config.write_text(
        render(
            http_port=http_port,
            grpc_port=grpc_ports[0],
            admin_port=admin_port,
            descriptor_path=run.DESCRIPTOR,
            grpc_hosts=grpc_ports,
            direct_hosts=direct_ports,
            listen_address="127.0.0.1",
        )
    )
    envoy = procs.spawn(
        f"envoy-{n}",
        envoy_command(config),
        env=dict(os.environ),
        cwd=workdir,
        log_dir=workdir,
        prefix=prefix,
    )
    await run._envoy_ready(admin_port, http_port, envoy)
    gw = run.Gateway(
        service=services[0],
        envoy=envoy,
        grpc_port=grpc_ports[0],
        http_port=http_port,
        direct_port=direct_ports[0],
        start_s=0.0,
        envoy_start_s=0.0,
        database="postgresql",
        workdir=workdir,
        master_key=master_key,
    )
    return gw, services


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    cpus = sorted(os.sched_getaffinity(0))
    workdir = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    out: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": len(cpus),
        "concurrency": CONCURRENCY,
        "database": "postgresql",
        "runs": [],
    }
    upstream, up_port = await run.start_upstream(workdir)
    try:
        for n in args.replicas:
            if n > len(cpus):
                continue
            gateway_cpus = tuple(cpus[:n])
            load_cpus = tuple(cpus[n:]) or tuple(cpus)
            # The load generator (this thread) and the upstream move to the CPUs left.
            os.sched_setaffinity(0, set(load_cpus))
            os.sched_setaffinity(upstream.pid, set(load_cpus))
            db = await run._fresh_postgres_db()
            assert db is not None
            url = f"postgresql+asyncpg://postgres@{run.POSTGRES[0]}:{run.POSTGRES[1]}/{db}"
            gw, services = await _start(n, gateway_cpus, url, workdir)
            try:
                await run.setup_tenant(gw, f"http://127.0.0.1:{up_port}/v1")
                targets = [run.Measured(f"service{i}", s.pid) for i, s in enumerate(services)]
                targets.append(run.Measured("envoy", gw.envoy.pid))
                async with loadgen.Session() as session:
                    op = await run.GatewayOps(gw, session, None).rest_call(CONCURRENCY)
                    rounds = []
                    for _ in range(args.rounds):
                        rounds.append(
                            await run.measure(
                                system=f"gateway x{n}",
                                scenario="llm-call",
                                via="Envoy REST",
                                stream=False,
                                concurrency=CONCURRENCY,
                                budget=run.Budget(args.requests, 10.0, 300),
                                make_op=op,
                                targets=targets,
                                upstream_pid=upstream.pid,
                            )
                        )
                best = max(rounds, key=lambda r: r["rps"])
                out["runs"].append(
                    {
                        "replicas": n,
                        "gateway_cpus": list(gateway_cpus),
                        "load_cpus": list(load_cpus),
                        "rps": best["rps"],
                        "p50_ms": best["p50_ms"],
                        "p99_ms": best["p99_ms"],
                        "cpu_ms_per_req": best["cpu_ms_per_req_total"],
                        "errors": sum(r["errors"] for r in rounds),
                        "rounds_rps": [r["rps"] for r in rounds],
                    }
                )
            finally:
                gw.envoy.stop()
                for s in services:
                    s.stop()
                with contextlib.suppress(Exception):
                    await run._drop_postgres_db(db)
    finally:
        upstream.stop()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--replicas", default="1,2", type=lambda v: [int(x) for x in v.split(",")])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    result = asyncio.run(amain(args))
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    (run.RESULTS / "scaling.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
