"""A provider is untrusted input (issue 21, items 4, 12-17): an answer of the wrong types, with
usage out of range, oversize, holding NUL, or an error that echoes the key or the prompt. The one
rule (service/domain/answers.py): an answer that fails the checks is a failed attempt: the next
model is tried, nothing is charged for it, the attempt is recorded, and every read afterwards
works. Real gRPC server, fake upstream over real HTTP, SQLite and PostgreSQL, ledger audited."""

from __future__ import annotations

import base64
import secrets
from typing import Any

import grpc
import orjson
import pytest
from sqlalchemy import select

from saas_llm.v1 import job_service_pb2 as job_pb
from saas_llm.v1 import organization_service_pb2 as org_pb
from saas_llm.v1 import team_service_pb2 as team_pb
from service.audit import audit
from service.domain.answers import MAX_ANSWER_CHARS
from service.storage.schema import jobs, llm_calls
from tests.api.test_tenancy import error_info
from tests.conftest import Client, admin, bearer
from tests.flows import make_group, make_team, uid, user_msg
from tests.support.upstream import FakeUpstream

INT32_MAX = 2**31 - 1
PERIOD_OF = "%Y-%m"


def _deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


# name -> Behavior fields of an answer that must fail the attempt (unary calls).
HOSTILE_ANSWERS: dict[str, dict[str, Any]] = {
    # 12: usage of 2^31 or more in one answer.
    "prompt_tokens_2_31": {"prompt_tokens": 2**31},
    "completion_tokens_2_40": {"completion_tokens": 2**40},
    # 16: negative usage.
    "negative_usage": {"prompt_tokens": -1_000_005},
    # 14: wrong field types.
    "content_list": {"message_override": {"content": [1, 2]}},
    "content_number": {"message_override": {"content": 7}},
    "content_object": {"message_override": {"content": {"a": 1}}},
    "finish_reason_number": {"finish_reason": 7},
    "tool_calls_string": {"message_override": {"tool_calls": "abc"}},
    "tool_calls_too_deep": {"message_override": {"tool_calls": [{"id": "c", "x": _deep(40)}]}},
    # 15: oversize (over MAX_ANSWER_CHARS; the 16-64 MiB answers further down).
    "oversize": {"content": "x" * (MAX_ANSWER_CHARS + 1)},
    # 4: NUL in the answer (PostgreSQL cannot store it).
    "nul_content": {"content": "before\x00after"},
}


async def _job(c: Client, team_id: str, key: str) -> str:
    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team_id, job_type="hostile"), metadata=bearer(key)
    )
    return job.job_id


async def _calls(c: Client, job_id: str) -> list[dict[str, Any]]:
    async with c.app.db.tx() as conn:
        rows = (await conn.execute(select(llm_calls).where(llm_calls.c.job_id == job_id))).all()
    return [dict(r._mapping) for r in rows]


async def _reads_work(c: Client, team_id: str, key: str, org_id: str, job_id: str) -> None:
    """Every read that shows the job and its tokens answers (the issue: 500 forever after)."""
    await c.jobs.ListTeamJobs(job_pb.ListTeamJobsRequest(team_id=team_id), metadata=bearer(key))
    job = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job_id), metadata=bearer(key))
    month = job.created_at.ToDatetime().strftime(PERIOD_OF)
    await c.teams.GetTeamUsage(
        team_pb.GetTeamUsageRequest(team_id=team_id, period=month), metadata=bearer(key)
    )
    await c.orgs.GetOrganizationUsage(
        org_pb.GetOrganizationUsageRequest(organization_id=org_id, period=month),
        metadata=admin(),
    )


async def _assert_ledger_ok(c: Client) -> None:
    report = await audit(c.app.db)
    assert report.ok, report.violations


