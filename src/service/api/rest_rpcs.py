"""The job flow's REST paths, answered by the service's own HTTP handler exactly as Envoy's
gRPC-JSON transcoder answers them.

    POST /api/jobs/create                   JobService/CreateJob
    POST /api/jobs/{job_id}/llm-call        JobService/LlmCall
    POST /api/jobs/{job_id}/llm-call-stream JobService/LlmCallStream (Server-Sent Events)
    POST /api/jobs/{job_id}/complete        JobService/CompleteJob
    POST /api/jobs/create-and-call          JobService/CreateAndCall
    POST /api/jobs/create-and-call-stream   JobService/CreateAndCallStream (Server-Sent Events)

Why (docs/decisions.md, "Issue 20"): through the transcoder every REST request is decoded from
JSON by Envoy, re-encoded as HTTP/2 gRPC, framed by grpc.aio and encoded back, which costs more
CPU than the call's own work; the same request as plain HTTP/1.1 to this handler skips Envoy's
transcoding and grpc.aio's HTTP/2. The contract stays the proto: each path is the RPC's
`google.api.http` rule (read from the descriptor), the body is parsed into the RPC's request
message with the proto3 JSON mapping (unknown fields ignored, null as the default, as the
transcoder is configured), the path variables bound the same way and checked by the same
PathBindings rule, the same servicer method runs, and the answer is printed with the
transcoder's print options (field names as in the proto, zero values printed). Errors are the
transcoder's {"code", "message", "details"} body with its HTTP status; a stream is one
`data: {json}` event per message, an error before its first message a JSON error answer, an error
after it the end of the stream. Native gRPC and every other REST path go through the transcoder
as before; tests/rest/test_rest_rpcs.py sends the same
requests both ways and compares the answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from saas_llm.v1 import job_service_pb2
from service.api.errors import DOMAIN
from service.api.path_bindings import HTTP_RULE, PathBindings, Route
from service.domain.errors import DomainError, InvalidArgument
from service.domain.principal import Principal

_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream"}
log = logging.getLogger("service.access")

# The transcoder's gRPC status -> HTTP status (Envoy's Grpc::Utility::grpcToHttpStatus).
HTTP_STATUS = {
    0: 200,
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}

# Envoy's JSON parser refuses deeper documents; the servicer's own validation refuses anything
# past MAX_JSON_DEPTH long before this.
_MAX_PARSE_DEPTH = 100
# Well-known types (Struct, Timestamp, ...) print as JSON values of their own.
_WKT = "google.protobuf"
_FLOATING = (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT)
_JSON_VALUES = frozenset(
    {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}
)


class _NoDeadline:
    """The servicer context of a REST request: the transcoded unary route sends no grpc-timeout
    either (envoy.yaml), so the RPC has no deadline of its own."""

    __slots__ = ()

    def time_remaining(self) -> None:
        return None


NO_DEADLINE: Any = _NoDeadline()


@dataclass(frozen=True, slots=True)
class RestRpc:
    """One RPC served on its REST path by the HTTP handler."""

    method: str  # "/saas_llm.v1.JobService/LlmCall"
    path: str  # its google.api.http template, "/api/jobs/{job_id}/llm-call"
    request_type: type[Message]
    # The servicer's method: a coroutine, or an async iterator of messages for a stream.
    call: Callable[[Any, Any], Any]
    route: Route | None  # the path variables (None when there are none)
    streaming: bool  # server streaming: Server-Sent Events, as the transcoder sends them


def rest_rpc(servicer: object, service: Any, name: str, route: Route | None) -> RestRpc:
    """The RestRpc of `service` (a ServiceDescriptor) method `name`, served by `servicer`'s
    method of that name. Only `post` rules with `body: "*"` are supported."""
    method = service.methods_by_name[name]
    rule = method.GetOptions().Extensions[HTTP_RULE]
    if rule.WhichOneof("pattern") != "post" or rule.body != "*":
        raise ValueError(f"{name}: only POST with body '*' is served over plain HTTP")
    request_type: type[Message] = GetMessageClass(method.input_type)
    return RestRpc(
        method=f"/{service.full_name}/{name}",
        path=rule.post,
        request_type=request_type,
        call=getattr(servicer, name),
        route=route,
        streaming=method.server_streaming,
    )


class BodyError(InvalidArgument):
    """A body that is not the RPC's message in JSON. The transcoder refuses it itself, with no
    ErrorInfo (`"details": []`), before any service sees it: the same answer here."""

    http_status = 400


class BodyTooLarge(BodyError):
    """Over the handler's body limit: Envoy refuses such a body first (its 1 MiB buffer limit,
    413 with the same body); this answers a client that reached the handler's port directly."""

    http_status = 413


