"""The one server interceptor: request id, authentication, error mapping and
the access log, for unary and server-streaming RPCs alike.

grpc.aio interceptors only see the method name and metadata, so this one
wraps each method's handler (once per method, cached) with a behaviour that
does the per-call work inside the RPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import grpc

from service.api import errors
from service.api.auth import Authenticator
from service.api.context import principal_var, request_id_var
from service.domain.errors import DomainError, from_storage
from service.observe import RpcObserver

log = logging.getLogger("service.access")
REQUEST_ID = "x-request-id"


def _meta(context: grpc.aio.ServicerContext) -> tuple[str | None, str]:
    auth: str | None = None
    rid: str | None = None
    for k, v in context.invocation_metadata() or ():
        if k == "authorization":
            auth = v if isinstance(v, str) else None
        elif k == REQUEST_ID:
            rid = v if isinstance(v, str) and len(v) <= 128 else None
    return auth, rid or uuid.uuid4().hex


class GatewayInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, auth: Authenticator, on_rpc: RpcObserver | None = None) -> None:
        self.auth = auth
        # The metrics of every RPC (service/metrics.py's RpcMetrics); None when metrics are off.
        self.on_rpc = on_rpc
        self._cache: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None:
            return None
        wrapped = self._wrap(method, handler)
        self._cache[method] = wrapped
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        # Client/bidi streaming (reflection, health Watch): auth only.
        return handler

    async def _begin(self, method: str, context: grpc.aio.ServicerContext) -> str:
        authorization, rid = _meta(context)
        request_id_var.set(rid)
        context.set_trailing_metadata(((REQUEST_ID, rid),))
        principal_var.set(await self.auth.authenticate(method, authorization))
        return rid

    def _unary(
        self, method: str, behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            rid = "-"
            code = "OK"
            try:
                rid = await self._begin(method, context)
                return await behavior(request, context)
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            except Exception as exc:
                code = _code_of(exc)
                await _fail(context, exc, method, rid)
            finally:
                _access(method, rid, code, started, self.on_rpc)

        return call

    def _stream(
        self,
        method: str,
        behavior: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]],
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            rid = "-"
            code = "OK"
            try:
                rid = await self._begin(method, context)
                stream = behavior(request, context)
                if hasattr(stream, "__aiter__"):
                    async for item in stream:
                        yield item
                else:
                    # A handler that writes with context.write() and returns nothing
                    # (grpc.health.v1 Watch): let it run to its end.
                    await cast(Awaitable[Any], stream)
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            except Exception as exc:
                code = _code_of(exc)
                await _fail(context, exc, method, rid)
            finally:
                _access(method, rid, code, started, self.on_rpc)

        return call


def _code_of(exc: Exception) -> str:
    """The status name the access log records for an RPC that raised `exc`."""
    exc = from_storage(exc)
    if isinstance(exc, DomainError):
        return exc.code.name
    if isinstance(exc, NotImplementedError):
        return "UNIMPLEMENTED"
    return "ABORTED_BY_HANDLER" if _is_abort(exc) else "INTERNAL"


async def _fail(context: grpc.aio.ServicerContext, exc: Exception, method: str, rid: str) -> None:
    """End the RPC with the status `exc` maps to (the one error mapping of the service).
    Called from an `except` block, so that the log keeps the traceback."""
    if _is_abort(exc):
        raise exc  # the handler already chose its status
    translated = from_storage(exc)
    if isinstance(translated, DomainError):
        await _abort(context, *errors.from_domain(translated), rid)
    elif isinstance(exc, NotImplementedError):
        # A generated base method nobody overrides (grpc.health.v1 List).
        await _abort(context, grpc.StatusCode.UNIMPLEMENTED, "Method not implemented", (), rid)
    else:
        log.exception("unhandled error", extra={"request_id": rid, "method": method})
        await _abort(context, *errors.internal(rid), rid)


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises this internal exception to end the RPC.
    return type(exc).__name__ == "AbortError"


async def _abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    trailing: tuple[tuple[str, bytes], ...],
    rid: str,
) -> None:
    try:
        await context.abort(code, message, trailing_metadata=(*trailing, (REQUEST_ID, rid)))
    except BaseException as exc:
        # abort() ends the RPC by raising. Recorded further out (the tracing interceptor records
        # it on the RPC's span), its traceback would show the error being handled, whose message
        # may quote what the client sent (a key pasted as a team id): leave that chain out.
        exc.__suppress_context__ = True
        raise


def _access(method: str, rid: str, code: str, started: float, on_rpc: RpcObserver | None) -> None:
    seconds = time.perf_counter() - started
    if on_rpc is not None:
        on_rpc(method, code, seconds)
    if log.isEnabledFor(logging.INFO):
        # The request id (also on a refused request), principal and team id are added by the log
        # formatter (service/logs.py).
        log.info(
            "rpc",
            extra={
                "method": method,
                "code": code,
                "ms": round(seconds * 1000, 2),
            },
        )