async def test_hostile_answer_falls_back_and_charges_only_the_good_answer(
    client: Client, upstream: FakeUpstream
) -> None:
    """Hostile model first, good model second: the good answer is returned and charged, the
    hostile attempt is recorded with its reason."""
    c = client
    upstream.set_behavior("good", content="good answer", prompt_tokens=3, completion_tokens=2)
    for name, fields in HOSTILE_ANSWERS.items():
        upstream.set_behavior(name, **fields)
        group = await make_group(
            c,
            [
                (f"openai/{name}", {"api_base": upstream.base_url}),
                ("openai/good", {"api_base": upstream.base_url}),
            ],
        )
        team_id, key = await make_team(c, credits=5, groups=[group])
        job_id = await _job(c, team_id, key)
        r = await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg("hi")]), metadata=bearer(key)
        )
        assert (r.response.content, r.metadata.tokens_used) == ("good answer", 5), name
        (call,) = await _calls(c, job_id)
        assert call["status"] == "success", name
        assert (call["prompt_tokens"], call["completion_tokens"]) == (3, 2), name
        first, second = call["attempts"]
        assert first["error"].startswith("Provider "), (name, first)
        assert second["error"] is None, name
        done = await c.jobs.CompleteJob(
            job_pb.CompleteJobRequest(job_id=job_id, status="completed"), metadata=bearer(key)
        )
        assert done.costs.credit_applied, name
    await _assert_ledger_ok(c)


async def test_hostile_answer_alone_is_a_failed_call_that_charges_nothing(
    client: Client, upstream: FakeUpstream
) -> None:
    c = client
    org_id = uid("org")
    await c.orgs.CreateOrganization(
        org_pb.CreateOrganizationRequest(organization_id=org_id, name="Org"), metadata=admin()
    )
    for name, fields in HOSTILE_ANSWERS.items():
        upstream.set_behavior(name, **fields)
        group = await make_group(c, [(f"openai/{name}", {"api_base": upstream.base_url})])
        team_id, key = await make_team(c, credits=5, groups=[group], org=org_id)
        job_id = await _job(c, team_id, key)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await c.jobs.LlmCall(
                job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg("hi")]),
                metadata=bearer(key),
            )
        assert e.value.code() == grpc.StatusCode.INTERNAL, name
        assert error_info(e.value).reason == "LLM_CALL_FAILED", name
        assert "LLM call failed: Provider " in e.value.details(), name
        assert "Sent message larger" not in e.value.details()
        (call,) = await _calls(c, job_id)
        assert call["status"] == "failed", name
        assert (call["prompt_tokens"], call["completion_tokens"]) == (0, 0), name
        assert call["cost_usd"] == 0, name
        await _reads_work(c, team_id, key, org_id, job_id)
        done = await c.jobs.CompleteJob(
            job_pb.CompleteJobRequest(job_id=job_id, status="completed"), metadata=bearer(key)
        )
        assert not done.costs.credit_applied, name
        assert (done.costs.total_calls, done.costs.failed_calls) == (1, 1), name
    await _assert_ledger_ok(c)


async def test_create_and_call_never_stores_a_hostile_answer(
    client: Client, upstream: FakeUpstream
) -> None:
    """A 20 MB answer and one holding NUL (which PostgreSQL cannot store): the create-and-call
    fails cleanly, the job ends failed (never stuck in_progress), nothing is stored or charged,
    and the retry with the same request_id gets the same failure."""
    c = client
    upstream.set_behavior("huge", content="y" * 20_000_000)
    upstream.set_behavior("nul", content="a\x00b")
    for model in ("huge", "nul"):
        group = await make_group(c, [(f"openai/{model}", {"api_base": upstream.base_url})])
        team_id, key = await make_team(c, credits=5, groups=[group])
        request = job_pb.CreateAndCallRequest(
            team_id=team_id,
            job_type="cc",
            request_id=uid("rid"),
            messages=[user_msg("hi")],
        )
        for _attempt in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await c.jobs.CreateAndCall(request, metadata=bearer(key))
            assert e.value.code() == grpc.StatusCode.INTERNAL, model
            assert error_info(e.value).reason == "LLM_CALL_FAILED", model
        async with c.app.db.tx() as conn:
            row = (
                await conn.execute(
                    select(jobs.c.status, jobs.c.replay_response).where(jobs.c.team_id == team_id)
                )
            ).one()
        assert (row._mapping["status"], row._mapping["replay_response"]) == ("failed", None), model
    await _assert_ledger_ok(c)


