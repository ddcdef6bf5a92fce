"""Prometheus metrics (service/metrics.py) as a scraper sees them: GET /metrics of a real
service, parsed by prometheus_client's parser, moving by exactly what the calls did, with no
tenant data anywhere in the text."""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

import grpc
import pytest

from saas_llm.v1 import job_service_pb2 as job_pb
from service import metrics
from service.observe import CallObserver
from tests.conftest import Client, bearer, fresh_database, start_client, stop_client
from tests.flows import make_group, make_team, uid, user_msg
from tests.observability.scrape import Scrape, parse, scrape

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = ROOT / "build" / "tools" / "promtool"
PRICE = {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}


def _name(prefix: str) -> str:
    """A model name of its own, so that this test's series start at zero."""
    return f"simulator/{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def svc(tmp_path: Path) -> Client:
    c = await start_client(await fresh_database("sqlite", tmp_path))
    yield c  # type: ignore[misc]
    await stop_client(c)


async def _job(c: Client, team: str, key: str) -> str:
    r = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team, job_type="t"), metadata=bearer(key)
    )
    return str(r.job_id)


async def test_a_fallback_a_failure_and_a_stream_are_each_counted_once(svc: Client) -> None:
    c = svc
    down, up, broken, streamer = _name("down"), _name("up"), _name("broken"), _name("stream")
    # A string: a number in the group config arrives as a float (503.0), which the simulator
    # does not read as a status.
    fb = await make_group(c, [(down, {"fail_with": "503"}), (up, PRICE)])
    failing = await make_group(c, [(broken, {"fail_with": 500})])
    streaming = await make_group(c, [(streamer, {"response": "one two three four"})])
    team, key = await make_team(c, groups=[fb, failing, streaming])
    job = await _job(c, team, key)
    before = await scrape(c)

    answer = await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job, model_group=fb, messages=[user_msg("hi there")]),
        metadata=bearer(key),
    )
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job, model_group=failing, messages=[user_msg("hi")]),
            metadata=bearer(key),
        )
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    events = [
        e
        async for e in c.jobs.LlmCallStream(
            job_pb.LlmCallRequest(job_id=job, model_group=streaming, messages=[user_msg("hi")]),
            metadata=bearer(key),
        )
    ]
    after = await scrape(c)

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    calls = "gateway_llm_calls_total"
    assert moved(calls, model_group=fb, model=up, provider="simulator", outcome="fallback") == 1
    assert moved(calls, model_group=fb) == 1  # nothing else for that group
    assert moved(calls, model_group=failing, model=broken, outcome="failed") == 1
    assert moved(calls, model_group=failing) == 1
    assert moved(calls, model_group=streaming, model=streamer, outcome="success") == 1

    attempts = "gateway_llm_attempt_duration_seconds_count"
    assert moved(attempts, model=down, result="error") == 1
    assert moved(attempts, model=up, result="ok") == 1
    assert moved(attempts, model=broken, result="error") == 1
    errors = "gateway_llm_attempt_errors_total"
    assert moved(errors, model=down, provider="simulator", status="503") == 1
    assert moved(errors, model=broken, status="500") == 1

    # Tokens and cost of the fallback's answer, as recorded on the job.
    usage = answer.metadata
    tokens = "gateway_llm_tokens_total"
    assert moved(tokens, model=up, direction="input") == usage.prompt_tokens > 0
    assert moved(tokens, model=up, direction="output") == usage.completion_tokens > 0
    cost = moved("gateway_llm_cost_usd_total", model=up)
    assert cost == pytest.approx(usage.prompt_tokens * 1e-6 + usage.completion_tokens * 2e-6)
    assert moved("gateway_llm_call_duration_seconds_count", model_group=fb) == 1

    # The stream: one time to first token, as many chunks as the client received.
    deltas = [e for e in events if not e.finish_reason]
    assert deltas, events
    assert moved("gateway_llm_stream_chunks_total", model=streamer) == len(deltas)
    assert moved("gateway_llm_time_to_first_token_seconds_count", model=streamer) == 1
    assert moved("gateway_llm_time_to_first_token_seconds_count", model=up) == 0

    # RPCs by method and code: two LlmCall (one OK, one INTERNAL) and one stream.
    rpc = "gateway_rpc_duration_seconds_count"
    llm_call = "/saas_llm.v1.JobService/LlmCall"
    assert moved(rpc, method=llm_call, code="OK") == 1
    assert moved(rpc, method=llm_call, code="INTERNAL") == 1
    assert moved(rpc, method="/saas_llm.v1.JobService/LlmCallStream", code="OK") == 1


