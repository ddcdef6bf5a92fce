"""SaasLiteLLMClient: the typed async client of seed 004 ("Type-Safe Python Client").

    async with SaasLiteLLMClient(
        base_url="http://localhost:8080", team_id="acme-corp", virtual_key="sk-..."
    ) as client:
        job = await client.create_job("document_analysis")
        response = await client.llm_call(job_id=job.job_id, messages=[...])
        result = await client.complete_job(job.job_id, "completed")
        print(f"Credits remaining: {result.credits_remaining}")

Retries: only requests that cannot run twice are retried, after a transport failure, an
UNAVAILABLE answer, a rate limit (after its retry_after) or a create-and-call still in progress.
Those are the reads, complete_job (the gateway answers a repeated complete with the stored
summary and never charges twice) and the creates, which carry a `request_id` (the client makes one
when the caller gives none, so a retry returns the first job instead of making a second). llm_call
and the streams are never retried: each attempt would be a new, billed LLM call.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from saas_litellm_client import _operations as ops
from saas_litellm_client import errors
from saas_litellm_client._transport import JSONObject, RestTransport, Transport
from saas_litellm_client.models import (
    CompleteJobResult,
    CreateAndCallResult,
    CreditBalance,
    Job,
    JobDetails,
    LLMCallResponse,
    Messages,
    StreamChunk,
    TeamUsage,
)

ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")

_RETRYABLE = (
    errors.ServiceUnavailableError,
    errors.RateLimitedError,
    errors.RequestInProgressError,
)


def strict_json_schema(schema: Mapping[str, Any]) -> JSONObject:
    """A copy of a pydantic JSON schema as OpenAI's strict structured outputs require it: every
    object closed (`additionalProperties: false`) with all its properties required."""

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: fix(v) for k, v in node.items()}
            if out.get("type") == "object" and isinstance(out.get("properties"), dict):
                out["additionalProperties"] = False
                out["required"] = list(out["properties"])
            return out
        if isinstance(node, list):
            return [fix(item) for item in node]
        return node

    fixed: JSONObject = fix(dict(schema))
    return fixed


def _drop_none(values: Mapping[str, Any]) -> JSONObject:
    return {k: v for k, v in values.items() if v is not None}


class SaasLiteLLMClient:
    """Async client of one team. Use it as an async context manager (or call `close()`).

    base_url: the gateway's root URL ("http://localhost:8080"; the client adds /api/...). With
        transport="grpc", the gRPC target instead ("localhost:50051", or Envoy's port, which
        passes native gRPC through); a scheme, if given, is dropped.
    team_id: the team the key belongs to (used by create_job, get_balance, get_usage).
    virtual_key: the team's key ("sk-..."), sent as `Authorization: Bearer`.
    timeout: seconds for each unary request (and, over REST, between two chunks of a stream).
    max_retries: retries of the requests that may run again (see the module's doc).
    http_client: an httpx.AsyncClient to use (REST); the client then does not close it.
    """

    def __init__(
        self,
        base_url: str,
        team_id: str,
        virtual_key: str,
        *,
        timeout: float = 60.0,
        max_retries: int = 2,
        transport: Literal["rest", "grpc"] = "rest",
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url
        self.team_id = team_id
        self.timeout = timeout
        self.max_retries = max_retries
        headers = {"Authorization": f"Bearer {virtual_key}"}
        self._transport: Transport
        if transport == "grpc":
            from saas_litellm_client._grpc import GrpcTransport

            self._transport = GrpcTransport(base_url.split("://", 1)[-1].rstrip("/"), headers)
        else:
            self._transport = RestTransport(base_url, headers, http_client)

    async def __aenter__(self) -> SaasLiteLLMClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.aclose()

    # ------------------------------------------------------------------ plumbing

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        for n in range(self.max_retries + 1):
            try:
                return await attempt()
            except _RETRYABLE as exc:
                if n == self.max_retries:
                    raise
                delay = min(8.0, 0.25 * 2**n) * (0.5 + random.random() / 2)
                if isinstance(exc, errors.RateLimitedError) and exc.retry_after is not None:
                    delay = exc.retry_after
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _call(
        self,
        op: ops.Operation,
        request: JSONObject,
        *,
        retry: bool,
        timeout: float | None = None,
    ) -> JSONObject:
        seconds = self.timeout if timeout is None else timeout

        async def attempt() -> JSONObject:
            return await self._transport.call(op, request, seconds)

        return await (self._retrying(attempt) if retry else attempt())

    async def _stream(
        self, op: ops.Operation, request: JSONObject, timeout: float | None
    ) -> AsyncIterator[StreamChunk]:
        async for event in self._transport.stream(op, request, timeout or self.timeout):
            chunk = StreamChunk.model_validate(event)
            if chunk.error is not None:
                raise errors.StreamError(chunk.error.message, code=chunk.error.code)
            yield chunk

    @staticmethod
    def _call_fields(
        messages: Messages,
        model_group: str | None,
        purpose: str | None,
        params: Mapping[str, Any],
    ) -> JSONObject:
        return _drop_none(
            {
                "messages": [dict(m) for m in messages],
                "model_group": model_group,
                "purpose": purpose,
                **params,
            }
        )

    # ------------------------------------------------------------------ jobs

    async def create_job(
        self,
        job_type: str,
        *,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
    ) -> Job:
        """Create a job for the client's team (reserves 1 credit; InsufficientCreditsError when
        none is left). `request_id` (default: a new UUID) makes retries safe."""
        request = _drop_none(
            {
                "team_id": self.team_id,
                "job_type": job_type,
                "user_id": user_id,
                "metadata": dict(metadata) if metadata is not None else None,
                "request_id": request_id or str(uuid.uuid4()),
            }
        )
        return Job.model_validate(await self._call(ops.CREATE_JOB, request, retry=True))

    async def llm_call(
        self,
        job_id: str,
        messages: Messages,
        *,
        model_group: str | None = None,
        purpose: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> LLMCallResponse:
        """One LLM call within the job. `params` pass through to the provider: temperature,
        max_tokens, top_p, stop, seed, user, tools, tool_choice, response_format."""
        request = {"job_id": job_id, **self._call_fields(messages, model_group, purpose, params)}
        answer = await self._call(ops.LLM_CALL, request, retry=False, timeout=timeout)
        return LLMCallResponse.model_validate(answer)

    async def llm_call_stream(
        self,
        job_id: str,
        messages: Messages,
        *,
        model_group: str | None = None,
        purpose: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> AsyncIterator[StreamChunk]:
        """The same call, streamed: `async for chunk in client.llm_call_stream(...)`, one chunk
        per upstream delta (`chunk.content`); the last carries finish_reason, usage and call_id.
        An error after the first chunk raises StreamError."""
        request = {"job_id": job_id, **self._call_fields(messages, model_group, purpose, params)}
        async for chunk in self._stream(ops.LLM_CALL_STREAM, request, timeout):
            yield chunk

    async def structured_call(
        self,
        job_id: str,
        messages: Messages,
        response_model: type[ModelT],
        *,
        model_group: str | None = None,
        purpose: str | None = None,
        strict: bool = True,
        timeout: float | None = None,
        **params: Any,
    ) -> ModelT:
        """An llm_call whose answer is an instance of `response_model`, asked for with OpenAI
        structured outputs (`response_format` {"type": "json_schema"} from the model's JSON
        schema, strict by default) and validated by pydantic. StructuredOutputError when the
        answer does not validate."""
        schema = response_model.model_json_schema()
        response_format = {
            "type": "json_schema",
            "json_schema": {
                "name": response_model.__name__,
                "schema": strict_json_schema(schema) if strict else schema,
                "strict": strict,
            },
        }
        answer = await self.llm_call(
            job_id,
            messages,
            model_group=model_group,
            purpose=purpose,
            timeout=timeout,
            response_format=response_format,
            **params,
        )
        try:
            return response_model.model_validate_json(answer.content)
        except ValidationError as exc:
            raise errors.StructuredOutputError(
                f"the answer is not a valid {response_model.__name__}: {exc}",
                content=answer.content,
            ) from exc

    async def complete_job(
        self,
        job_id: str,
        status: Literal["completed", "failed"] = "completed",
        *,
        metadata: Mapping[str, Any] | None = None,
        error_message: str | None = None,
    ) -> CompleteJobResult:
        """End the job: "completed" charges its credit unless a call failed, "failed" releases
        it. Safe to repeat with the same status (the stored summary comes back)."""
        request = _drop_none(
            {
                "job_id": job_id,
                "status": status,
                "metadata": dict(metadata) if metadata is not None else None,
                "error_message": error_message,
            }
        )
        answer = await self._call(ops.COMPLETE_JOB, request, retry=True)
        return CompleteJobResult.model_validate(answer)

    async def get_job(self, job_id: str) -> JobDetails:
        """The job with its costs and calls."""
        answer = await self._call(ops.GET_JOB, {"job_id": job_id}, retry=True)
        return JobDetails.model_validate(answer)

    async def create_and_call(
        self,
        job_type: str,
        messages: Messages,
        *,
        model_group: str | None = None,
        purpose: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> CreateAndCallResult:
        """Create a job, make one call and complete the job in one request. Retried safely
        with its `request_id` (default: a new UUID): a retry returns the first result."""
        request = {
            "team_id": self.team_id,
            "job_type": job_type,
            **_drop_none(
                {
                    "user_id": user_id,
                    "metadata": dict(metadata) if metadata is not None else None,
                    "request_id": request_id or str(uuid.uuid4()),
                }
            ),
            **self._call_fields(messages, model_group, purpose, params),
        }
        answer = await self._call(ops.CREATE_AND_CALL, request, retry=True, timeout=timeout)
        return CreateAndCallResult.model_validate(answer)

    async def create_and_call_stream(
        self,
        job_type: str,
        messages: Messages,
        *,
        model_group: str | None = None,
        purpose: str | None = None,
        user_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> AsyncIterator[StreamChunk]:
        """create_and_call, streamed: the first chunk carries job_id, the last the usage and the
        completion summary (`costs`)."""
        request = {
            "team_id": self.team_id,
            "job_type": job_type,
            **_drop_none(
                {
                    "user_id": user_id,
                    "metadata": dict(metadata) if metadata is not None else None,
                    "request_id": request_id,
                }
            ),
            **self._call_fields(messages, model_group, purpose, params),
        }
        async for chunk in self._stream(ops.CREATE_AND_CALL_STREAM, request, timeout):
            yield chunk

    # ------------------------------------------------------------------ credits and usage

    async def get_balance(self) -> CreditBalance:
        """The team's credits: allocated, used, reserved by open jobs, remaining."""
        answer = await self._call(ops.GET_BALANCE, {"team_id": self.team_id}, retry=True)
        return CreditBalance.model_validate(answer)

    async def get_usage(self, period: str | None = None) -> TeamUsage:
        """The team's usage in one UTC month, "YYYY-MM" (default: the current month)."""
        month = period or datetime.now(timezone.utc).strftime("%Y-%m")  # noqa: UP017
        request = {"team_id": self.team_id, "period": month}
        return TeamUsage.model_validate(await self._call(ops.GET_TEAM_USAGE, request, retry=True))