async def test_a_month_of_tokens_past_int32_saturates(
    client: Client, upstream: FakeUpstream
) -> None:
    """Normal calls of 300M tokens each: one job and one month pass 2,147,483,647 tokens. Job,
    team and organization reports answer with the documented saturation instead of a 500 (and
    PostgreSQL's int4 job total does not overflow)."""
    c = client
    upstream.set_behavior("big", prompt_tokens=150_000_000, completion_tokens=150_000_000)
    group = await make_group(c, [("openai/big", {"api_base": upstream.base_url})])
    org_id = uid("org")
    team_id, key = await make_team(c, credits=5, groups=[group], org=org_id)
    job_id = await _job(c, team_id, key)
    for _ in range(8):
        r = await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg("hi")]), metadata=bearer(key)
        )
        assert r.metadata.tokens_used == 300_000_000
    got = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job_id), metadata=bearer(key))
    assert got.costs.total_tokens == INT32_MAX
    assert [call.tokens for call in got.calls] == [300_000_000] * 8
    done = await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=job_id, status="completed"), metadata=bearer(key)
    )
    assert done.costs.credit_applied and done.costs.total_tokens == INT32_MAX
    month = got.created_at.ToDatetime().strftime(PERIOD_OF)
    team = await c.teams.GetTeamUsage(
        team_pb.GetTeamUsageRequest(team_id=team_id, period=month), metadata=bearer(key)
    )
    assert team.summary.total_tokens == INT32_MAX
    org = await c.orgs.GetOrganizationUsage(
        org_pb.GetOrganizationUsageRequest(organization_id=org_id, period=month),
        metadata=admin(),
    )
    assert org.summary.total_tokens == INT32_MAX
    await _assert_ledger_ok(c)


async def _stream(
    c: Client, job_id: str, key: str, text: str = "hi"
) -> list[job_pb.LlmCallStreamResponse]:
    return [
        m
        async for m in c.jobs.LlmCallStream(
            job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg(text)]), metadata=bearer(key)
        )
    ]


# name -> Behavior fields of a stream that turns hostile after its first content chunk.
HOSTILE_STREAMS: dict[str, dict[str, Any]] = {
    "usage_2_31": {"stream_chunks": ["a", "b"], "prompt_tokens": 2**31},
    "negative_usage": {"stream_chunks": ["a", "b"], "completion_tokens": -5},
    "finish_reason_number": {"stream_chunks": ["a", "b"], "finish_reason": 7},
    "tool_calls_string": {"stream_deltas": [{"content": "a"}, {"tool_calls": "abc"}]},
    "content_list": {"stream_deltas": [{"content": "a"}, {"content": [1, 2]}]},
    "nul": {"stream_chunks": ["a", "b\x00c"]},
    "oversize": {"stream_chunks": ["a"] + ["x" * 1_000_000] * 3},
}


async def test_stream_turning_hostile_ends_as_a_recorded_failed_call(
    client: Client, upstream: FakeUpstream
) -> None:
    c = client
    for name, fields in HOSTILE_STREAMS.items():
        upstream.set_behavior(name, **fields)
        group = await make_group(c, [(f"openai/{name}", {"api_base": upstream.base_url})])
        team_id, key = await make_team(c, credits=5, groups=[group])
        job_id = await _job(c, team_id, key)
        events = await _stream(c, job_id, key)
        assert events[0].content == "a", name
        last = events[-1]
        assert last.finish_reason == "error", (name, last)
        assert last.error.message.startswith("LLM call failed: Provider "), (name, last)
        (call,) = await _calls(c, job_id)
        assert call["status"] == "failed", name
        assert call["call_id"] == last.call_id, name
        assert 0 <= call["prompt_tokens"] < 2**31 and call["completion_tokens"] >= 0, name
        done = await c.jobs.CompleteJob(
            job_pb.CompleteJobRequest(job_id=job_id, status="completed"), metadata=bearer(key)
        )
        assert not done.costs.credit_applied, name
    await _assert_ledger_ok(c)


