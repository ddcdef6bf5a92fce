"""`make bench` (`python -m bench`): the gateway side by side with the LiteLLM proxy, one run.

1. The LiteLLM proxy's venv (bench/.litellm-venv, pinned) is installed if missing.
2. The fast fake upstream starts (tests/support/fast_upstream.py); it is measured directly.
3. The service (`python -m service serve`, SQLite in a temp dir) and Envoy (envoy.yaml rendered
   with free ports) start as separate processes; an org, a model group pointing at the fake
   upstream and a team with plenty of credits are created through REST; then every scenario runs.
   With PostgreSQL reachable on 127.0.0.1:5432, a second service on a fresh database repeats the
   llm-call and flow scenarios.
4. The LiteLLM proxy starts (one worker, no database) on the same upstream and gets the same load.
5. bench/results/latest.{json,md,png} are written and the table is printed.

Each scenario: warmup, then a fixed number of requests at concurrency 1 and 32, capped in time.
CPU per request is read from /proc for the service and Envoy (or the proxy) only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import litellm_proxy, loadgen, pinning, procs, report
from bench.loadgen import LoadResult, Op, StreamTiming
from service.devrun import envoy_command
from tests.support.envoy import wait_ready as envoy_ready
from tests.support.procs import wait_grpc_serving

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DESCRIPTOR = ROOT / "build" / "descriptor.pb"
MESSAGES = [{"role": "user", "content": "Say hello in five words."}]
STREAM_CHUNKS = 20
# Back-to-back gateway/proxy rounds for the throughput ratio (the target takes their median).
PAIRED_ROUNDS = 5
POSTGRES = ("127.0.0.1", 5432)
# Set by main(): the gateway on one CPU, this process (load generator) and the upstream on the
# others (bench/pinning.py); None with --no-pin or on a machine where pinning is unavailable.
LAYOUT: pinning.Layout | None = None


def say(text: str) -> None:
    print(f"[bench] {text}", flush=True)


@dataclass(frozen=True)
class Budget:
    """Requests and time cap of one measured run (after its warmup)."""

    requests: int
    time_cap: float
    warmup: int
    warmup_cap: float = 2.0


@dataclass
class Sizes:
    call_c1: Budget = field(default_factory=lambda: Budget(1500, 4.0, 100))
    call_c32: Budget = field(default_factory=lambda: Budget(6000, 7.0, 400))
    stream_c1: Budget = field(default_factory=lambda: Budget(600, 4.0, 50))
    stream_c32: Budget = field(default_factory=lambda: Budget(2500, 7.0, 200))
    slow_c1: Budget = field(default_factory=lambda: Budget(400, 5.0, 20))  # LiteLLM
    slow_c32: Budget = field(default_factory=lambda: Budget(1200, 8.0, 100))

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            call_c1=Budget(300, 1.5, 30, 1.0),
            call_c32=Budget(1000, 2.0, 100, 1.0),
            stream_c1=Budget(150, 1.5, 10, 1.0),
            stream_c32=Budget(400, 2.0, 50, 1.0),
            slow_c1=Budget(100, 2.0, 10, 1.0),
            slow_c32=Budget(300, 3.0, 30, 1.0),
        )

    def pick(self, *, stream: bool, concurrency: int, slow: bool = False) -> Budget:
        if slow:
            return self.slow_c1 if concurrency == 1 else self.slow_c32
        if stream:
            return self.stream_c1 if concurrency == 1 else self.stream_c32
        return self.call_c1 if concurrency == 1 else self.call_c32


@dataclass
class Measured:
    """A process whose CPU and peak RSS a scenario reports."""

    label: str
    pid: int
    with_children: bool = False


async def measure(
    *,
    system: str,
    scenario: str,
    via: str,
    stream: bool,
    concurrency: int,
    budget: Budget,
    make_op: Op,
    targets: list[Measured],
    upstream_pid: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op = make_op
    warm = await loadgen.run(
        op, concurrency=concurrency, requests=budget.warmup, time_cap=budget.warmup_cap
    )
    if warm.done == 0:
        say(f"  {system} {scenario} via {via} c={concurrency}: warmup failed {warm.error_samples}")
    cpu0 = {t.label: procs.cpu_seconds(t.pid, with_children=t.with_children) for t in targets}
    up0 = procs.cpu_seconds(upstream_pid, with_children=False)
    machine0, ours0 = procs.machine_busy_seconds(), procs.cpu_seconds(os.getpid())
    gen0 = time.process_time()
    profiler = _start_profiler(targets, f"{system}-{scenario}-{via}-c{concurrency}")
    try:
        result = await loadgen.run(
            op, concurrency=concurrency, requests=budget.requests, time_cap=budget.time_cap
        )
    finally:
        gen1 = time.process_time()
        machine1, ours1 = procs.machine_busy_seconds(), procs.cpu_seconds(os.getpid())
        _stop_profiler(profiler)
    up1 = procs.cpu_seconds(upstream_pid, with_children=False)
    cpu1 = {t.label: procs.cpu_seconds(t.pid, with_children=t.with_children) for t in targets}
    row = _row(system, scenario, via, stream, concurrency, result)
    n = max(result.done, 1)
    row["cpu_ms_per_req"] = {k: round((cpu1[k] - cpu0[k]) * 1000 / n, 3) for k in cpu0}
    row["cpu_ms_per_req_total"] = round(sum(cpu1[k] - cpu0[k] for k in cpu0) * 1000 / n, 3)
    row["upstream_cpu_ms_per_req"] = round((up1 - up0) * 1000 / n, 3)
    row["loadgen_cpu_ms_per_req"] = round((gen1 - gen0) * 1000 / n, 3)
    # CPU the rest of the machine used meanwhile (other users' processes), in cores.
    other = (machine1 - machine0) - (ours1 - ours0)
    row["other_cpu_cores"] = round(max(0.0, other) / result.wall_s, 2) if result.wall_s else 0.0
    row["peak_rss_mb"] = {
        t.label: round(procs.peak_rss_mb(t.pid, with_children=t.with_children), 1) for t in targets
    }
    if extra:
        row.update(extra)
    cpu = row["cpu_ms_per_req_total"] if targets else None
    say(
        f"  {system:8} {scenario:16} {via:12} c={concurrency:<3} {result.rps:8.1f} rps  "
        f"p50 {row['p50_ms']:7.3f} ms  p99 {row['p99_ms']:7.3f} ms"
        + (f"  cpu {cpu:.3f} ms/req" if cpu is not None else "")
        + (f"  errors {result.errors} {result.error_samples[:1]}" if result.errors else "")
        + (
            f"  [others used {row['other_cpu_cores']} cores]"
            if row["other_cpu_cores"] > 0.1
            else ""
        )
    )
    return row


PROFILE_DIR: Path | None = None
# --transcode-job-flow: the job flow's REST paths through Envoy's transcoder (as before issue 20's
# HTTP handler for them), to compare the two ways.
TRANSCODE_JOB_FLOW = False


def _start_profiler(targets: list[Measured], name: str) -> subprocess.Popen[bytes] | None:
    """With --profile DIR: py-spy (collapsed stacks) on the service while the run lasts."""
    service = next((t for t in targets if t.label == "service"), None)
    if PROFILE_DIR is None or service is None:
        return None
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    out = PROFILE_DIR / (name.replace(" ", "_").replace("/", "_") + ".txt")
    spy = Path(sys.executable).parent / "py-spy"
    proc = subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(service.pid),
            "--rate",
            "500",
            "--format",
            "raw",
            "--nonblocking",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return proc


def _stop_profiler(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        proc.send_signal(2)
        proc.wait(20)


def _ms(value: float) -> float:
    return round(value * 1000, 3)


def _row(
    system: str, scenario: str, via: str, stream: bool, concurrency: int, r: LoadResult
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "system": system,
        "scenario": scenario,
        "via": via,
        "stream": stream,
        "concurrency": concurrency,
        "requests": r.done,
        "errors": r.errors,
        "error_samples": r.error_samples,
        "wall_s": round(r.wall_s, 3),
        "time_capped": r.timed_out,
        "rps": round(r.rps, 1),
        "p50_ms": _ms(loadgen.percentile(r.latencies_s, 50)),
        "p90_ms": _ms(loadgen.percentile(r.latencies_s, 90)),
        "p99_ms": _ms(loadgen.percentile(r.latencies_s, 99)),
    }
    if stream:
        row["first_chunk_p50_ms"] = _ms(loadgen.percentile(r.first_chunk_s, 50))
        row["first_chunk_p99_ms"] = _ms(loadgen.percentile(r.first_chunk_s, 99))
        row["chunk_interval_p50_us"] = round(loadgen.percentile(r.chunk_intervals_s, 50) * 1e6, 1)
        row["chunks_per_stream"] = round(sum(r.chunks) / len(r.chunks), 1) if r.chunks else 0
    return row


# The gateway -------------------------------------------------------------------------------


@dataclass
class Gateway:
    service: procs.Child
    envoy: procs.Child
    grpc_port: int
    http_port: int
    direct_port: int
    start_s: float
    envoy_start_s: float
    database: str
    workdir: Path
    master_key: str
    team_id: str = "bench-team"
    team_key: str = ""

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> None:
        self.envoy.stop()
        self.service.stop()


def _service_env(
    database_url: str, master_key: str, grpc_port: int, direct_port: int
) -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env.update(
        {
            "DATABASE_URL": database_url,
            "MASTER_KEY": master_key,
            "GRPC_PORT": str(grpc_port),
            "GRPC_HOST": "127.0.0.1",
            # The OpenAI-compatible paths' HTTP handler, behind Envoy like in production.
            "DIRECT_HTTP_PORT": str(direct_port),
            "LOG_LEVEL": "WARNING",
            # Metrics on (the bench measures what production runs) on a free port.
            "METRICS_PORT": "0",
        }
    )
    return env


async def _grpc_serving(port: int, child: procs.Child, timeout: float) -> None:
    await wait_grpc_serving(port, child, timeout)


async def _envoy_ready(admin_port: int, http_port: int, child: procs.Child) -> None:
    await envoy_ready(child, timeout=30, admin_port=admin_port, http_port=http_port)


async def start_gateway(database_url: str, workdir: Path, label: str) -> Gateway:
    master_key = "sk-master-" + secrets.token_urlsafe(24)
    grpc_port, http_port, admin_port = procs.free_port(), procs.free_port(), procs.free_port()
    direct_port = procs.free_port()
    env = _service_env(database_url, master_key, grpc_port, direct_port)
    migrated = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if migrated.returncode != 0:
        raise RuntimeError(f"migrate failed: {migrated.stderr[-2000:]}")
    service = procs.spawn(
        f"service-{label}",
        [sys.executable, "-m", "service", "serve"],
        env=env,
        cwd=ROOT,
        log_dir=workdir,
        prefix=pinning.prefix(LAYOUT),
    )
    try:
        await _grpc_serving(grpc_port, service, 60)
        start_s = time.perf_counter() - service.started_at

        sys.path.insert(0, str(ROOT))
        from gateway.envoy_config import render

        config = workdir / f"envoy-{label}.yaml"
        config.write_text(
            render(
                http_port=http_port,
                grpc_port=grpc_port,
                admin_port=admin_port,
                descriptor_path=DESCRIPTOR,
                listen_address="127.0.0.1",
                direct_hosts=[direct_port],
                job_flow_over_http=not TRANSCODE_JOB_FLOW,
            )
        )
        envoy = procs.spawn(
            f"envoy-{label}",
            envoy_command(config),
            env=dict(os.environ),
            cwd=workdir,
            log_dir=workdir,
            prefix=pinning.prefix(LAYOUT),
        )
    except BaseException:
        service.stop()
        raise
    try:
        await _envoy_ready(admin_port, http_port, envoy)
    except BaseException:
        envoy.stop()
        service.stop()
        raise
    gw = Gateway(
        service=service,
        envoy=envoy,
        grpc_port=grpc_port,
        http_port=http_port,
        direct_port=direct_port,
        start_s=start_s,
        envoy_start_s=time.perf_counter() - envoy.started_at,
        database=database_url.split(":", 1)[0],
        workdir=workdir,
        master_key=master_key,
    )
    return gw


async def setup_tenant(gw: Gateway, upstream_base: str) -> None:
    admin = {"Authorization": f"Bearer {gw.master_key}"}
    async with loadgen.Session() as s:
        await loadgen.post_json(
            s,
            gw.rest + "/api/organizations/create",
            orjson.dumps({"organization_id": "bench", "name": "Bench"}),
            admin,
        )
        await loadgen.post_json(
            s,
            gw.rest + "/api/model-groups/create",
            orjson.dumps(
                {
                    "group_name": "bench",
                    "models": [
                        {
                            "model_name": "openai/bench-model",
                            "priority": 0,
                            "config": {
                                "api_base": upstream_base,
                                "input_cost_per_token": 0.000001,
                                "output_cost_per_token": 0.000002,
                            },
                        }
                    ],
                }
            ),
            admin,
        )
        team = await loadgen.post_json(
            s,
            gw.rest + "/api/teams/create",
            orjson.dumps(
                {
                    "organization_id": "bench",
                    "team_id": gw.team_id,
                    "model_groups": ["bench"],
                    "credits_allocated": 10_000_000,
                    # One open job per worker takes thousands of calls: the per-job calls bound
                    # (default 100) is off for the bench's team, so the rows measure the call
                    # path itself (with a bound on, a call adds one conditional UPDATE).
                    "max_calls_per_job": 0,
                }
            ),
            admin,
        )
    gw.team_key = team["virtual_key"]


async def open_jobs(gw: Gateway, n: int) -> list[str]:
    headers = {"Authorization": f"Bearer {gw.team_key}"}
    body = orjson.dumps({"team_id": gw.team_id, "job_type": "bench"})
    async with loadgen.Session() as s:
        return [
            (await loadgen.post_json(s, gw.rest + "/api/jobs/create", body, headers))["job_id"]
            for _ in range(n)
        ]


def _check_call(obj: Any) -> None:
    if not obj["response"]["content"]:
        raise loadgen.HttpError(f"empty answer: {obj}")


class GatewayOps:
    """The requests of the gateway scenarios, as load generator ops."""

    def __init__(
        self, gw: Gateway, session: loadgen.Session, stub: Any, health_stub: Any = None
    ) -> None:
        from google.protobuf import struct_pb2

        from saas_llm.v1 import common_pb2

        self.gw = gw
        self.s = session
        self.stub = stub
        self.health_stub = health_stub
        self.headers = {"Authorization": f"Bearer {gw.team_key}"}
        self.metadata = (("authorization", f"Bearer {gw.team_key}"),)
        self.messages_pb = [
            common_pb2.ChatMessage(
                role=m["role"], content=struct_pb2.Value(string_value=str(m["content"]))
            )
            for m in MESSAGES
        ]
        self.call_body = orjson.dumps({"messages": MESSAGES, "purpose": "bench"})
        self.create_body = orjson.dumps({"team_id": gw.team_id, "job_type": "bench"})
        self.complete_body = orjson.dumps({"status": "completed"})
        self.cac_body = orjson.dumps(
            {"team_id": gw.team_id, "job_type": "bench", "messages": MESSAGES, "purpose": "bench"}
        )

    async def _post(self, url: str, body: bytes) -> Any:
        return await loadgen.post_json(self.s, url, body, self.headers)

    def _requests(self, jobs: list[str]) -> Any:
        from saas_llm.v1 import job_service_pb2 as job_pb

        return itertools.cycle(
            [
                job_pb.LlmCallRequest(job_id=j, messages=self.messages_pb, purpose="bench")
                for j in jobs
            ]
        )

    async def rest_call(self, concurrency: int) -> Op:
        # One open job per worker: real clients spread their calls over many jobs.
        urls = itertools.cycle(
            [f"{self.gw.rest}/api/jobs/{j}/llm-call" for j in await open_jobs(self.gw, concurrency)]
        )

        async def op() -> StreamTiming | None:
            _check_call(await self._post(next(urls), self.call_body))
            return None

        return op

    async def rest_floor(self, concurrency: int) -> Op:
        # GET /health/live: Envoy, the transcoder and grpc.aio around a handler that does
        # nothing (no key, no database, no upstream): the floor under every gateway call.
        url = f"{self.gw.rest}/health/live"

        async def op() -> StreamTiming | None:
            answer = await loadgen.post_json(self.s, url, b"", None, "GET")
            if answer["status"] != "alive":
                raise loadgen.HttpError(f"not alive: {answer}")
            return None

        return op

    async def grpc_floor(self, concurrency: int) -> Op:
        # HealthService/Live over native gRPC: grpc.aio and our interceptor around a handler
        # that does nothing; the floor of the gRPC rows (no Envoy).
        from saas_llm.v1 import health_service_pb2 as health_pb

        request = health_pb.LiveRequest()

        async def op() -> StreamTiming | None:
            answer = await self.health_stub.Live(request, timeout=60)
            if answer.status != "alive":
                raise loadgen.HttpError(f"not alive: {answer}")
            return None

        return op

    async def openai_call(self, concurrency: int) -> Op:
        # The OpenAI-compatible path (Pattern B): POST /v1/chat/completions with the team's key
        # and the model group's name, through Envoy to the service's own HTTP handler.
        url = f"{self.gw.rest}/v1/chat/completions"
        body = orjson.dumps({"model": "bench", "messages": MESSAGES})

        async def op() -> StreamTiming | None:
            obj = await self._post(url, body)
            if not obj["choices"][0]["message"]["content"]:
                raise loadgen.HttpError(f"empty answer: {obj}")
            return None

        return op

    async def grpc_call(self, concurrency: int) -> Op:
        reqs = self._requests(await open_jobs(self.gw, concurrency))

        async def op() -> StreamTiming | None:
            answer = await self.stub.LlmCall(next(reqs), metadata=self.metadata, timeout=60)
            if not answer.response.content:
                raise loadgen.HttpError("empty answer")
            return None

        return op

    async def flow(self, concurrency: int) -> Op:
        async def op() -> StreamTiming | None:
            job = await self._post(self.gw.rest + "/api/jobs/create", self.create_body)
            base = f"{self.gw.rest}/api/jobs/{job['job_id']}"
            _check_call(await self._post(base + "/llm-call", self.call_body))
            done = await self._post(base + "/complete", self.complete_body)
            if done["status"] != "completed":
                raise loadgen.HttpError(f"complete: {done}")
            return None

        return op

    async def create_and_call(self, concurrency: int) -> Op:
        async def op() -> StreamTiming | None:
            _check_call(await self._post(self.gw.rest + "/api/jobs/create-and-call", self.cac_body))
            return None

        return op

    async def rest_stream(self, concurrency: int) -> Op:
        urls = itertools.cycle(
            [
                f"{self.gw.rest}/api/jobs/{j}/llm-call-stream"
                for j in await open_jobs(self.gw, concurrency)
            ]
        )

        async def op() -> StreamTiming | None:
            return await loadgen.post_sse(
                self.s, next(urls), self.call_body, self.headers, openai_style=False
            )

        return op

    async def grpc_stream(self, concurrency: int) -> Op:
        reqs = self._requests(await open_jobs(self.gw, concurrency))

        async def op() -> StreamTiming | None:
            t0 = time.perf_counter()
            first = last = 0.0
            chunks = 0
            async for msg in self.stub.LlmCallStream(
                next(reqs), metadata=self.metadata, timeout=60
            ):
                if msg.content:
                    last = time.perf_counter() - t0
                    if not chunks:
                        first = last
                    chunks += loadgen.upstream_chunks(msg.content)
                elif msg.HasField("error"):
                    raise loadgen.HttpError(f"stream error: {msg.error.message}")
            return StreamTiming(first, last, chunks)

        return op


# (name for --only, scenario, via, stream, GatewayOps method)
GATEWAY_SCENARIOS = (
    ("floor", report.FLOOR, "Envoy REST", False, "rest_floor"),
    ("floor-grpc", report.FLOOR, "gRPC", False, "grpc_floor"),
    ("llm-call", "llm-call", "Envoy REST", False, "rest_call"),
    ("llm-call-grpc", "llm-call", "gRPC", False, "grpc_call"),
    ("openai", "llm-call", report.OPENAI_VIA, False, "openai_call"),
    ("flow", "create+call+complete", "Envoy REST", False, "flow"),
    ("create-and-call", "create-and-call", "Envoy REST", False, "create_and_call"),
    ("stream", "llm-call-stream", "Envoy REST", True, "rest_stream"),
    ("stream-grpc", "llm-call-stream", "gRPC", True, "grpc_stream"),
)


async def gateway_scenarios(
    gw: Gateway,
    sizes: Sizes,
    upstream_pid: int,
    *,
    only: set[str] | None = None,
    label: str = "",
) -> list[dict[str, Any]]:
    """Every scenario of our gateway, at concurrency 1 and 32."""
    import grpc

    from saas_llm.v1 import health_service_pb2_grpc as health_grpc
    from saas_llm.v1 import job_service_pb2_grpc as job_grpc

    rows: list[dict[str, Any]] = []
    rest_targets = [Measured("service", gw.service.pid), Measured("envoy", gw.envoy.pid)]
    grpc_targets = [Measured("service", gw.service.pid)]
    system = "gateway" + (f"/{label}" if label else "")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gw.grpc_port}")
    stub = job_grpc.JobServiceStub(channel)
    health_stub = health_grpc.HealthServiceStub(channel)
    try:
        for c in (1, 32):
            async with loadgen.Session() as session:
                ops = GatewayOps(gw, session, stub, health_stub)
                for name, scenario, via, stream, method in GATEWAY_SCENARIOS:
                    if only is not None and name not in only:
                        continue
                    rows.append(
                        await measure(
                            system=system,
                            scenario=scenario,
                            via=via,
                            stream=stream,
                            concurrency=c,
                            budget=sizes.pick(stream=stream, concurrency=c),
                            make_op=await getattr(ops, method)(c),
                            targets=grpc_targets if via == "gRPC" else rest_targets,
                            upstream_pid=upstream_pid,
                            extra={"database": gw.database},
                        )
                    )
    finally:
        await channel.close()
    return rows


# The scenarios repeated on PostgreSQL (the others do not touch the database differently).
PG_SCENARIOS = {"llm-call", "flow", "create-and-call"}


# Baselines ---------------------------------------------------------------------------------


async def openai_scenarios(
    *,
    system: str,
    via: str,
    url: str,
    headers: dict[str, str] | None,
    sizes: Sizes,
    targets: list[Measured],
    upstream_pid: int,
    slow: bool = False,
) -> list[dict[str, Any]]:
    """Non-streamed and streamed chat completions against an OpenAI-compatible URL."""
    rows = []
    body = orjson.dumps({"model": litellm_proxy.MODEL, "messages": MESSAGES})
    sbody = orjson.dumps({"model": litellm_proxy.MODEL, "messages": MESSAGES, "stream": True})
    for c in (1, 32):
        async with loadgen.Session() as s:

            async def call() -> StreamTiming | None:
                obj = await loadgen.post_json(s, url, body, headers)
                if not obj["choices"][0]["message"]["content"]:
                    raise loadgen.HttpError("empty answer")
                return None

            async def stream() -> StreamTiming | None:
                return await loadgen.post_sse(s, url, sbody, headers, openai_style=True)

            for name, op, is_stream in (
                ("llm-call", call, False),
                ("llm-call-stream", stream, True),
            ):
                rows.append(
                    await measure(
                        system=system,
                        scenario=name,
                        via=via,
                        stream=is_stream,
                        concurrency=c,
                        budget=sizes.pick(stream=is_stream, concurrency=c, slow=slow),
                        make_op=op,
                        targets=targets,
                        upstream_pid=upstream_pid,
                    )
                )
    return rows


async def start_upstream(workdir: Path) -> tuple[procs.Child, int]:
    child = procs.spawn(
        "upstream",
        [
            sys.executable,
            "-m",
            "tests.support.fast_upstream",
            "--port",
            "0",
            "--chunks",
            str(STREAM_CHUNKS),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        log_dir=workdir,
        stdout_pipe=True,
    )
    assert child.proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(child.proc.stdout.readline), 20)
    if not line.startswith(b"PORT "):
        child.stop()
        raise RuntimeError(f"upstream did not start: {line!r} {child.log_tail()}")
    port = int(line.split()[1])
    await procs.wait_tcp(port, 10, child)
    return child, port


def _postgres_reachable() -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(POSTGRES) == 0


async def _fresh_postgres_db() -> str | None:
    """A new database on the local server; None (with a note) when that fails."""
    try:
        import asyncpg
    except ImportError:
        return None
    name = f"bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_postgres_db(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(host=POSTGRES[0], port=POSTGRES[1], user="postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def paired_rounds(
    gw: Gateway,
    proxy_url: str,
    proxy_targets: list[Measured],
    upstream_pid: int,
    *,
    rounds: int,
) -> list[dict[str, Any]]:
    """The throughput target's two numbers measured back to back, `rounds` times: whatever else
    runs on the machine then weighs on both sides alike. The target uses the median ratio."""
    ours_budget = Budget(6000, 3.0, 200, 1.0)
    theirs_budget = Budget(1000, 3.0, 50, 1.0)
    body = orjson.dumps({"model": litellm_proxy.MODEL, "messages": MESSAGES})
    proxy_headers = {"Authorization": f"Bearer {litellm_proxy.MASTER_KEY}"}
    gw_targets = [Measured("service", gw.service.pid), Measured("envoy", gw.envoy.pid)]
    out = []
    async with loadgen.Session() as session:
        gateway_op = await GatewayOps(gw, session, None).rest_call(32)

        async def proxy_op() -> StreamTiming | None:
            await loadgen.post_json(session, proxy_url, body, proxy_headers)
            return None

        for i in range(rounds):
            ours = await measure(
                system="gateway",
                scenario="llm-call (paired)",
                via="Envoy REST",
                budget=ours_budget,
                make_op=gateway_op,
                targets=gw_targets,
                stream=False,
                concurrency=32,
                upstream_pid=upstream_pid,
            )
            theirs = await measure(
                system="litellm",
                scenario="llm-call (paired)",
                via="proxy",
                budget=theirs_budget,
                make_op=proxy_op,
                targets=proxy_targets,
                stream=False,
                concurrency=32,
                upstream_pid=upstream_pid,
            )
            out.append(
                {
                    "round": i + 1,
                    "gateway_rps": ours["rps"],
                    "litellm_rps": theirs["rps"],
                    "ratio": round(ours["rps"] / theirs["rps"], 2) if theirs["rps"] else None,
                    "gateway_cpu_ms_per_req": ours["cpu_ms_per_req_total"],
                    "litellm_cpu_ms_per_req": theirs["cpu_ms_per_req_total"],
                    "cpu_ratio": round(
                        theirs["cpu_ms_per_req_total"] / ours["cpu_ms_per_req_total"], 2
                    )
                    if ours["cpu_ms_per_req_total"]
                    else None,
                    "errors": ours["errors"] + theirs["errors"],
                }
            )
    return out


# Main --------------------------------------------------------------------------------------


async def amain(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    sizes = Sizes.quick() if args.quick else Sizes()
    only = set(args.only.split(",")) if args.only else None
    meta: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "stream_chunks": STREAM_CHUNKS,
        "quick": bool(args.quick),
        "litellm_version": litellm_proxy.LITELLM_VERSION,
        "pinning": LAYOUT.describe() if LAYOUT else {"off": args.pin_off_reason},
        "notes": [],
    }
    if TRANSCODE_JOB_FLOW:
        meta["notes"].append(
            "--transcode-job-flow: the job flow's REST paths went through Envoy's transcoder"
        )
    if meta["load_average_at_start"] > 0.5:
        note = (
            f"the load average was {meta['load_average_at_start']} before the bench started: "
            "other processes share the CPUs, so every number is pessimistic"
        )
        meta["notes"].append(note)
        say(f"warning: {note}")
    rows: list[dict[str, Any]] = []
    starts: dict[str, Any] = {}
    children: list[procs.Child] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    pg_db: str | None = None

    litellm_exe: Path | None = None
    litellm_reason: str | None = "skipped (--no-litellm)"
    if not args.no_litellm:
        litellm_exe, litellm_reason, install_s = await asyncio.to_thread(
            litellm_proxy.ensure_venv, say
        )
        if install_s:
            meta["litellm_install_s"] = round(install_s, 1)
        if litellm_reason:
            say(f"LiteLLM proxy unavailable: {litellm_reason}")

    try:
        upstream, up_port = await start_upstream(workdir)
        children.append(upstream)
        up_base = f"http://127.0.0.1:{up_port}/v1"
        say(f"fake upstream on :{up_port} ({STREAM_CHUNKS} chunks per stream)")

        say("baseline: the upstream called directly")
        rows += await openai_scenarios(
            system="direct",
            via="HTTP",
            url=up_base + "/chat/completions",
            headers=None,
            sizes=sizes,
            targets=[],
            upstream_pid=upstream.pid,
        )

        say("gateway on SQLite: service + Envoy")
        gw = await start_gateway(f"sqlite+aiosqlite:///{workdir / 'bench.db'}", workdir, "sqlite")
        children += [gw.service, gw.envoy]
        starts["service_sqlite_s"] = round(gw.start_s, 3)
        starts["envoy_s"] = round(gw.envoy_start_s, 3)
        say(f"service serving {gw.start_s:.2f}s after spawn, Envoy ready {gw.envoy_start_s:.2f}s")
        await setup_tenant(gw, up_base)
        rows += await gateway_scenarios(gw, sizes, upstream.pid, only=only)

        # The proxy runs while the SQLite gateway is still up (idle), so that the headline pair
        # can be measured back to back, round after round.
        if litellm_exe is not None:
            say(f"baseline: LiteLLM proxy {litellm_proxy.LITELLM_VERSION} (1 worker, no database)")
            port = procs.free_port()
            proxy = litellm_proxy.start(litellm_exe, workdir, up_base, port, pinning.prefix(LAYOUT))
            children.append(proxy)
            try:
                await _litellm_ready(proxy, port)
            except Exception as exc:
                litellm_reason = f"the proxy did not start: {exc}"[:800]
                say(f"LiteLLM proxy unavailable: {litellm_reason}")
            else:
                starts["litellm_proxy_s"] = round(time.perf_counter() - proxy.started_at, 3)
                litellm_reason = None
                proxy_url = f"http://127.0.0.1:{port}/chat/completions"
                proxy_targets = [Measured("litellm", proxy.pid, with_children=True)]
                rows += await openai_scenarios(
                    system="litellm",
                    via="proxy",
                    url=proxy_url,
                    headers={"Authorization": f"Bearer {litellm_proxy.MASTER_KEY}"},
                    sizes=sizes,
                    targets=proxy_targets,
                    upstream_pid=upstream.pid,
                    slow=True,
                )
                say("headline pair, back to back: gateway llm-call (REST) vs LiteLLM, c=32")
                meta["pairs"] = await paired_rounds(
                    gw,
                    proxy_url,
                    proxy_targets,
                    upstream.pid,
                    rounds=1 if args.quick else PAIRED_ROUNDS,
                )
            proxy.stop()
        gw.stop()

        if not args.no_postgres and _postgres_reachable():
            try:
                pg_db = await _fresh_postgres_db()
            except Exception as exc:
                meta["notes"].append(f"PostgreSQL skipped: {exc}")
            if pg_db:
                say(f"gateway on PostgreSQL (database {pg_db})")
                url = f"postgresql+asyncpg://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{pg_db}"
                pg = await start_gateway(url, workdir, "postgres")
                children += [pg.service, pg.envoy]
                starts["service_postgres_s"] = round(pg.start_s, 3)
                await setup_tenant(pg, up_base)
                rows += await gateway_scenarios(
                    pg,
                    sizes,
                    upstream.pid,
                    only=PG_SCENARIOS & (only or PG_SCENARIOS),
                    label="pg",
                )
                pg.stop()
        elif not args.no_postgres:
            meta["notes"].append("PostgreSQL not reachable on 127.0.0.1:5432: skipped")

    finally:
        for child in reversed(children):
            child.stop()
        if pg_db:
            with contextlib.suppress(Exception):
                await _drop_postgres_db(pg_db)

    if not args.no_extras:
        meta["extras"] = await _extras()
    meta["litellm_unavailable"] = litellm_reason
    meta["starts"] = starts
    meta["runtime_s"] = round(time.perf_counter() - began, 1)
    doc = report.build(meta, rows)
    paths = report.write(doc, RESULTS, png=not args.no_png)
    print()
    print(paths["table"])
    print()
    say(f"wrote {', '.join(str(p.relative_to(ROOT)) for p in paths['files'])}")
    say(f"total runtime {meta['runtime_s']:.0f}s")
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        say(f"logs kept in {workdir}")
    return 0


# Other measurements that run as their own program and print one JSON object.
EXTRAS = ("bench.usage_scale",)


async def _extras() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for module in EXTRAS:
        say(f"extra: python -m {module}")
        try:
            proc = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", module],
                env={**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT)))},
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip()[-500:] or f"exit code {proc.returncode}")
            out[module] = orjson.loads(proc.stdout)
        except Exception as exc:  # reported, never fatal
            out[module] = {"error": f"{type(exc).__name__}: {exc}"[:600]}
            say(f"  {module} failed: {out[module]['error']}")
    return out


async def _litellm_ready(proxy: procs.Child, port: int) -> None:
    deadline = time.monotonic() + 90
    async with aiohttp.ClientSession() as session:
        while True:
            if not proxy.alive():
                raise RuntimeError(f"exited: {proxy.log_tail(800)}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"http://127.0.0.1:{port}/health/liveliness") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError("not ready after 90s")
            await asyncio.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test)")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM baseline")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL runs")
    parser.add_argument("--no-png", action="store_true", help="do not draw the chart")
    parser.add_argument(
        "--no-extras", action="store_true", help="skip the extra programs (bench.usage_scale)"
    )
    parser.add_argument(
        "--only",
        help="comma-separated gateway scenarios: floor,floor-grpc,llm-call,llm-call-grpc,openai,"
        "flow,create-and-call,stream,stream-grpc",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin (default: gateway on one CPU, load generator and upstream on the others)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir with the logs")
    parser.add_argument(
        "--profile", metavar="DIR", help="py-spy the service during each run (collapsed stacks)"
    )
    parser.add_argument(
        "--transcode-job-flow",
        action="store_true",
        help="the job flow's REST paths through Envoy's transcoder to gRPC instead of the "
        "service's HTTP handler (to compare the two)",
    )
    args = parser.parse_args(argv)
    global TRANSCODE_JOB_FLOW
    TRANSCODE_JOB_FLOW = args.transcode_job_flow
    global LAYOUT
    LAYOUT, args.pin_off_reason = (None, "--no-pin") if args.no_pin else pinning.plan()
    if LAYOUT is not None:
        # Before any thread exists: affinity is per thread, inherited by threads made later.
        pinning.pin_self(LAYOUT)
        say(
            f"pinned: gateway on CPU {LAYOUT.gateway}, load generator and upstream on {LAYOUT.load}"
        )
    else:
        say(f"not pinned: {args.pin_off_reason}")
    if args.profile:
        global PROFILE_DIR
        PROFILE_DIR = Path(args.profile).resolve()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(amain(args))
    return int(uvloop.run(amain(args)))
