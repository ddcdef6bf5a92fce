"""Secrets: virtual keys are only hashed at rest (read back from the database itself), provider
API keys are never returned by any endpoint, and the logs of a full run (a real service process
at DEBUG level driven through every RPC with every kind of key, plus the in-process logs) hold
no key and no prompt text."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import text_format
from sqlalchemy import select

from saas_llm.v1 import job_service_pb2 as job_pb
from saas_llm.v1 import model_group_service_pb2 as mg_pb
from saas_llm.v1 import team_service_pb2 as team_pb
from service.logs import JsonFormatter
from service.storage.database import Database
from service.storage.schema import metadata as schema_metadata
from tests.conftest import MASTER_KEY, Client, admin, bearer, start_client, stop_client
from tests.flows import struct, uid, user_msg
from tests.observability.scrape import fetch as fetch_metrics
from tests.reliability.harness import leaked, parse_json_lines
from tests.security.rpcs import (
    World,
    build_request,
    invoke,
    make_world,
    ordered_methods,
    principals,
)
from tests.support.otlp import OtlpCollector
from tests.support.procs import ServiceProc
from tests.support.upstream import FakeUpstream

PROVIDER_ENV = "GW_TEST_PROVIDER_KEY"


def _secret_parts(keys: list[str]) -> list[str]:
    """Each key, and its part after the display prefix (the prefix alone is public)."""
    out = []
    for k in keys:
        out += [k, k[10:]]
    return out


async def _dump_tables(url: str) -> str:
    """Every row of every table, as text."""
    db = Database.open(url)
    try:
        parts = []
        async with db.tx() as conn:
            for table in schema_metadata.sorted_tables:
                for row in (await conn.execute(select(table))).all():
                    parts.append(json.dumps(dict(row._mapping), default=str))
        return "\n".join(parts)
    finally:
        await db.dispose()


async def test_virtual_keys_only_hashed_at_rest(db_url: str, db_kind: str) -> None:
    c = await start_client(db_url)
    try:
        w = await make_world(c)
        keys = [w.key, w.revoked_key, w.other_key]
        r = await c.teams.RotateTeamKey(
            team_pb.RotateTeamKeyRequest(team_id=w.other_team), metadata=admin()
        )
        keys.append(r.virtual_key)
        await c.jobs.CreateAndCall(
            job_pb.CreateAndCallRequest(team_id=w.team, job_type="t", messages=[user_msg("hello")]),
            metadata=bearer(w.key),
        )
        team = await c.teams.GetTeam(team_pb.GetTeamRequest(team_id=w.team), metadata=admin())
        assert team.key_prefix == w.key[:10]
    finally:
        await stop_client(c)
    dump = await _dump_tables(db_url)
    assert hashlib.sha256(w.key.encode()).hexdigest() in dump  # what is stored instead
    assert hashlib.sha256(r.virtual_key.encode()).hexdigest() in dump
    found = leaked([dump], [*_secret_parts(keys), MASTER_KEY])
    assert not found, f"a key is stored in clear: {found}"
    if db_kind == "sqlite":
        # The files themselves (database and write-ahead log), byte for byte.
        path = Path(db_url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
        for k in _secret_parts(keys):
            assert k.encode() not in raw, "a key is in the SQLite file"


async def test_literal_provider_secrets_are_refused_and_never_stored(
    sqlite_client: Client,
) -> None:
    c = sqlite_client
    literal = "sk-literal-" + secrets.token_urlsafe(24)
    for field in ("api_key", "aws_secret_access_key", "aws_session_token", "vertex_credentials"):
        name = uid("grp")
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.groups.CreateModelGroup(
                mg_pb.CreateModelGroupRequest(
                    group_name=name,
                    models=[
                        mg_pb.ModelGroupModel(
                            model_name="openai/gpt-4o", priority=0, config=struct({field: literal})
                        )
                    ],
                ),
                metadata=admin(),
            )
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, e.value)
        assert literal not in (e.value.details() or "")
    dump = await _dump_tables(c.url)
    assert literal not in dump


async def _scan_every_rpc(c: Client, w: World, callers: list[tuple[str, Any]]) -> str:
    """Call every RPC as each caller; all answers, error messages and trailers as text."""
    out = []
    for method in ordered_methods():
        for _who, md in callers:
            try:
                for r in await invoke(c.channel, method, build_request(method, w), md):
                    out.append(text_format.MessageToString(r))
            except grpc.aio.AioRpcError as e:
                out.append(f"{e.code().name} {e.details()} {e.trailing_metadata()!r}")
    return "\n".join(out)


async def _secret_groups(c: Client, upstream: FakeUpstream) -> tuple[str, str]:
    """Two groups whose models take their key from PROVIDER_ENV: one answers, one fails with an
    upstream error that quotes the key back (as some providers do)."""
    cfg = {"api_base": upstream.base_url, "api_key": f"os.environ/{PROVIDER_ENV}"}
    good, bad = uid("grp"), uid("grp")
    for name, model in ((good, "openai/fine"), (bad, "openai/leaky")):
        await c.groups.CreateModelGroup(
            mg_pb.CreateModelGroupRequest(
                group_name=name,
                models=[mg_pb.ModelGroupModel(model_name=model, priority=0, config=struct(cfg))],
            ),
            metadata=admin(),
        )
    return good, bad


async def test_provider_keys_never_returned_by_any_endpoint(
    sqlite_client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    provider_key = "sk-provider-" + secrets.token_urlsafe(24)
    monkeypatch.setenv(PROVIDER_ENV, provider_key)
    c = sqlite_client
    caplog.set_level(logging.DEBUG, logger="service")
    async with FakeUpstream() as upstream:
        upstream.set_behavior("fine", content="fine answer")
        upstream.set_behavior(
            "leaky", status=401, error_message=f"Incorrect API key provided: {provider_key}"
        )
        good, bad = await _secret_groups(c, upstream)
        texts = []
        keys: list[str] = []
        for group in (good, bad):
            # A fresh tenant per group: the scan rotates its key and suspends it at the end.
            w = await make_world(c)
            keys += [w.key, w.revoked_key, w.other_key]
            await c.teams.AssignModelGroups(
                team_pb.AssignModelGroupsRequest(team_id=w.team, model_groups=[group, w.group]),
                metadata=admin(),
            )
            w.group = group
            texts.append(await _scan_every_rpc(c, w, principals(w, MASTER_KEY)[-2:]))
            # The streaming call on its own job (the scan completed the world's job early).
            job = await c.jobs.CreateJob(
                job_pb.CreateJobRequest(team_id=w.other_team, job_type="t"),
                metadata=bearer(w.other_key),
            )
            await c.teams.AssignModelGroups(
                team_pb.AssignModelGroupsRequest(team_id=w.other_team, model_groups=[group]),
                metadata=admin(),
            )
            try:
                async for m in c.jobs.LlmCallStream(
                    job_pb.LlmCallRequest(job_id=job.job_id, messages=[user_msg("x")]),
                    metadata=bearer(w.other_key),
                ):
                    texts.append(text_format.MessageToString(m))
            except grpc.aio.AioRpcError as e:
                texts.append(f"{e.details()} {e.trailing_metadata()!r}")
        # The key was really used (so this test is not vacuous) ...
        assert any(r.authorization == f"Bearer {provider_key}" for r in upstream.requests)
        assert any(r.body.get("model") == "leaky" for r in upstream.requests)
    # ... and is in no answer, no error, no log record.
    text = "\n".join(texts)
    assert "fine answer" in text and "LLM call failed" in text
    assert f"os.environ/{PROVIDER_ENV}" in text  # the reference is shown, never the value
    assert not leaked([text], [provider_key, provider_key[12:]]), "a provider key was returned"
    fmt = JsonFormatter()
    logs = "\n".join(fmt.format(r) for r in caplog.records)
    assert not leaked([logs], [provider_key, *keys, MASTER_KEY])
    dump = await _dump_tables(c.url)
    assert provider_key not in dump, "a provider key reached the database"


async def test_logs_of_a_full_run_hold_no_key_and_no_prompt(db_url: str, tmp_path: Path) -> None:
    """A real service process at LOG_LEVEL=DEBUG, with metrics and tracing on, driven through
    every RPC with every kind of key, successful, failing and streamed calls with a
    recognisable prompt, and a provider that quotes its key back in errors; then its whole log,
    its metrics exposition and every span it exported are scanned."""
    async with OtlpCollector() as collector:
        await _full_run(db_url, tmp_path, collector)


async def _full_run(db_url: str, tmp_path: Path, collector: OtlpCollector) -> None:
    provider_key = "sk-provider-" + secrets.token_urlsafe(24)
    marker = "PROMPT-" + uuid.uuid4().hex
    prompt = f"{marker} please summarise the confidential merger plan"
    svc = ServiceProc(
        db_url,
        tmp_path,
        settings={
            "LOG_LEVEL": "DEBUG",
            PROVIDER_ENV: provider_key,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "METRICS_PORT": 0,
        },
        name="service-debug",
    )
    svc.start()
    keys: list[str] = []
    exposition = ""
    try:
        await svc.wait_ready()
        async with FakeUpstream() as upstream:
            upstream.set_behavior("fine", content=f"echo: {prompt}")
            upstream.set_behavior(
                "leaky", status=401, error_message=f"Incorrect API key provided: {provider_key}"
            )
            channel = grpc.aio.insecure_channel(svc.target)
            c = Client(channel=channel, app=None, url=db_url)  # type: ignore[arg-type]
            try:
                w = await make_world(c)
                keys += [w.key, w.revoked_key, w.other_key]
                good, bad = await _secret_groups(c, upstream)
                await c.teams.AssignModelGroups(
                    team_pb.AssignModelGroupsRequest(
                        team_id=w.team, model_groups=[w.group, good, bad]
                    ),
                    metadata=admin(),
                )
                # Calls that succeed, fail (provider error quoting its key) and stream.
                for group in (w.group, good, bad):
                    for stream in (False, True):
                        req = job_pb.CreateAndCallRequest(
                            team_id=w.team,
                            job_type="t",
                            model_group=group,
                            messages=[user_msg(prompt)],
                            metadata=struct({"note": prompt}),
                        )
                        try:
                            if stream:
                                async for _ in c.jobs.CreateAndCallStream(
                                    req, metadata=bearer(w.key)
                                ):
                                    pass
                            else:
                                await c.jobs.CreateAndCall(req, metadata=bearer(w.key))
                        except grpc.aio.AioRpcError:
                            pass
                # Keys in the wrong places: as a team id, in a body, in a bad header.
                for bad_md in (
                    (("authorization", w.key),),
                    (("authorization", "Bearer " + w.key + "x"),),
                    (("authorization", f"Basic {MASTER_KEY}"),),
                ):
                    with pytest.raises(grpc.aio.AioRpcError):
                        await c.teams.GetTeam(
                            team_pb.GetTeamRequest(team_id=w.team), metadata=bad_md
                        )
                # Every RPC with every kind of caller (the matrix, once more; last, as it rotates
                # the key and suspends the team).
                for method in ordered_methods():
                    for _who, md in principals(w, MASTER_KEY):
                        req = build_request(method, w)
                        if hasattr(req, "messages"):
                            del req.messages[:]
                            req.messages.append(user_msg(prompt))
                        with contextlib.suppress(grpc.aio.AioRpcError):
                            await invoke(c.channel, method, req, md)
                assert any(r.authorization == f"Bearer {provider_key}" for r in upstream.requests)
            finally:
                await channel.close()
        (listening,) = [r for r in parse_json_lines(svc.log()) if r.get("msg") == "listening"]
        exposition = await asyncio.to_thread(fetch_metrics, int(listening["metrics_port"]))
    finally:
        code = await svc.stop()
    assert code == 0, svc.log()[-3000:]
    log = svc.log()
    records = parse_json_lines(log)
    assert len(records) > 200, "the run logged too little to prove anything"
    assert any(r.get("level") == "debug" for r in records) or any(
        r.get("msg") == "rpc" for r in records
    )
    found = leaked(
        [log], [*_secret_parts(keys), MASTER_KEY, provider_key, provider_key[12:], marker]
    )
    assert not found, f"secrets or prompt text in the logs: {found[:3]}"
    assert any("trace_id" in r for r in records), "tracing was on: lines carry the trace id"
    # The metrics of the run: the calls are counted, no key, prompt or tenant id is there.
    assert 'outcome="failed"' in exposition and 'outcome="success"' in exposition
    found = leaked(
        [exposition],
        [*_secret_parts(keys), MASTER_KEY, provider_key, provider_key[12:], marker, w.team],
    )
    assert not found, f"secrets, prompt text or a team id in the metrics: {found[:3]}"
    # The spans it exported (flushed at shutdown): RPCs, statements, provider attempts.
    spans = collector.spans
    assert {s.name for s in spans} >= {"/saas_llm.v1.JobService/CreateAndCall", "chat openai/fine"}
    assert any(s.attributes.get("db.system") for s in spans)
    found = leaked(
        [s.raw for s in spans],
        [*_secret_parts(keys), MASTER_KEY, provider_key, provider_key[12:], marker],
    )
    assert not found, f"secrets or prompt text in the spans: {found[:3]}"
