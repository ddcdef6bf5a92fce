"""The service's own HTTP handler behind Envoy: the OpenAI-compatible REST paths, and the job
flow's REST paths (api/rest_rpcs.py).

Envoy's transcoder cannot produce OpenAI's wire format: one path answering JSON or Server-Sent
Events by the body's `stream` flag, a stream ending with `data: [DONE]`, and errors as
{"error": {...}} with OpenAI's statuses (docs/decisions.md). So Envoy routes these paths, as
plain HTTP/1.1, to this handler (DIRECT_HTTP_PORT on loopback), which shares the domain code
(domain/direct.py) and the one auth check (api/auth.py) with the gRPC OpenAIService.

    POST /v1/chat/completions   (and /chat/completions)
    GET  /v1/models             (and /models, /v1/models/{model})
    POST /v1/embeddings         (and /embeddings)

The job flow's paths (POST /api/jobs/create, /api/jobs/{job_id}/llm-call, .../complete,
/api/jobs/create-and-call) answer exactly as Envoy's transcoder would, from the same servicer.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import orjson
from aiohttp import web

from service.api import openai_wire as wire
from service.api.auth import Authenticator
from service.api.context import principal_var, request_id_var
from service.api.interceptor import Admission
from service.api.rest_rpcs import RestRpc, internal_body, json_response, status_body
from service.api.rest_rpcs import handler as rest_handler
from service.domain.direct import ChatDelta, ChatEnd, DirectService, model_not_found
from service.domain.errors import DomainError, InvalidArgument, from_storage
from service.domain.principal import Principal
from service.observe import RpcObserver
from service.providers.base import ChatRequest

log = logging.getLogger("service.access")

_S = "/saas_llm.v1.OpenAIService/"
CHAT = _S + "CreateChatCompletion"
MODELS = _S + "ListModels"
EMBEDDINGS = _S + "CreateEmbeddings"
# The request fields this handler reads itself; every other field is passed to the provider.
_OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options"})
# Bodies over 1 MiB are refused by Envoy (413) before they get here; this bounds direct access.
MAX_BODY = 1024 * 1024 + 1024

# The gRPC status name of an HTTP status, for the RPC metrics.
_CODE_NAMES = {
    200: "OK",
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

Handler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]
# (the response, the gRPC status name for the metrics) of a request that raised.
Failure = Callable[[Exception, str, str], tuple[web.Response, str]]
# A server span around a request (service/tracing.py), given the method and the headers.
SpanFactory = Callable[[str, Mapping[str, str]], AbstractContextManager[Any]]
_CACHE_HIT = {"X-Gateway-Cache": "hit"}


class ServiceHttp:
    def __init__(
        self,
        direct: DirectService,
        auth: Authenticator,
        admission: Admission,
        on_request: RpcObserver | None = None,
        rest: Sequence[RestRpc] = (),
        span: SpanFactory | None = None,
    ) -> None:
        self.direct = direct
        # The job flow's REST paths (api/rest_rpcs.py).
        self.rest = rest
        # With tracing on, a server span per request, child of the caller's traceparent.
        self.span = span
        self.auth = auth
        # The RPC metrics (by OpenAIService method and the status code's name), as for gRPC.
        self.on_request = on_request
        # The same concurrency cap per key as the gRPC RPCs (api/interceptor.py).
        self.admission = admission
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        chat = self._wrap(CHAT, self._chat)
        models = self._wrap(MODELS, self._models)
        model = self._wrap(MODELS, self._model)
        embeddings = self._wrap(EMBEDDINGS, self._embeddings)
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", chat)
            app.router.add_get(f"{prefix}/models", models)
            app.router.add_get(f"{prefix}/models/{{model:.+}}", model)
            app.router.add_post(f"{prefix}/embeddings", embeddings)
        for rpc in self.rest:
            # Any characters in a variable: aiohttp matches the decoded path, where an escaped
            # "/" is a slash; the handler binds the variables from the raw path, as Envoy does.
            path = re.sub(r"\{(\w+)\}", r"{\1:.+}", rpc.path)
            app.router.add_post(path, self._wrap(rpc.method, rest_handler(rpc), _rest_failure))
        return app

    async def start(self, host: str, port: int) -> int:
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        self._runner = runner
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # The per-request frame: request id, auth, errors, access log ---------------------------

    def _wrap(
        self, method: str, handler: Handler, failure: Failure | None = None
    ) -> Callable[[web.Request], Awaitable[Any]]:
        fail = failure or _openai_failure

        async def call(request: web.Request) -> web.StreamResponse:
            if self.span is None:
                return await frame(request)
            with self.span(method, request.headers):
                return await frame(request)

        async def frame(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            rid = request.headers.get("x-request-id", "")
            if not rid or len(rid) > 128:
                rid = uuid.uuid4().hex
            request_id_var.set(rid)
            status = 200
            code = "OK"
            counted = False
            try:
                self.admission.admit_http_request()
                counted = True
                who = await self.auth.authenticate(method, request.headers.get("authorization"))
                principal_var.set(who)
                label = self.admission.admit(who)
                try:
                    response = await handler(request, who)
                finally:
                    self.admission.release(label)
                status = response.status
                return response
            except Exception as exc:
                response, code = fail(exc, method, rid)
                status = response.status
                return response
            finally:
                if counted:
                    self.admission.release_http_request()
                seconds = time.perf_counter() - started
                if self.on_request is not None:
                    self.on_request(method, code, seconds)
                if log.isEnabledFor(logging.INFO):
                    # The request id, principal and team id are added by the log formatter.
                    log.info(
                        "http",
                        extra={
                            "method": method,
                            "status": status,
                            "code": code,
                            "ms": round(seconds * 1000, 2),
                        },
                    )

        return call

    # Endpoints -------------------------------------------------------------------------

    async def _models(self, request: web.Request, who: Principal) -> web.StreamResponse:
        return json_response(wire.models(await self.direct.models(who)))

    async def _model(self, request: web.Request, who: Principal) -> web.StreamResponse:
        name = request.match_info["model"]
        for m in await self.direct.models(who):
            if m.id == name:
                return json_response(wire.models([m])["data"][0])
        raise model_not_found(name)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            raise InvalidArgument(f"The body is not valid JSON: {exc}") from exc
        except web.HTTPRequestEntityTooLarge as exc:
            raise InvalidArgument("Request body too large: the limit is 1 MiB") from exc
        if not isinstance(body, dict):
            raise InvalidArgument("The body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidArgument("model is required", field="model")
        return body

    async def _chat(self, request: web.Request, who: Principal) -> web.StreamResponse:
        body = await self._body(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise InvalidArgument("messages must be a list of message objects", field="messages")
        params = {k: v for k, v in body.items() if k not in _OWN_FIELDS and v is not None}
        chat = ChatRequest(messages=messages, params=params)
        stream = body.get("stream") is True
        if not stream:
            answer = await self.direct.chat(who, body["model"], chat, None)
            # A response cache hit says so in a header (the body stays OpenAI's).
            return json_response(
                wire.completion(answer), headers=_CACHE_HIT if answer.cached else None
            )
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        opened = await self.direct.chat_stream(who, body["model"], chat, None)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        writer = wire.ChunkWriter(opened.call_id, opened.created, opened.model)
        async with contextlib.aclosing(opened.events) as events:
            try:
                await response.prepare(request)
                await response.write(writer.first())
                async for event in events:
                    if isinstance(event, ChatDelta):
                        await response.write(writer.delta(event.content, event.tool_calls))
                    elif isinstance(event, ChatEnd):
                        out = writer.finish(event.finish_reason)
                        if include_usage:
                            out += writer.usage(event.usage)
                        await response.write(out + wire.DONE)
                    else:
                        await response.write(wire.stream_error(event.message, event.code))
                await response.write_eof()
            except ConnectionError:
                # The client went away: closing the events cancels the provider's stream and
                # settles the call with the tokens seen.
                pass
        return response

    async def _embeddings(self, request: web.Request, who: Principal) -> web.StreamResponse:
        body = await self._body(request)
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise InvalidArgument(
                'encoding_format must be "float" or "base64"', field="encoding_format"
            )
        params = {
            k: v
            for k, v in body.items()
            if k not in ("model", "input", "encoding_format") and v is not None
        }
        answer = await self.direct.embed(who, body["model"], body.get("input"), params, None)
        return json_response(wire.embeddings(answer.model, answer.result, encoding))


def _openai_failure(exc: Exception, method: str, rid: str) -> tuple[web.Response, str]:
    """OpenAI's error body and status (api/openai_wire.py)."""
    translated = from_storage(exc)
    if isinstance(translated, DomainError):
        status, body, headers = wire.error(translated)
        return json_response(body, status, headers), _CODE_NAMES.get(status, "UNKNOWN")
    log.exception("unhandled error", extra={"request_id": rid, "method": method})
    body = wire.plain_error(500, f"Internal error (request id {rid})")
    return json_response(body, 500), "INTERNAL"


def _rest_failure(exc: Exception, method: str, rid: str) -> tuple[web.Response, str]:
    """The transcoder's {"code", "message", "details"} body and status (api/rest_rpcs.py)."""
    translated = from_storage(exc)
    if isinstance(translated, DomainError):
        status, body = status_body(translated)
        return json_response(body, status), translated.code.name
    log.exception("unhandled error", extra={"request_id": rid, "method": method})
    status, body = internal_body(rid)
    return json_response(body, status), "INTERNAL"
