"""OpenAI's wire format, exactly as the official SDKs expect it: chat.completion and
chat.completion.chunk objects, the embeddings and models lists, and errors as
{"error": {"message", "type", "param", "code"}} with the HTTP status each SDK turns into its
exception class (400 BadRequestError, 401 AuthenticationError, 403 PermissionDeniedError, 404
NotFoundError, 429 RateLimitError, >= 500 InternalServerError)."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson

from saas_llm.v1.reasons import Reason
from service.domain.direct import ChatAnswer, ListedModel
from service.domain.errors import Code, DomainError
from service.providers.base import ChatResult, Choice, EmbeddingResult, TokenUsage

OWNER = "saas-llm-gateway"

_STATUS = {
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
    Code.INTERNAL: 500,
}
_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}
# OpenAI's own `code` strings where one exists; our reason (lower case) otherwise.
_CODE = {
    Reason.MODEL_NOT_FOUND: "model_not_found",
    Reason.BUDGET_EXCEEDED: "budget_exceeded",
    Reason.INVALID_API_KEY: "invalid_api_key",
    Reason.MISSING_API_KEY: "invalid_api_key",
    Reason.RATE_LIMITED: "rate_limit_exceeded",
}


def usage_json(u: TokenUsage) -> dict[str, int]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def _message(choice: ChatResult | Choice) -> dict[str, Any]:
    tool_calls = choice.tool_calls
    message: dict[str, Any] = {
        "role": "assistant",
        # OpenAI sends null content when the answer is only tool calls.
        "content": choice.content if choice.content or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def choices_of(r: ChatResult) -> list[ChatResult | Choice]:
    return [r, *r.more_choices]


def completion(answer: ChatAnswer) -> dict[str, Any]:
    r = answer.result
    return {
        "id": f"chatcmpl-{answer.call_id}",
        "object": "chat.completion",
        "created": answer.created,
        "model": answer.model,
        "choices": [
            {"index": i, "message": _message(c), "logprobs": None, "finish_reason": c.finish_reason}
            for i, c in enumerate(choices_of(r))
        ],
        "usage": usage_json(r.usage),
        "system_fingerprint": None,
    }


class ChunkWriter:
    """The `data: {...}` events of one streamed completion."""

    __slots__ = ("_head",)

    def __init__(self, call_id: str, created: int, model: str) -> None:
        # Every chunk starts with the same fields; each event appends its choices.
        self._head = (
            b'{"id":'
            + orjson.dumps(f"chatcmpl-{call_id}")
            + b',"object":"chat.completion.chunk","created":'
            + str(created).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"system_fingerprint":null,'
        )

    def _event(self, rest: bytes) -> bytes:
        return b"data: " + self._head + rest + b"}\n\n"

    def first(self) -> bytes:
        return self._event(
            b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            b'"logprobs":null,"finish_reason":null}]'
        )

    def delta(self, content: str, tool_calls: list[dict[str, Any]] | None) -> bytes:
        delta: dict[str, Any] = {"content": content} if content else {}
        if tool_calls:
            delta["tool_calls"] = tool_calls
        return self._event(
            b'"choices":[{"index":0,"delta":'
            + orjson.dumps(delta)
            + b',"logprobs":null,"finish_reason":null}]'
        )

    def finish(self, finish_reason: str) -> bytes:
        return self._event(
            b'"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":'
            + orjson.dumps(finish_reason)
            + b"}]"
        )

    def usage(self, usage: TokenUsage) -> bytes:
        return self._event(b'"choices":[],"usage":' + orjson.dumps(usage_json(usage)))


DONE = b"data: [DONE]\n\n"


def stream_error(message: str, code: int) -> bytes:
    """The event that ends a stream that failed after it started (the SDKs raise APIError)."""
    kind = "server_error" if code != 7 else "permission_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def models(listed: list[ListedModel]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": m.id, "object": "model", "created": m.created, "owned_by": OWNER} for m in listed
        ],
    }


def embeddings(model: str, result: EmbeddingResult, encoding: str) -> dict[str, Any]:
    """`encoding` "float" or "base64" (little-endian float32, what the OpenAI SDKs ask for by
    default and decode)."""
    data = []
    for i, vector in enumerate(result.vectors):
        value: Any = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    u = result.usage
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": u.prompt_tokens, "total_tokens": u.prompt_tokens},
    }


def error(exc: DomainError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, body, extra headers) of a domain error."""
    status = 502 if exc.reason == Reason.LLM_CALL_FAILED else _STATUS.get(exc.code, 500)
    kind = _TYPE.get(status, "api_error")
    code = _CODE.get(exc.reason, exc.reason.lower())
    if exc.reason == Reason.BUDGET_EXCEEDED:
        kind = "budget_exceeded"
    headers = {}
    retry = exc.metadata.get("retry_after_seconds")
    if status in (429, 503) and retry:
        headers["Retry-After"] = retry
    body = {
        "error": {
            "message": exc.message,
            "type": kind,
            "param": exc.metadata.get("field"),
            "code": code,
        }
    }
    return status, body, headers


def plain_error(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPE.get(status, "api_error"),
            "param": None,
            "code": code,
        }
    }