async def test_open_jobs_and_reserved_credits_follow_the_database(client: Client) -> None:
    c = client
    team, key = await make_team(c, credits=5)
    jobs = [await _job(c, team, key) for _ in range(3)]
    await c.app.sweep_once()
    s = await scrape(c)
    # A fresh database: these are the only jobs.
    assert s.value("gateway_jobs_open") == 3
    assert s.value("gateway_credits_reserved") == 3
    await c.jobs.CompleteJob(
        job_pb.CompleteJobRequest(job_id=jobs[0], status="completed"), metadata=bearer(key)
    )
    await c.app.sweep_once()
    s = await scrape(c)
    assert s.value("gateway_jobs_open") == 2
    assert s.value("gateway_credits_reserved") == 2


async def test_no_tenant_data_in_the_exposition(svc: Client) -> None:
    c = svc
    marker = "PROMPT-" + uuid.uuid4().hex
    group = await make_group(c, [(_name("ok"), {})])
    team, key = await make_team(c, groups=[group])
    job = await _job(c, team, key)
    await c.jobs.LlmCall(
        job_pb.LlmCallRequest(job_id=job, messages=[user_msg(marker)], purpose=marker[:20]),
        metadata=bearer(key),
    )
    async for _ in c.jobs.LlmCallStream(
        job_pb.LlmCallRequest(job_id=job, messages=[user_msg(marker)]), metadata=bearer(key)
    ):
        pass
    with pytest.raises(grpc.aio.AioRpcError):  # a refused key
        await c.jobs.CreateJob(
            job_pb.CreateJobRequest(team_id=team, job_type="t"), metadata=bearer(key + "x")
        )
    text = (await scrape(c)).text
    assert group in text  # the scrape saw the calls, so the next checks mean something
    for secret in (team, key, key[10:], job, marker, marker[:20]):
        assert secret not in text, secret
    # Label values come from bounded sets: no id-shaped value (uid() makes "<prefix>_<hex10>"
    # ids; model groups are configured by the operator and are the only such names allowed).
    ids = set(re.findall(r"\b[a-z]+_[0-9a-f]{10}\b", text))
    assert ids <= {group} | set(re.findall(r'model_group="([^"]+)"', text)), ids


async def test_the_exposition_parses_and_documents_every_metric(svc: Client) -> None:
    metrics.refused("rate_limit", "rpm")  # so that every family has a sample
    metrics.breaker_state(_name("breaker"), "closed")
    metrics.cache("parse-check", "miss")
    metrics.db_statement(0.001)
    s = await scrape(svc)
    ours = {name: kind for name, kind in s.families.items() if name.startswith("gateway_")}
    documented = set(re.findall(r"^(gateway_[a-z_]+)", metrics.__doc__ or "", re.MULTILINE))
    # Counters are listed with their _total suffix, which the parser strips from the family.
    assert {n.removesuffix("_total") for n in documented} == set(ours)
    assert ours["gateway_rpc_duration_seconds"] == "histogram"
    assert ours["gateway_llm_calls"] == "counter"
    assert ours["gateway_jobs_open"] == "gauge"
    assert ours["gateway_llm_breaker_state"] == "gauge"  # an Enum, one 0/1 series per state
    assert s.value("process_cpu_seconds_total") > 0  # the default collectors are there


