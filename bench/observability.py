"""CPU per LLM call with metrics on and off, and with tracing on, in-process.

`python -m bench.observability` prints JSON. A real App on SQLite (the simulator answers at
once) is called over gRPC on loopback (`JobService/LlmCall`), `time.process_time` read around
batches of calls; the numbers include the client's side of the call (the same in every mode:
the differences are the service's).

- Metrics: one process, one App with metrics on, whose hooks (the CallObserver of the domain and
  the interceptor's RpcObserver) are switched off and on between batches, the order alternating;
  `metrics_added_us` is the median of the paired differences, `metrics_added_us_min` the
  difference of each mode's least disturbed batch. Comparing separate processes (or
  two Apps in one process: the second one started measured ~85 µs slower per call with both
  identical) drowned a ~10 µs effect in ±250 µs of noise on the shared 2-core machine.
- Tracing: a large effect, measured across processes: metrics only, then metrics and
  OpenTelemetry (batch processor, an exporter that drops the spans) with every request sampled,
  and with 1% sampled (`parentbased_traceidratio`, 0.01), the order alternating; medians.
- `hooks_us`: the metric updates of one call alone, in a tight loop (the floor of what metrics
  add); `log_line_us`: one INFO access line rendered by service/logs.py (the access log is off,
  WARNING, in every measured mode).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from saas_llm.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc
from saas_llm.v1 import model_group_service_pb2 as mg_pb
from saas_llm.v1 import model_group_service_pb2_grpc as mg_grpc
from saas_llm.v1 import organization_service_pb2 as org_pb
from saas_llm.v1 import organization_service_pb2_grpc as org_grpc
from saas_llm.v1 import team_service_pb2 as team_pb
from saas_llm.v1 import team_service_pb2_grpc as team_grpc
from service import metrics
from service.logs import JsonFormatter
from service.observe import LogObserver
from service.server import App
from service.settings import Settings
from service.storage.migrate import migrate

KEY = "sk-master-bench-observability-" + "o" * 8


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _Caller:
    """A team with one open job on an App, and a channel to call it."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        self.jobs = job_service_pb2_grpc.JobServiceStub(self.channel)
        self.md: tuple[tuple[str, str], ...] = ()
        self.request = job_service_pb2.LlmCallRequest()

    async def setup(self) -> None:
        admin = (("authorization", f"Bearer {KEY}"),)
        await org_grpc.OrganizationServiceStub(self.channel).CreateOrganization(
            org_pb.CreateOrganizationRequest(organization_id="bench", name="Bench"), metadata=admin
        )
        await mg_grpc.ModelGroupServiceStub(self.channel).CreateModelGroup(
            mg_pb.CreateModelGroupRequest(
                group_name="bench",
                models=[mg_pb.ModelGroupModel(model_name="simulator/bench", priority=0)],
            ),
            metadata=admin,
        )
        team = await team_grpc.TeamServiceStub(self.channel).CreateTeam(
            team_pb.CreateTeamRequest(
                organization_id="bench",
                team_id="bench",
                model_groups=["bench"],
                credits_allocated=1_000_000,
            ),
            metadata=admin,
        )
        self.md = (("authorization", f"Bearer {team.virtual_key}"),)
        job = await self.jobs.CreateJob(
            job_service_pb2.CreateJobRequest(team_id="bench", job_type="bench"), metadata=self.md
        )
        content = struct_pb2.Value(string_value="Summarise the quarterly report in one line.")
        self.request = job_service_pb2.LlmCallRequest(
            job_id=job.job_id, messages=[common_pb2.ChatMessage(role="user", content=content)]
        )

    async def calls(self, n: int) -> float:
        """CPU seconds of the process for n sequential calls."""
        t0 = time.process_time()
        for _ in range(n):
            await self.jobs.LlmCall(self.request, metadata=self.md)
        return time.process_time() - t0

    async def close(self) -> None:
        await self.channel.close()
        await self.app.stop(grace=0.5)


async def _start(tmp: Path, name: str, **settings: Any) -> _Caller:
    url = f"sqlite+aiosqlite:///{tmp / (name + '.db')}"
    await asyncio.to_thread(migrate, url)
    provider = settings.pop("tracer_provider", None)
    app = App(
        Settings(
            database_url=url,
            master_key=KEY,
            grpc_host="127.0.0.1",
            grpc_port=0,
            metrics_port=0,
            log_level="WARNING",
            **settings,
        ),
        tracer_provider=provider,
    )
    await app.start()
    caller = _Caller(app)
    await caller.setup()
    return caller


def _hooks_us(n: int = 100_000) -> float:
    """CPU microseconds of what metrics add to one llm-call, measured alone: one attempt, one
    recorded call and one RPC observation (label children already resolved)."""
    observer, rpc = metrics.MetricsObserver(), metrics.RpcMetrics()
    t0 = time.process_time()
    for _ in range(n):
        observer.attempt("bench", "simulator/bench", time.perf_counter(), None)
        observer.call(
            "bench", "simulator/bench", "success", failed_attempts=0, prompt_tokens=12,
            completion_tokens=30, cost_usd=0.0001, seconds=0.001, ttft_seconds=None, chunks=0,
        )  # fmt: skip
        rpc("/saas_llm.v1.JobService/LlmCall", "OK", 0.001)
    return (time.process_time() - t0) / n * 1e6


