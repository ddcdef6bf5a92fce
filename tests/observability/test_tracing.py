"""OpenTelemetry tracing (service/tracing.py) of a real service on SQLite and PostgreSQL, its
spans exported to an in-memory exporter: one trace from the caller's traceparent through the RPC
to the storage statements and each provider attempt; nothing installed when tracing is off."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from saas_llm.v1 import job_service_pb2 as job_pb
from saas_llm.v1 import team_service_pb2 as team_pb
from service.providers.tracing import TracingProvider
from service.server import App
from tests.conftest import MASTER_KEY, Client, bearer, make_settings, start_client, stop_client
from tests.flows import make_group, make_team, user_msg

TRACE_ID = uuid.uuid4().hex
PARENT_ID = uuid.uuid4().hex[:16]
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@dataclass
class Traced:
    client: Client
    spans: InMemorySpanExporter


@pytest.fixture
async def traced(db_url: str) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # cache_ttl 0: every call reads its key and groups from the database (spans to look for).
    app = App(make_settings(db_url, cache_ttl=0), tracer_provider=provider)
    await app.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    c = Client(channel=channel, app=app, url=db_url)
    try:
        yield Traced(c, exporter)
    finally:
        await stop_client(c)


def _hex(n: int, width: int) -> str:
    return format(n, f"0{width}x")


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    pid = parent.context.span_id
    return [s for s in spans if s.parent is not None and s.parent.span_id == pid]


def _descendants(spans: list[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    out, todo = [], [root]
    while todo:
        kids = _children(spans, todo.pop())
        out += kids
        todo += kids
    return out


def _text(spans: list[ReadableSpan]) -> str:
    return "\n".join(s.to_json() for s in spans)


async def test_one_trace_through_the_rpc_storage_and_each_provider_attempt(
    traced: Traced, db_kind: str
) -> None:
    c = traced.client
    down, up = f"simulator/down-{uuid.uuid4().hex[:6]}", f"simulator/up-{uuid.uuid4().hex[:6]}"
    group = await make_group(c, [(down, {"fail_with": "503"}), (up, {})])
    team, key = await make_team(c, groups=[group])
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team, job_type="t"), metadata=bearer(key)
    )
    traced.spans.clear()
    await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("hello")]),
        metadata=(*bearer(key), ("traceparent", TRACEPARENT)),
    )
    spans = list(traced.spans.get_finished_spans())
    rpc = [s for s in spans if s.name == "/saas_llm.v1.JobService/LlmCall"]
    assert len(rpc) == 1, [s.name for s in spans]
    call = rpc[0]
    # The RPC continues the caller's trace (as it continues Envoy's).
    assert call.kind == SpanKind.SERVER
    assert _hex(call.context.trace_id, 32) == TRACE_ID
    assert call.parent is not None and call.parent.is_remote
    assert _hex(call.parent.span_id, 16) == PARENT_ID
    assert all(_hex(s.context.trace_id, 32) == TRACE_ID for s in _descendants(spans, call))

    # One span per provider attempt, children of the RPC: the failed one, then the fallback.
    attempts = [s for s in _children(spans, call) if s.name.startswith("chat ")]
    assert [s.name for s in attempts] == [f"chat {down}", f"chat {up}"]
    failed, answered = attempts
    assert failed.kind == SpanKind.CLIENT
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["http.response.status_code"] == 503
    assert answered.status.status_code != StatusCode.ERROR
    assert answered.attributes is not None
    assert answered.attributes["gen_ai.request.model"] == up
    assert answered.attributes["gen_ai.provider.name"] == "simulator"
    assert int(str(answered.attributes["gen_ai.usage.output_tokens"])) > 0

    # The storage statements of the RPC (the key, the job, the call record), at driver level.
    system = "sqlite" if db_kind == "sqlite" else "postgresql"
    statements = [
        s
        for s in _descendants(spans, call)
        if s.attributes is not None and s.attributes.get("db.system") == system
    ]
    assert statements, [(s.name, dict(s.attributes or {})) for s in spans]
    assert all(s.kind == SpanKind.CLIENT for s in statements)


async def test_a_streamed_attempt_spans_the_whole_stream(traced: Traced) -> None:
    c = traced.client
    model = f"simulator/s-{uuid.uuid4().hex[:6]}"
    group = await make_group(c, [(model, {"response": "a b c d e"})])
    team, key = await make_team(c, groups=[group])
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team, job_type="t"), metadata=bearer(key)
    )
    traced.spans.clear()
    async for _ in c.jobs.LlmCallStream(
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("hello")]),
        metadata=(*bearer(key), ("traceparent", TRACEPARENT)),
    ):
        pass
    spans = list(traced.spans.get_finished_spans())
    (rpc,) = [s for s in spans if s.name == "/saas_llm.v1.JobService/LlmCallStream"]
    (attempt,) = [s for s in _children(spans, rpc) if s.name == f"chat {model}"]
    assert [e.name for e in attempt.events] == ["gen_ai.first_token"]
    assert attempt.attributes is not None
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attempt.end_time is not None and attempt.end_time <= (rpc.end_time or 0)


async def test_spans_hold_no_key_and_no_prompt(traced: Traced) -> None:
    c = traced.client
    marker = "PROMPT-" + uuid.uuid4().hex
    team, key = await make_team(c)
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team, job_type="t"), metadata=bearer(key)
    )
    await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg(marker)]),
        metadata=bearer(key),
    )
    for md, team_id in ((bearer(key + "x"), team), (bearer(key), key), (bearer(MASTER_KEY), key)):
        with pytest.raises(grpc.aio.AioRpcError):  # refused, with a key where an id goes
            await c.teams.GetTeam(team_pb.GetTeamRequest(team_id=team_id), metadata=md)
    spans = list(traced.spans.get_finished_spans())
    assert len(spans) > 10
    text = _text(spans)
    assert "/saas_llm.v1.TeamService/GetTeam" in text
    for secret in (key, key[10:], MASTER_KEY, marker):
        leaks = [s.to_json() for s in spans if secret in s.to_json()]
        assert not leaks, [ln[:3000] for ln in leaks[0].split("\\n") if secret in ln]


async def test_tracing_off_installs_nothing(client: Client) -> None:
    app = client.app
    assert app.tracing is None
    assert not isinstance(app.provider, TracingProvider)
    assert type(sqlite3.connect).__name__ == "builtin_function_or_method"  # not wrapped
    import asyncpg.connection

    assert not hasattr(asyncpg.connection.Connection.fetch, "__wrapped__")


async def test_tracing_is_uninstalled_when_the_app_stops(db_url: str) -> None:
    provider = TracerProvider()
    c = await start_client(db_url)
    await stop_client(c)
    app = App(make_settings(db_url), tracer_provider=provider)
    await app.start()
    assert app.tracing is not None
    assert type(sqlite3.connect).__name__ != "builtin_function_or_method"
    await app.stop(grace=0.1)
    assert type(sqlite3.connect).__name__ == "builtin_function_or_method"
