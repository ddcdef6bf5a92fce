"""Provider credentials pasted into model configs (issue 19; issue 21 items 8 and 9): sealed at
rest (the SQLite file's bytes and every text/JSON column of PostgreSQL are searched), opened only
for a call (the fake upstream receives the key), shown as hints to the master key and not at all
to team keys, rotated by `python -m service rotate-encryption-key`, refused clearly with a
wrong or missing ENCRYPTION_KEY; env references limited to provider credential names."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from saas_llm.v1 import job_service_pb2 as job_pb
from saas_llm.v1 import model_group_service_pb2 as mg_pb
from service.encryption import EncryptionKeyError, generate_key
from service.logs import JsonFormatter
from service.providers.base import ModelSpec
from service.storage.catalog import CatalogRepository
from service.storage.database import Database
from tests.conftest import (
    MASTER_KEY,
    Client,
    admin,
    bearer,
    fresh_database,
    start_client,
    stop_client,
)
from tests.flows import make_team, struct, uid, user_msg
from tests.support.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[2]


def _literal(tag: str) -> str:
    return f"sk-{tag}-" + secrets.token_urlsafe(24)


def _secret_config(upstream: FakeUpstream, secrets_: dict[str, str]) -> dict[str, Any]:
    """A model config with every kind of credential as a literal."""
    return {
        "api_base": upstream.base_url,
        "api_key": secrets_["api_key"],
        "azure_ad_token": secrets_["azure_ad_token"],
        "aws_secret_access_key": secrets_["aws"],
        "vertex_credentials": {"private_key": secrets_["vertex"]},
        "extra_headers": {"X-Credential": secrets_["header"]},
        "input_cost_per_token": 0.000001,
    }


async def _create(
    c: Client, name: str, models: list[tuple[str, dict[str, Any]]]
) -> mg_pb.ModelGroup:
    return await c.groups.CreateModelGroup(
        mg_pb.CreateModelGroupRequest(
            group_name=name,
            models=[
                mg_pb.ModelGroupModel(model_name=m, priority=i, config=struct(cfg))
                for i, (m, cfg) in enumerate(models)
            ],
        ),
        metadata=admin(),
    )


async def _call(c: Client, team: str, key: str, group: str) -> job_pb.CreateAndCallResponse:
    return await c.jobs.CreateAndCall(
        job_pb.CreateAndCallRequest(
            team_id=team, job_type="t", model_group=group, messages=[user_msg("hello")]
        ),
        metadata=bearer(key),
    )


async def _pg_text_columns(url: str) -> str:
    """Every value of every text, varchar and JSON column of every table, as text."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        cols = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND data_type IN "
            "('text', 'character varying', 'character', 'json', 'jsonb')"
        )
        assert len(cols) > 20, "too few columns found to prove anything"
        parts = []
        for col in cols:
            rows = await conn.fetch(
                f'SELECT "{col["column_name"]}"::text AS v FROM "{col["table_name"]}"'
            )
            parts += [r["v"] for r in rows if r["v"] is not None]
        return "\n".join(parts)
    finally:
        await conn.close()