def status_body(exc: DomainError) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of a domain error, as `convert_grpc_status` prints it."""
    code = int(exc.code)
    if isinstance(exc, BodyError):
        return exc.http_status, {"code": code, "message": exc.message, "details": []}
    detail = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": str(exc.reason),
        "domain": DOMAIN,
        "metadata": exc.metadata,
    }
    return HTTP_STATUS.get(code, 500), {"code": code, "message": exc.message, "details": [detail]}


def internal_body(rid: str) -> tuple[int, dict[str, Any]]:
    """An unexpected error: INTERNAL with the request id, as the interceptor answers it
    (api/errors.py internal)."""
    return status_body(
        DomainError(f"Internal error (request id {rid})", metadata={"request_id": rid})
    )


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """The HTTP handler's JSON answers (the OpenAI paths' too)."""
    return web.Response(body=orjson.dumps(body), status=status, content_type=_JSON, headers=headers)


def _parse(rpc: RestRpc, raw_path: str, body: bytes) -> Message:
    """The request message: path variables first, then the body over them (as the
    transcoder builds it), then the path-wins check."""
    request = rpc.request_type()
    bound = rpc.route.bound(raw_path) if rpc.route is not None else None
    for name, value in (bound or {}).items():
        setattr(request, name, value)
    if body.strip():
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BodyError("The request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BodyError("The request body must be a JSON object")
        try:
            json_format.ParseDict(
                data, request, ignore_unknown_fields=True, max_recursion_depth=_MAX_PARSE_DEPTH
            )
        except (json_format.ParseError, ValueError, TypeError, RecursionError):
            # The parser's text quotes the client's values: only say what is wrong in general.
            raise BodyError(
                "The request body does not match the method's message: a field has a value of "
                "the wrong type, or the body nests values too deeply"
            ) from None
    if rpc.route is not None:
        rpc.route.check_bound(bound, request)
    return request


def print_message(message: Message) -> dict[str, Any]:
    """The message as the transcoder prints it: proto field names, zero values printed, and the
    fields in the order the .proto declares them (json_format lists set fields by number)."""
    printed = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    return _in_declared_order(message.DESCRIPTOR, printed)


# How to print each field of a message: (name, kind, the field's message type). Built once per
# message type, so that the per-call path does not walk descriptors.
_PLAIN, _FLOAT, _JSON_VALUE, _MESSAGE = range(4)
_Plan = tuple[tuple[str, int, Any], ...]
_PLANS: dict[str, _Plan] = {}


def _plan(descriptor: Any) -> _Plan:
    plan = _PLANS.get(descriptor.full_name)
    if plan is None:
        fields = []
        for field in descriptor.fields:
            sub = field.message_type
            if field.cpp_type in _FLOATING:
                kind = _FLOAT
            elif sub is not None and sub.full_name in _JSON_VALUES:
                kind = _JSON_VALUE
            elif sub is not None and not sub.GetOptions().map_entry and sub.file.package != _WKT:
                kind = _MESSAGE
            else:
                kind = _PLAIN
            fields.append((field.name, kind, sub))
        plan = _PLANS[descriptor.full_name] = tuple(fields)
    return plan


def _in_declared_order(descriptor: Any, printed: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kind, sub in _plan(descriptor):
        if name not in printed:
            continue
        value = printed[name]
        if kind == _FLOAT:
            value = [_number(v) for v in value] if isinstance(value, list) else _number(value)
        elif kind == _JSON_VALUE:
            value = _json_value(value)
        elif kind == _MESSAGE:
            if isinstance(value, list):
                value = [_in_declared_order(sub, v) for v in value]
            elif isinstance(value, dict):
                value = _in_declared_order(sub, value)
        out[name] = value
    return out


def _json_value(value: Any) -> Any:
    """A Struct, Value or ListValue as the transcoder prints it: integral numbers without a
    fraction. (Its keys come in protobuf's map order on both sides, which is no order at all:
    JSON objects are unordered.)"""
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return _number(value)


def _number(value: Any) -> Any:
    # The transcoder prints an integral double without a fraction (0, 2), json_format as a
    # Python float (0.0, 2.0).
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


async def _body(request: web.Request) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge("Request body too large: the limit is 1 MiB") from None


def handler(rpc: RestRpc) -> Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request, who: Principal) -> web.StreamResponse:
        message = _parse(rpc, request.raw_path, await _body(request))
        answer = await rpc.call(message, NO_DEADLINE)
        return json_response(print_message(answer))

    async def handle_stream(request: web.Request, who: Principal) -> web.StreamResponse:
        message = _parse(rpc, request.raw_path, await _body(request))
        # Closed here on every way out: the call's record and the job's settlement run in the
        # servicer's clean-up (a client that goes away included).
        async with contextlib.aclosing(rpc.call(message, NO_DEADLINE)) as events:
            # An error before the first message is a JSON error answer, as through the
            # transcoder: it propagates to the request's frame.
            first = await anext(events, None)
            response = web.StreamResponse(headers=_SSE_HEADERS)
            try:
                await response.prepare(request)
                if first is not None:
                    await response.write(_event(first))
                    # Let a proxy that shares this core forward the first event now: when the
                    # provider's next deltas are already here, this loop would otherwise go on
                    # to write them and record the call first (measured: the first token +0.4
                    # ms later at c=1 with Envoy on the same core; docs/decisions.md).
                    os.sched_yield()
                    async for event in events:
                        await response.write(_event(event))
                await response.write_eof()
            except ConnectionError:
                pass  # the client went away
            except Exception:
                # After the first message the transcoder can only end the stream (the service
                # sends its errors as a last message with `error` before that, see
                # LlmCallStreamResponse): the same here, with the cause in the log.
                log.warning("stream ended by an error after its first event", exc_info=True)
                with contextlib.suppress(Exception):
                    await response.write_eof()
        return response

    return handle_stream if rpc.streaming else handle


def _event(message: Message) -> bytes:
    return b"data: " + orjson.dumps(print_message(message)) + b"\n\n"


# The RPCs served on their REST paths by the HTTP handler; envoy.yaml routes exactly these paths
# to it (tests/rest/test_rest_rpcs.py checks the two lists agree).
JOB_FLOW = (
    "CreateJob",
    "LlmCall",
    "LlmCallStream",
    "CompleteJob",
    "CreateAndCall",
    "CreateAndCallStream",
)


def job_rest_rpcs(servicer: object, paths: PathBindings) -> list[RestRpc]:
    service = job_service_pb2.DESCRIPTOR.services_by_name["JobService"]
    return [
        rest_rpc(servicer, service, name, paths.route(f"/{service.full_name}/{name}"))
        for name in JOB_FLOW
    ]