def _log_line_us(lines: int = 20_000) -> float:
    """CPU microseconds of one INFO access line through the service's formatter."""
    logger = logging.getLogger("bench.access")
    logger.propagate = False
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    extra = {"request_id": "0" * 32, "method": "/saas_llm.v1.JobService/LlmCall", "code": "OK"}
    t0 = time.process_time()
    for _ in range(lines):
        logger.info("rpc", extra={**extra, "ms": 1.23})
    return (time.process_time() - t0) / lines * 1e6


PROCESS_MODES = ("metrics", "tracing", "tracing-1pct")


async def metrics_paired(calls: int, rounds: int) -> dict[str, Any]:
    """Per-call CPU with the metric hooks on and off, alternating batches on one App."""
    logging.getLogger("service").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-obs-") as tmp:
        caller = await _start(Path(tmp), "paired")
        app = caller.app
        hooks = (app.jobs.observer, app.interceptor.on_rpc)
        quiet = LogObserver()

        def switch(on: bool) -> None:
            observer = hooks[0] if on else quiet
            app.jobs.observer = app.jobs.runner.observer = observer
            app.interceptor.on_rpc = hooks[1] if on else None

        try:
            await caller.calls(max(100, calls // 2))  # warmup
            us: dict[bool, list[float]] = {True: [], False: []}
            for i in range(rounds):
                for on in (True, False) if i % 2 else (False, True):
                    switch(on)
                    us[on].append(await caller.calls(calls) * 1e6 / calls)
        finally:
            switch(True)
            await caller.close()
    diffs = [a - b for a, b in zip(us[True], us[False], strict=True)]
    return {
        "batches": rounds,
        "calls_per_batch": calls,
        "on_us_median": round(statistics.median(us[True]), 1),
        "off_us_median": round(statistics.median(us[False]), 1),
        "metrics_added_us": round(statistics.median(diffs), 1),
        # The least disturbed batch of each mode: the steadiest estimate on a busy machine.
        "on_us_min": round(min(us[True]), 1),
        "off_us_min": round(min(us[False]), 1),
        "metrics_added_us_min": round(min(us[True]) - min(us[False]), 1),
    }


async def measure(mode: str, calls: int) -> float:
    """CPU ms per call of one process mode, in this process."""
    logging.getLogger("service").setLevel(logging.WARNING)
    settings: dict[str, Any] = {}
    if mode.startswith("tracing"):
        ratio = 0.01 if mode == "tracing-1pct" else 1.0
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)))
        provider.add_span_processor(BatchSpanProcessor(_Drop()))
        settings["tracer_provider"] = provider
    with tempfile.TemporaryDirectory(prefix="bench-obs-") as tmp:
        caller = await _start(Path(tmp), mode, **settings)
        try:
            await caller.calls(max(100, calls // 4))  # warmup
            return await caller.calls(calls) * 1000 / calls
        finally:
            await caller.close()


def run(calls: int, runs: int, rounds: int) -> dict[str, Any]:
    paired = asyncio.run(metrics_paired(calls // 20, rounds))
    samples: dict[str, list[float]] = {m: [] for m in PROCESS_MODES}
    for i in range(runs):
        for mode in PROCESS_MODES if i % 2 == 0 else tuple(reversed(PROCESS_MODES)):
            out = subprocess.run(
                [sys.executable, "-m", "bench.observability", "--mode", mode, f"--calls={calls}"],
                check=True,
                capture_output=True,
                text=True,
            )
            samples[mode].append(float(out.stdout))
    median = {m: statistics.median(v) for m, v in samples.items()}
    return {
        "metrics": paired,
        "tracing": {
            "calls_per_process": calls,
            "processes_per_mode": runs,
            "cpu_ms_per_call_median": {m: round(v, 4) for m, v in median.items()},
            "cpu_ms_per_call_samples": {m: [round(x, 4) for x in v] for m, v in samples.items()},
            "tracing_added_us": round((median["tracing"] - median["metrics"]) * 1000, 1),
            "tracing_1pct_added_us": round((median["tracing-1pct"] - median["metrics"]) * 1000, 1),
        },
        "hooks_us": round(_hooks_us(), 1),
        "log_line_us": round(_log_line_us(), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="measured calls per process")
    parser.add_argument("--runs", type=int, default=4, help="processes per tracing mode")
    parser.add_argument("--rounds", type=int, default=100, help="batch pairs, metrics on/off")
    parser.add_argument("--mode", choices=PROCESS_MODES, help="measure this mode in this process")
    args = parser.parse_args(argv)
    if args.mode:
        print(asyncio.run(measure(args.mode, args.calls)))
    else:
        print(json.dumps(run(args.calls, args.runs, args.rounds), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
