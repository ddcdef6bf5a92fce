"""The typed Python client (clients/python, saas_litellm_client) against the real gateway: over REST
through Envoy, and over native gRPC to the service and through Envoy's port. The job flow, a
stream, a structured call (the response_format reaching the provider), each typed error, and the
retry and timeout rules (against a small HTTP server that answers like Envoy)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from aiohttp import web
from google.protobuf import json_format
from pydantic import BaseModel

from saas_litellm_client import (
    AuthenticationError,
    InsufficientCreditsError,
    InvalidRequestError,
    JobAlreadyCompletedError,
    JobNotFoundError,
    JobNotOpenError,
    LLMCallFailedError,
    ModelGroupAccessDeniedError,
    RateLimitedError,
    RequestTimeoutError,
    SaasLiteLLMClient,
    ServiceUnavailableError,
    StreamChunk,
    StructuredOutputError,
)
from saas_llm.v1 import common_pb2, job_service_pb2, job_service_pb2_grpc
from tests.clients.conftest import Team, envoy_target, grpc_target, new_team
from tests.rest.real_service import RestClient, RestService
from tests.support.procs import ROOT
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.envoy

TRANSPORTS = ["rest", "grpc", "grpc-via-envoy"]


def client_for(
    gateway: RestService, team: Team, transport: str, **kwargs: Any
) -> SaasLiteLLMClient:
    if transport == "rest":
        return SaasLiteLLMClient(gateway.base_url, team.team_id, team.key, **kwargs)
    target = grpc_target(gateway) if transport == "grpc" else envoy_target(gateway)
    return SaasLiteLLMClient(target, team.team_id, team.key, transport="grpc", **kwargs)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_job_flow_stream_and_reads(
    gateway: RestService, admin: RestClient, transport: str
) -> None:
    team = await new_team(admin, credits=5, models=[("simulator/words", {"tokens_per_second": 0})])
    async with client_for(gateway, team, transport) as client:
        job = await client.create_job("flow", metadata={"n": 1})
        answer = await client.llm_call(job.job_id, user("one two"), purpose="first")
        assert answer.content == "Simulated response to: one two"
        assert answer.metadata.model_group == team.group
        assert answer.metadata.tokens_used > 0

        chunks = [c async for c in client.llm_call_stream(job.job_id, user("three four"))]
        assert all(isinstance(c, StreamChunk) for c in chunks)
        text = "".join(c.content for c in chunks)
        assert text == "Simulated response to: three four"
        assert len([c for c in chunks if c.content]) > 1  # one chunk per token
        last = chunks[-1]
        assert (last.finish_reason, last.usage is not None, bool(last.call_id)) == (
            "stop",
            True,
            True,
        )

        balance = await client.get_balance()
        assert (balance.credits_reserved, balance.credits_remaining) == (1, 4)

        result = await client.complete_job(job.job_id, "completed")
        assert (result.credits_remaining, result.costs.total_calls) == (4, 2)
        again = await client.complete_job(job.job_id, "completed")  # idempotent
        assert again.credits_remaining == 4

        details = await client.get_job(job.job_id)
        assert details.status == "completed" and details.metadata == {"n": 1}
        assert [c.purpose for c in details.calls] == ["first", ""]
        assert details.error_message is None

        both = await client.create_and_call("one-shot", user("five"))
        assert (both.status, both.content, both.credits_remaining) == (
            "completed",
            "Simulated response to: five",
            3,
        )
        usage = await client.get_usage()
        assert usage.summary.total_jobs == 2
        assert usage.job_types["flow"].count == 1


@pytest.mark.parametrize("transport", ["rest", "grpc"])
async def test_create_job_retry_is_idempotent(
    gateway: RestService, admin: RestClient, transport: str
) -> None:
    """The request_id that makes create_job safe to retry: the same id returns the same job and
    reserves one credit."""
    team = await new_team(admin, credits=3)
    async with client_for(gateway, team, transport) as client:
        first = await client.create_job("retry", request_id="req-1")
        second = await client.create_job("retry", request_id="req-1")
        assert first.job_id == second.job_id
        assert (await client.get_balance()).credits_remaining == 2


class Person(BaseModel):
    name: str
    age: int
    email: str | None = None


@pytest.mark.parametrize("transport", ["rest", "grpc"])
async def test_structured_call_passes_a_strict_json_schema(
    gateway: RestService, admin: RestClient, transport: str
) -> None:
    async with FakeUpstream() as upstream:
        upstream.set_behavior("people", content='{"name": "Ada", "age": 36, "email": null}')
        upstream.set_behavior("broken-json", content='{"name": "Ada"}')
        team = await new_team(admin, models=[("openai/people", {"api_base": upstream.base_url})])
        async with client_for(gateway, team, transport) as client:
            job = await client.create_job("extract")
            person = await client.structured_call(job.job_id, user("Ada, 36"), Person)
            assert person == Person(name="Ada", age=36, email=None)
            sent = upstream.requests[-1].body["response_format"]
            assert sent["type"] == "json_schema"
            assert sent["json_schema"]["name"] == "Person"
            assert sent["json_schema"]["strict"] is True
            schema = sent["json_schema"]["schema"]
            assert schema["additionalProperties"] is False
            assert schema["required"] == ["name", "age", "email"]

            group = await admin.ok(
                "POST",
                "/api/model-groups/create",
                json={
                    "group_name": f"{team.group}-broken",
                    "models": [
                        {
                            "model_name": "openai/broken-json",
                            "priority": 0,
                            "config": {"api_base": upstream.base_url},
                        }
                    ],
                },
            )
            await admin.ok(
                "PUT",
                f"/api/teams/{team.team_id}/model-groups",
                json=[team.group, group["group_name"]],
            )
            with pytest.raises(StructuredOutputError) as caught:
                await client.structured_call(
                    job.job_id, user("x"), Person, model_group=group["group_name"]
                )
            assert caught.value.content == '{"name": "Ada"}'


@pytest.mark.parametrize("transport", ["rest", "grpc-via-envoy"])
async def test_typed_errors(gateway: RestService, admin: RestClient, transport: str) -> None:
    broke = await new_team(admin, credits=0)
    async with client_for(gateway, broke, transport) as client:
        with pytest.raises(InsufficientCreditsError) as insufficient:
            await client.create_job("x")
        assert insufficient.value.message == "Insufficient credits. Required: 1, Available: 0"
        assert insufficient.value.reason == "INSUFFICIENT_CREDITS"
        assert insufficient.value.http_status == (400 if transport == "rest" else None)

    team = await new_team(admin, credits=5)
    other = await new_team(admin)
    failing = await new_team(admin, models=[("simulator/down", {"fail_with": 500})])
    async with client_for(gateway, team, transport) as client:
        job = await client.create_job("errors")
        with pytest.raises(ModelGroupAccessDeniedError) as denied:
            await client.llm_call(job.job_id, user("x"), model_group=other.group)
        assert denied.value.message == (
            f"Team '{team.team_id}' does not have access to model group '{other.group}'"
        )
        with pytest.raises(JobNotFoundError):
            await client.get_job("00000000-0000-4000-8000-000000000000")
        with pytest.raises(InvalidRequestError):
            await client.llm_call(job.job_id, [])
        await client.complete_job(job.job_id, "completed")
        with pytest.raises(JobNotOpenError):
            await client.llm_call(job.job_id, user("late"))
        with pytest.raises(JobAlreadyCompletedError):
            await client.complete_job(job.job_id, "failed")
    async with client_for(gateway, failing, transport) as client:
        job = await client.create_job("fails")
        with pytest.raises(LLMCallFailedError) as failed:
            await client.llm_call(job.job_id, user("x"))
        assert failed.value.message.startswith("LLM call failed")
    bad_key = Team(team.team_id, "sk-" + "x" * 43, team.group)
    async with client_for(gateway, bad_key, transport) as client:
        with pytest.raises(AuthenticationError):
            await client.get_balance()


async def test_native_grpc_typed_content(gateway: RestService, admin: RestClient) -> None:
    """ChatMessage.text and .parts (no google.protobuf.Value) through Envoy's port; content and
    text together are refused."""
    team = await new_team(admin)
    auth = (("authorization", f"Bearer {team.key}"),)
    async with grpc.aio.insecure_channel(envoy_target(gateway)) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        job = await jobs.CreateJob(
            job_service_pb2.CreateJobRequest(team_id=team.team_id, job_type="typed"), metadata=auth
        )
        text = common_pb2.ChatMessage(role="user", text="plain text")
        answer = await jobs.LlmCall(
            job_service_pb2.LlmCallRequest(job_id=job.job_id, messages=[text]), metadata=auth
        )
        assert answer.response.content == "Simulated response to: plain text"
        parts = common_pb2.ChatMessage(
            role="user",
            parts=common_pb2.ContentParts(
                parts=[
                    common_pb2.ContentPart(text="two"),
                    common_pb2.ContentPart(
                        image_url=common_pb2.ImageUrl(url="data:image/png;base64,AA==")
                    ),
                    common_pb2.ContentPart(text="parts"),
                ]
            ),
        )
        answer = await jobs.LlmCall(
            job_service_pb2.LlmCallRequest(job_id=job.job_id, messages=[parts]), metadata=auth
        )
        assert answer.response.content == "Simulated response to: two parts"
        both = common_pb2.ChatMessage(role="user", text="a")
        json_format.ParseDict({"content": "b"}, both)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await jobs.LlmCall(
                job_service_pb2.LlmCallRequest(job_id=job.job_id, messages=[both]), metadata=auth
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------- retries, timeouts


class ScriptedGateway:
    """A real HTTP server answering like Envoy would, from a script of (status, body, delay)."""

    def __init__(self, script: list[tuple[int, dict[str, Any], float]]) -> None:
        self.script = script
        self.requests: list[tuple[str, str]] = []
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path))
        status, body, delay = self.script[min(len(self.requests), len(self.script)) - 1]
        await asyncio.sleep(delay)
        return web.json_response(body, status=status)

    async def __aenter__(self) -> ScriptedGateway:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def error_body(code: int, message: str, reason: str, **metadata: str) -> dict[str, Any]:
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "saas-llm.gateway",
        "metadata": metadata,
    }
    return {"code": code, "message": message, "details": [info]}


BALANCE = {
    "team_id": "t",
    "credits_allocated": 5,
    "credits_used": 0,
    "credits_reserved": 0,
    "credits_remaining": 5,
    "credit_limit": None,
    "auto_refill": False,
}
RATE_LIMITED = error_body(8, "Rate limit exceeded", "RATE_LIMITED", retry_after_seconds="0.05")
UNAVAILABLE = {"code": 14, "message": "no healthy upstream", "details": []}


async def test_rate_limited_reads_are_retried_after_retry_after() -> None:
    script = [(429, RATE_LIMITED, 0.0), (429, RATE_LIMITED, 0.0), (200, BALANCE, 0.0)]
    async with ScriptedGateway(script) as fake:
        async with SaasLiteLLMClient(fake.base_url, "t", "sk-x") as client:
            balance = await client.get_balance()
        assert balance.credits_remaining == 5
        assert fake.requests == [("GET", "/api/credits/teams/t/balance")] * 3
    async with ScriptedGateway([(429, RATE_LIMITED, 0.0)]) as fake:
        async with SaasLiteLLMClient(fake.base_url, "t", "sk-x", max_retries=0) as client:
            with pytest.raises(RateLimitedError) as caught:
                await client.get_balance()
        assert caught.value.retry_after == 0.05
        assert caught.value.http_status == 429


async def test_llm_calls_are_never_retried() -> None:
    fake = ScriptedGateway([(503, UNAVAILABLE, 0.0)])
    async with fake, SaasLiteLLMClient(fake.base_url, "t", "sk-x") as client:
        with pytest.raises(ServiceUnavailableError):
            await client.llm_call("job-1", user("x"))
        assert len(fake.requests) == 1
        with pytest.raises(ServiceUnavailableError):
            await client.complete_job("job-1")  # idempotent: retried twice
        assert len(fake.requests) == 1 + 3


async def test_timeout() -> None:
    fake = ScriptedGateway([(200, BALANCE, 1.0)])
    async with fake, SaasLiteLLMClient(fake.base_url, "t", "sk-x", timeout=0.1) as client:
        with pytest.raises(RequestTimeoutError):
            await client.get_balance()
        with pytest.raises(TimeoutError):  # also a builtin TimeoutError
            await client.get_balance()


def test_error_of_an_unknown_reason_falls_back_to_the_code() -> None:
    from saas_litellm_client._transport import rest_error

    err = rest_error(403, json.dumps(error_body(7, "no", "SOMETHING_NEW")).encode())
    assert type(err).__name__ == "PermissionDeniedError"
    assert (err.reason, err.code) == ("SOMETHING_NEW", 7)


async def test_readme_example_runs_as_printed(
    gateway: RestService, admin: RestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """clients/python/README.md's example, with only the base URL, team and key changed."""
    readme = (ROOT / "clients" / "python" / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.rstrip().endswith("asyncio.run(main())")
    async with FakeUpstream() as upstream:
        upstream.set_behavior("people", content='{"name": "Alice", "age": 30}')
        team = await new_team(admin, models=[("openai/people", {"api_base": upstream.base_url})])
        code = (
            code.replace('"http://localhost:8080"', repr(gateway.base_url))
            .replace('"acme-corp"', repr(team.team_id))
            .replace('"sk-..."', repr(team.key))
            .replace("asyncio.run(main())", "")
        )
        namespace: dict[str, Any] = {"__name__": "readme_example"}
        exec(compile(code, "clients/python/README.md", "exec"), namespace)
        await namespace["main"]()
    out = capsys.readouterr().out
    assert '{"name": "Alice", "age": 30}' in out
    assert out.rstrip().endswith("Credits remaining: 9")