async def test_stream_hostile_first_chunk_falls_back(
    client: Client, upstream: FakeUpstream
) -> None:
    c = client
    upstream.set_behavior("bad", stream_deltas=[{"content": {"a": 1}}])
    upstream.set_behavior("good", stream_chunks=["fine"])
    group = await make_group(
        c,
        [
            ("openai/bad", {"api_base": upstream.base_url}),
            ("openai/good", {"api_base": upstream.base_url}),
        ],
    )
    team_id, key = await make_team(c, credits=5, groups=[group])
    job_id = await _job(c, team_id, key)
    events = await _stream(c, job_id, key)
    assert [e.content for e in events if e.content] == ["fine"]
    assert events[-1].finish_reason == "stop"
    (call,) = await _calls(c, job_id)
    assert call["status"] == "success"
    assert call["attempts"][0]["error"].startswith("Provider sent an invalid answer")
    await _assert_ledger_ok(c)


def _key() -> str:
    return "sk-proj-" + secrets.token_urlsafe(36)


async def test_error_echoing_the_key_or_the_prompt_is_not_kept(
    client: Client, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream error quoting the key (exact, one character short, base64) and the prompt:
    neither the answer, the call record nor its attempts hold any of it (item 17)."""
    c = client
    key = _key()
    monkeypatch.setenv("HOSTILE_UPSTREAM_API_KEY", key)
    prompt = "Summarize the confidential merger memo for Project Falcon please"
    echo = ("key", "key_short", "key_base64", "prompt")
    upstream.set_behavior("echo500", status=500, error_echo=echo)
    upstream.set_behavior("echo400", status=400, error_echo=echo)
    upstream.set_behavior(
        "echo_stream",
        stream_chunks=["a"],
        stream_error={"code": 500, "message": f"oops {key[:-1]} while reading '{prompt}'"},
    )
    secrets_seen = [key, key[:-1], base64.b64encode(key.encode()).decode(), prompt]
    fragments = [prompt[i : i + 12] for i in range(0, len(prompt) - 12, 6)]
    config = {"api_base": upstream.base_url, "api_key": "os.environ/HOSTILE_UPSTREAM_API_KEY"}
    for model in ("echo500", "echo400", "echo_stream"):
        group = await make_group(c, [(f"openai/{model}", config)])
        team_id, vkey = await make_team(c, credits=5, groups=[group])
        job_id = await _job(c, team_id, vkey)
        if model == "echo_stream":
            events = await _stream(c, job_id, vkey, prompt)
            answer = events[-1].error.message
        else:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await c.jobs.LlmCall(
                    job_pb.LlmCallRequest(job_id=job_id, messages=[user_msg(prompt)]),
                    metadata=bearer(vkey),
                )
            answer = e.value.details() + str(dict(error_info(e.value).metadata))
        assert upstream.requests[-1].authorization == f"Bearer {key}"
        (call,) = await _calls(c, job_id)
        stored = [answer, call["error"], orjson.dumps(call["attempts"]).decode()]
        assert "[redacted]" in call["error"], (model, call["error"])
        for text in stored:
            for secret in secrets_seen + fragments:
                assert secret not in text, (model, secret, text)
        job = await c.jobs.GetJob(job_pb.GetJobRequest(job_id=job_id), metadata=bearer(vkey))
        assert job.calls[0].error.string_value == call["error"]
    await _assert_ledger_ok(c)