def _sqlite_bytes(url: str) -> bytes:
    path = Path(url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


async def test_pasted_keys_sealed_at_rest_hidden_on_read_and_sent_to_the_provider(
    db_url: str, db_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="service")
    secrets_ = {
        k: _literal(k) for k in ("api_key", "azure_ad_token", "aws", "vertex", "header", "base")
    }
    c = await start_client(db_url, encryption_key=generate_key())
    try:
        async with FakeUpstream() as upstream:
            upstream.set_behavior("fine", content="fine answer")
            group = uid("grp")
            creds_base = f"http://user:{secrets_['base']}@127.0.0.1:9/v1?api_key={secrets_['base']}"
            created = await _create(
                c,
                group,
                [
                    ("openai/fine", _secret_config(upstream, secrets_)),
                    ("openai/never", {"api_base": creds_base}),
                ],
            )
            team, key = await make_team(c, groups=[group])
            answer = await _call(c, team, key, group)
            assert answer.response.content == "fine answer"
            # The key reached the provider, opened, as the Authorization header.
            assert [r.authorization for r in upstream.requests] == [f"Bearer {secrets_['api_key']}"]
            # An update that sends the group back as read keeps every secret.
            read = await c.groups.GetModelGroup(
                mg_pb.GetModelGroupRequest(group_name=group), metadata=admin()
            )
            await c.groups.UpdateModelGroup(
                mg_pb.UpdateModelGroupRequest(group_name=group, models=read.models),
                metadata=admin(),
            )
            await _call(c, team, key, group)
            assert upstream.requests[-1].authorization == f"Bearer {secrets_['api_key']}"

            # Reads: the master key sees hints, a team key no credential at all.
            admin_reads = [
                created,
                read,
                await c.groups.GetModelGroupModels(
                    mg_pb.GetModelGroupModelsRequest(group_name=group), metadata=admin()
                ),
                await c.groups.ListModelGroups(mg_pb.ListModelGroupsRequest(), metadata=admin()),
            ]
            team_reads = [
                await c.groups.GetModelGroup(
                    mg_pb.GetModelGroupRequest(group_name=group), metadata=bearer(key)
                ),
                await c.groups.GetModelGroupModels(
                    mg_pb.GetModelGroupModelsRequest(group_name=group), metadata=bearer(key)
                ),
                await c.groups.ListModelGroups(
                    mg_pb.ListModelGroupsRequest(), metadata=bearer(key)
                ),
            ]
        cfg = json_format.MessageToDict(read.models[0].config)
        assert cfg["api_key"] == "****" + secrets_["api_key"][-4:]
        assert cfg["extra_headers"] == {"X-Credential": "****" + secrets_["header"][-4:]}
        assert cfg["vertex_credentials"] == "****"
        assert cfg["api_base"] == upstream.base_url  # a plain URL is no secret
        assert json_format.MessageToDict(read.models[1].config)["api_base"] == (
            "http://****@127.0.0.1:9/v1?****"
        )
        team_cfg = json_format.MessageToDict(team_reads[0].models[0].config)
        assert team_cfg == {"api_base": upstream.base_url, "input_cost_per_token": 0.000001}
        assert json_format.MessageToDict(team_reads[0].models[1].config) == {}
        text = "\n".join(json_format.MessageToJson(m) for m in admin_reads + team_reads)
        for s in secrets_.values():
            assert s not in text, "a read returned a secret"
        logs = "\n".join(JsonFormatter().format(r) for r in caplog.records)
        for s in secrets_.values():
            assert s not in logs, "a secret was logged"
    finally:
        await stop_client(c)
    # At rest: nowhere in clear, the database file byte for byte or every column.
    if db_kind == "sqlite":
        raw = _sqlite_bytes(db_url)
        assert b"$encrypted" in raw  # the sealed form is what is stored
        for s in secrets_.values():
            assert s.encode() not in raw, "a secret is in the SQLite file"
    else:
        dump = await _pg_text_columns(db_url)
        assert "$encrypted" in dump
        for s in secrets_.values():
            assert s not in dump, "a secret is in a PostgreSQL column"


async def _sealed_group(url: str, upstream: FakeUpstream, key: str, secret: str) -> str:
    c = await start_client(url, encryption_key=key)
    try:
        name = uid("grp")
        await _create(
            c, name, [("openai/fine", {"api_base": upstream.base_url, "api_key": secret})]
        )
        return name
    finally:
        await stop_client(c)


def _run_service(*args: str, env: dict[str, str]) -> tuple[int, str]:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


async def test_rotation_reseals_every_key_and_calls_still_work(tmp_path: Path) -> None:
    url = await fresh_database("sqlite", tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    old = generate_key()
    (data / "encryption_key").write_text(old + "\n")
    secret = _literal("rot")
    async with FakeUpstream() as upstream:
        upstream.set_behavior("fine", content="ok")
        group = await _sealed_group(url, upstream, old, secret)
        before = _sqlite_bytes(url)
        code, out = await asyncio.to_thread(
            _run_service,
            "rotate-encryption-key",
            "--data-dir",
            str(data),
            env={"DATABASE_URL": url, "ENCRYPTION_KEY": ""},
        )
        assert code == 0, out
        assert "re-sealed 1 model config(s)" in out
        new = (data / "encryption_key").read_text().strip()
        assert new != old and "," not in new
        assert old not in out and new not in out, "the command printed a key"
        after = _sqlite_bytes(url)
        assert secret.encode() not in before + after
        # The old key no longer opens what is stored; the new one alone does, and calls work.
        with pytest.raises(EncryptionKeyError, match="does not hold"):
            await start_client(url, encryption_key=old)
        c = await start_client(url, encryption_key=new)
        try:
            team, key = await make_team(c, groups=[group])
            await _call(c, team, key, group)
            assert upstream.requests[-1].authorization == f"Bearer {secret}"
        finally:
            await stop_client(c)
        # The ENCRYPTION_KEY way: "<new>,<old>" re-seals with the first.
        newer = generate_key()
        code, out = await asyncio.to_thread(
            _run_service,
            "rotate-encryption-key",
            env={"DATABASE_URL": url, "ENCRYPTION_KEY": f"{newer},{new}"},
        )
        assert code == 0 and "re-sealed 1 model config(s)" in out, out
        c = await start_client(url, encryption_key=newer)
        try:
            team, key = await make_team(c, groups=[group])
            await _call(c, team, key, group)
            assert upstream.requests[-1].authorization == f"Bearer {secret}"
        finally:
            await stop_client(c)


async def test_wrong_or_missing_encryption_key_fails_clearly(tmp_path: Path) -> None:
    url = await fresh_database("sqlite", tmp_path)
    async with FakeUpstream() as upstream:
        group = await _sealed_group(url, upstream, generate_key(), _literal("k"))
    with pytest.raises(EncryptionKeyError, match=f"model group '{group}'.*does not hold"):
        await start_client(url, encryption_key=generate_key())
    with pytest.raises(EncryptionKeyError, match="ENCRYPTION_KEY is not set"):
        await start_client(url)
    with pytest.raises(EncryptionKeyError, match="32 random bytes"):
        await start_client(url, encryption_key="not-a-key")
    # The real process says so and exits, without a traceback.
    code, out = await asyncio.to_thread(
        _run_service,
        "serve",
        env={
            "DATABASE_URL": url,
            "MASTER_KEY": MASTER_KEY,
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": "0",
            "ENCRYPTION_KEY": generate_key(),
        },
    )
    assert code == 2, out
    assert "cannot start" in out and group in out and "Traceback" not in out


async def test_literal_needs_an_encryption_key_and_hints_must_match(sqlite_client: Client) -> None:
    """Without ENCRYPTION_KEY a literal is refused (400, the value not echoed); a redacted
    value that matches no stored secret is refused rather than stored as a key."""
    literal = _literal("nokey")
    for cfg, field in (
        ({"api_key": literal}, "models.config.api_key"),
        ({"api_base": f"https://u:{literal}@h/v1"}, "models.config.api_base"),
        ({"extra_headers": {"X-Credential": literal}}, "models.config.extra_headers.X-Credential"),
        ({"api_key": "****abcd"}, "models.config.api_key"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _create(sqlite_client, uid("grp"), [("openai/x", cfg)])
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, cfg
        assert field in (e.value.details() or ""), e.value.details()
        assert literal not in (e.value.details() or "")


@pytest.mark.parametrize(
    "cfg",
    [
        {"api_key": "os.environ/MASTER_KEY"},
        {"api_key": "os.environ/DATABASE_URL"},
        {"api_key": "os.environ/ENCRYPTION_KEY"},
        {"api_key": "os.environ/REDIS_URL"},
        {"api_key": "os.environ/HOME"},
        {"api_base": "os.environ/DATABASE_URL"},
        {"extra_headers": {"X-Leak": "os.environ/MASTER_KEY"}},
        {"aws_region_name": "os.environ/PATH"},
    ],
)
async def test_env_references_only_name_provider_credentials(
    sqlite_client: Client, cfg: dict[str, Any]
) -> None:
    """Issue 21 item 9: "os.environ/ANY" sent any variable of the process to any api_base."""
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await _create(sqlite_client, uid("grp"), [("openai/x", cfg)])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a provider credential" in (e.value.details() or "") or "setting of the gateway" in (
        e.value.details() or ""
    )


async def test_env_reference_rule_holds_at_call_time_and_allows_listed_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config stored before the rule ("os.environ/MASTER_KEY") is refused at call time: the
    upstream never sees the value. PROVIDER_ENV_NAMES widens the rule."""
    monkeypatch.setenv("MASTER_KEY", MASTER_KEY)
    monkeypatch.setenv("CORP_PROXY_CRED", "corp-cred-value")
    url = await fresh_database("sqlite", tmp_path)
    c = await start_client(url, provider_env_names="CORP_PROXY_CRED")
    try:
        async with FakeUpstream() as upstream:
            upstream.set_behavior("fine", content="ok")
            db = Database.open(url)
            try:
                old = uid("grp")
                await CatalogRepository(db).create_model_group(
                    old,
                    old,
                    "",
                    [
                        ModelSpec(
                            "openai/fine",
                            0,
                            {"api_base": upstream.base_url, "api_key": "os.environ/MASTER_KEY"},
                        )
                    ],
                    {},
                )
            finally:
                await db.dispose()
            listed = uid("grp")
            await _create(
                c,
                listed,
                [
                    (
                        "openai/fine",
                        {"api_base": upstream.base_url, "api_key": "os.environ/CORP_PROXY_CRED"},
                    )
                ],
            )
            team, key = await make_team(c, groups=[old, listed])
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await _call(c, team, key, old)
            assert "MASTER_KEY is a setting of the gateway" in (e.value.details() or "")
            assert not upstream.requests
            await _call(c, team, key, listed)
            assert [r.authorization for r in upstream.requests] == ["Bearer corp-cred-value"]
    finally:
        await stop_client(c)


async def test_team_key_cannot_tell_absent_groups_from_lacked_ones(sqlite_client: Client) -> None:
    """Issue 21 item 8: get, models and resolve answer a team key the same 403 for a group that
    exists but is not its own and for one that does not exist; the master key still gets 404."""
    c = sqlite_client
    lacked = uid("grp")
    await _create(c, lacked, [("simulator/fast", {})])
    team, key = await make_team(c)
    for name in (lacked, uid("absent")):
        calls = [
            c.groups.GetModelGroup(
                mg_pb.GetModelGroupRequest(group_name=name), metadata=bearer(key)
            ),
            c.groups.GetModelGroupModels(
                mg_pb.GetModelGroupModelsRequest(group_name=name), metadata=bearer(key)
            ),
            c.groups.ResolveModelGroup(
                mg_pb.ResolveModelGroupRequest(group_name=name, team_id=team), metadata=bearer(key)
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await call
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
            assert (
                e.value.details() == f"Team '{team}' does not have access to model group '{name}'"
            )
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await c.groups.GetModelGroup(
            mg_pb.GetModelGroupRequest(group_name=uid("absent")), metadata=admin()
        )
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_make_run_generates_the_encryption_key_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make run` (devrun) creates data/encryption_key, owner-only, and reuses it; the
    environment wins over the file."""
    from service.devrun import _encryption_key

    monkeypatch.delenv("ENCRYPTION_KEY", raising=False)
    first = _encryption_key(tmp_path)
    path = tmp_path / "encryption_key"
    assert path.read_text().strip() == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert _encryption_key(tmp_path) == first
    other = generate_key()
    monkeypatch.setenv("ENCRYPTION_KEY", other)
    assert _encryption_key(tmp_path) == other