@pytest.mark.skipif(not PROMTOOL.exists(), reason="make install fetches promtool")
async def test_promtool_accepts_the_exposition(svc: Client) -> None:
    s = await scrape(svc)
    r = subprocess.run(
        [str(PROMTOOL), "check", "metrics"], input=s.text, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_refusal_breaker_cache_and_database_api() -> None:
    """The hooks that rate limits, job limits, the breaker, the response cache and the storage
    executor call: each call moves its series by exactly one."""

    def now() -> Scrape:
        from prometheus_client import REGISTRY, generate_latest

        return parse(generate_latest(REGISTRY).decode())

    model, group = _name("breaker"), uid("grp")
    before = now()
    metrics.refused("job_limit", "calls")
    metrics.refused("rate_limit", "tpm")
    metrics.breaker_state(model, "open")
    metrics.cache(group, "hit")
    metrics.cache(group, "miss")
    metrics.cache(group, "hit")
    metrics.db_statement(0.0002)
    after = now()

    def moved(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert moved("gateway_refusals_total", kind="job_limit", limit="calls") == 1
    assert moved("gateway_refusals_total", kind="rate_limit", limit="tpm") == 1
    assert moved("gateway_refusals_total") == 2
    state = "gateway_llm_breaker_state"
    assert after.value(state, model=model, gateway_llm_breaker_state="open") == 1
    assert after.value(state, model=model, gateway_llm_breaker_state="closed") == 0
    assert moved("gateway_llm_cache_requests_total", model_group=group, result="hit") == 2
    assert moved("gateway_llm_cache_requests_total", model_group=group, result="miss") == 1
    assert moved("gateway_db_statement_duration_seconds_count") == 1


def test_a_cached_answer_is_its_own_outcome() -> None:
    """What the response cache (issue 16) reports through the observer port: outcome cached,
    with its tokens and no provider cost."""
    from prometheus_client import REGISTRY, generate_latest

    observer: CallObserver = metrics.MetricsObserver()
    model, group = _name("cached"), uid("grp")
    before = parse(generate_latest(REGISTRY).decode())
    observer.call(
        group, model, "cached", failed_attempts=0, prompt_tokens=7, completion_tokens=3,
        cost_usd=0.0, seconds=0.001, ttft_seconds=None, chunks=0,
    )  # fmt: skip
    after = parse(generate_latest(REGISTRY).decode())
    calls = "gateway_llm_calls_total"
    assert after.value(calls, model_group=group, outcome="cached") == 1
    assert after.value(calls, model_group=group) == 1
    assert after.value("gateway_llm_tokens_total", model=model, direction="input") == 7
    assert after.value("gateway_llm_cost_usd_total", model=model) == 0
    assert before.value(calls, model_group=group) == 0


async def test_metrics_off_counts_nothing_and_serves_nothing(tmp_path: Path) -> None:
    c = await start_client(await fresh_database("sqlite", tmp_path), metrics_enabled=False)
    try:
        assert c.app.metrics_server is None
        model = _name("quiet")
        group = await make_group(c, [(model, {})])
        team, key = await make_team(c, groups=[group])
        job = await _job(c, team, key)
        await c.jobs.LlmCall(
            job_pb.LlmCallRequest(job_id=job, messages=[user_msg("hi")]), metadata=bearer(key)
        )
        from prometheus_client import REGISTRY, generate_latest

        text = generate_latest(REGISTRY).decode()
        assert model not in text and group not in text
    finally:
        await stop_client(c)


def test_promtool_is_where_the_makefile_puts_it() -> None:
    """The promtool test above must not be skipped silently in CI."""
    import os

    if os.environ.get("CI") == "true":
        assert PROMTOOL.exists(), "make install should have fetched promtool"
    elif not PROMTOOL.exists():
        pytest.skip("promtool not fetched (make install does it)")
    assert shutil.which(str(PROMTOOL))
