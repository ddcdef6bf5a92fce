"""The JSON log lines (service/logs.py) as the service writes them: every line of a request with
its request id, principal and team id, a WARNING per failed provider attempt, the request id of
a refused request, the trace id when tracing is on."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider

from saas_llm.v1 import job_service_pb2 as job_pb
from service.logs import JsonFormatter
from service.server import App
from tests.conftest import Client, bearer, fresh_database, make_settings, stop_client
from tests.flows import make_group, make_team, user_msg


@contextlib.contextmanager
def written() -> Iterator[io.StringIO]:
    """The JSON lines the service logs at INFO and above meanwhile, formatted as they are
    written (inside the request, as the service's stderr handler does)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    service = logging.getLogger("service")
    old = service.level
    service.setLevel(logging.INFO)
    service.addHandler(handler)
    try:
        yield out
    finally:
        service.removeHandler(handler)
        service.setLevel(old)


async def test_every_line_of_a_request_carries_its_context(client: Client) -> None:
    c = client
    marker = "PROMPT-" + uuid.uuid4().hex
    down = f"simulator/down-{uuid.uuid4().hex[:6]}"
    group = await make_group(c, [(down, {"fail_with": "429"}), ("simulator/up", {})])
    team, key = await make_team(c, groups=[group])
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team, job_type="t"), metadata=bearer(key)
    )
    rid = "req-" + uuid.uuid4().hex
    with written() as out:
        await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg(marker)]),
            metadata=(*bearer(key), ("x-request-id", rid)),
        )
        refused = "req-" + uuid.uuid4().hex
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.jobs.CreateJob(
                job_pb.CreateJobRequest(team_id=team, job_type="t"),
                metadata=(*bearer(key + "x"), ("x-request-id", refused)),
            )
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    text = out.getvalue()
    assert marker not in text and key not in text
    records = [json.loads(line) for line in text.splitlines()]
    mine = [r for r in records if r.get("request_id") == rid]
    # The failed attempt's WARNING and the access line, both with the request's context.
    assert {r["msg"] for r in mine} == {"provider attempt failed", "rpc"}, records
    for r in mine:
        assert r["principal"] == "team" and r["team_id"] == team, r
    (warning,) = [r for r in mine if r["msg"] == "provider attempt failed"]
    assert warning["level"] == "warning"
    assert warning["model"] == down and warning["model_group"] == group
    assert warning["status"] == 429 and warning["retryable"] is True
    assert isinstance(warning["latency_ms"], float)
    (access,) = [r for r in mine if r["msg"] == "rpc"]
    assert access["code"] == "OK" and access["method"] == "/saas_llm.v1.JobService/LlmCall"
    assert {"ts", "level", "logger"} <= set(access)
    # A refused request keeps the id it came with, and has no principal.
    (denied,) = [r for r in records if r.get("request_id") == refused]
    assert denied["code"] == "UNAUTHENTICATED" and "principal" not in denied


async def test_lines_carry_the_trace_id_when_tracing_is_on(tmp_path: Path) -> None:
    url = await fresh_database("sqlite", tmp_path)
    app = App(make_settings(url), tracer_provider=TracerProvider())
    await app.start()
    c = Client(grpc.aio.insecure_channel(f"127.0.0.1:{app.port}"), app, url)
    trace_id = uuid.uuid4().hex
    try:
        with written() as out:
            team, key = await make_team(c)
            await c.jobs.CreateJob(
                job_pb.CreateJobRequest(team_id=team, job_type="t"),
                metadata=(*bearer(key), ("traceparent", f"00-{trace_id}-{'1' * 16}-01")),
            )
    finally:
        await stop_client(c)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    (access,) = [r for r in records if r.get("method") == "/saas_llm.v1.JobService/CreateJob"]
    assert access["trace_id"] == trace_id
    assert len(str(access["span_id"])) == 16
    # Tracing off again (the app stopped): no trace ids.
    assert "trace_id" not in JsonFormatter().format(
        logging.LogRecord("service", logging.WARNING, __file__, 1, "after", None, None)
    )
