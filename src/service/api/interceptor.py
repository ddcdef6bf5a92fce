"""The one server interceptor: request id, authentication, admission, error
mapping and the access log, for every RPC.

grpc.aio interceptors only see the method name and metadata, so this one
wraps each method's handler (once per method, cached) with a behaviour that
does the per-call work inside the RPC, and a request deserializer that turns
an undecodable message into a clean INVALID_ARGUMENT.

Admission (docs/decisions.md, "Hardening (issue 21)"): grpc.aio's
MAX_CONCURRENT_RPCS is the global cap, which only a real overload should
reach. Below it, each key (a team's, or the master key) may run at most
MAX_CONCURRENT_RPCS_PER_KEY RPCs at once, and the long-lived streams anyone
may open without a key (grpc.health.v1 Watch, server reflection) share
MAX_PUBLIC_STREAMS. Both refusals are RESOURCE_EXHAUSTED, reason
CONCURRENCY_LIMIT_EXCEEDED. The cap is per key, not per peer: Envoy is one
peer for every REST client.
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
from service.api.auth import RULES, Access, Authenticator
from service.api.context import Ctx, principal_var, request_id_var
from service.api.path_bindings import ORIGINAL_PATH, PathBindings, Route
from service.domain.errors import (
    ConcurrencyLimitExceeded,
    DomainError,
    InvalidArgument,
    from_storage,
)
from service.domain.principal import Principal
from service.domain.validation import MAX_JSON_DEPTH
from service.observe import RpcObserver

log = logging.getLogger("service.access")
REQUEST_ID = "x-request-id"


def _meta(context: Ctx) -> tuple[str | None, str, str | None]:
    """(authorization, request id, the REST path Envoy's transcoder bound the request from)."""
    auth: str | None = None
    rid: str | None = None
    path: str | None = None
    for k, v in context.invocation_metadata() or ():
        if k == "authorization":
            auth = v if isinstance(v, str) else None
        elif k == REQUEST_ID:
            rid = v if isinstance(v, str) and len(v) <= 128 else None
        elif k == ORIGINAL_PATH:
            path = v if isinstance(v, str) else None
    return auth, rid or uuid.uuid4().hex, path


class _Undecodable:
    """What the request deserializer returns for bytes that are not the RPC's message."""

    __slots__ = ()


UNDECODABLE = _Undecodable()


def _undecodable() -> InvalidArgument:
    # The protobuf decoder's own text (and class name) stays internal.
    return InvalidArgument(
        "The request could not be decoded: it is not a valid message of this RPC, or it nests "
        f"JSON values more than {MAX_JSON_DEPTH} levels deep"
    )


def _safe_deserializer(
    deserialize: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    """The handler's deserializer, returning UNDECODABLE instead of raising: grpc.aio would
    answer a raising one with UNKNOWN and the exception's class name."""
    if deserialize is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:
            return UNDECODABLE

    return decode


class Admission:
    """Concurrent RPCs per key and unauthenticated streams (see the module docstring), and the
    requests in progress on the service's HTTP handler, all keys together (its own
    MAX_CONCURRENT_RPCS: grpc.aio's cap does not see them). Counters only: the event loop is the
    one thread that touches them."""

    def __init__(self, per_key: int, public_streams: int, http_requests: int = 2000) -> None:
        self.per_key = per_key
        self.public_streams = public_streams
        self.http_requests = http_requests
        self.active: dict[str, int] = {}
        self.open_public_streams = 0
        self.open_http_requests = 0

    def admit(self, who: Principal) -> str:
        # A team's id, or the master key's own name (no team id starts with a space).
        label = who.team_id if who.team_id is not None else " admin"
        n = self.active.get(label, 0)
        if n >= self.per_key:
            raise ConcurrencyLimitExceeded(
                f"Too many concurrent requests for this key (limit {self.per_key}); retry later",
                metadata={"limit": str(self.per_key)},
            )
        self.active[label] = n + 1
        return label

    def release(self, label: str) -> None:
        n = self.active[label] - 1
        if n:
            self.active[label] = n
        else:
            del self.active[label]

    def admit_public_stream(self) -> None:
        if self.open_public_streams >= self.public_streams:
            raise ConcurrencyLimitExceeded(
                "Too many open health-watch and reflection streams "
                f"(limit {self.public_streams}); retry later",
                metadata={"limit": str(self.public_streams)},
            )
        self.open_public_streams += 1

    def release_public_stream(self) -> None:
        self.open_public_streams -= 1

    def admit_http_request(self) -> None:
        if self.open_http_requests >= self.http_requests:
            raise ConcurrencyLimitExceeded(
                "Too many requests in progress on this replica "
                f"(limit {self.http_requests}); retry later",
                metadata={"limit": str(self.http_requests)},
            )
        self.open_http_requests += 1

    def release_http_request(self) -> None:
        self.open_http_requests -= 1


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        auth: Authenticator,
        *,
        admission: Admission,
        paths: PathBindings,
        on_rpc: RpcObserver | None = None,
    ) -> None:
        self.auth = auth
        self.admission = admission
        self.paths = paths
        # The metrics of every RPC (service/metrics.py's RpcMetrics); None when metrics are off.
        self.on_rpc = on_rpc
        self._cache: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        method: str = details.method
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(details)
        if handler is None:
            return None  # type: ignore[return-value]  # grpc.aio's stubs say the method exists
        wrapped = self._wrap(method, handler)
        self._cache[method] = wrapped
        return wrapped

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        decode = _safe_deserializer(handler.request_deserializer)
        route = self.paths.route(method)
        public_stream = RULES.get(method) is Access.PUBLIC
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, cast(Any, handler.unary_unary), route),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, cast(Any, handler.unary_stream), route, public_stream),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            # Server reflection.
            return grpc.stream_stream_rpc_method_handler(
                self._bidi(method, cast(Any, handler.stream_stream)),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        # Client streaming: no RPC of ours is.
        return handler

    def _start(self, context: Ctx) -> tuple[str | None, str, str | None]:
        """The request id first, so that every answer (a refused key, a database failure
        during the key lookup) and every log line carries the caller's x-request-id."""
        authorization, rid, original_path = _meta(context)
        request_id_var.set(rid)
        context.set_trailing_metadata(((REQUEST_ID, rid),))
        return authorization, rid, original_path

    async def _authenticate(self, method: str, authorization: str | None) -> Principal:
        who = await self.auth.authenticate(method, authorization)
        principal_var.set(who)
        return who

    def _unary(
        self,
        method: str,
        behavior: Callable[[Any, Ctx], Awaitable[Any]],
        route: Route | None,
    ) -> Callable[[Any, Ctx], Awaitable[Any]]:
        async def call(request: Any, context: Ctx) -> Any:
            started = time.perf_counter()
            authorization, rid, original_path = self._start(context)
            code = "OK"
            admitted: str | None = None
            try:
                who = await self._authenticate(method, authorization)
                if request is UNDECODABLE:
                    raise _undecodable()
                if route is not None and original_path is not None:
                    route.check(original_path, request)
                if who.is_admin or who.team_id is not None:
                    admitted = self.admission.admit(who)
                return await behavior(request, context)
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            except Exception as exc:
                code = _code_of(exc)
                await _fail(context, exc, method, rid)
            finally:
                if admitted is not None:
                    self.admission.release(admitted)
                _access(method, rid, code, started, self.on_rpc)

        return call

    def _stream(
        self,
        method: str,
        behavior: Callable[[Any, Ctx], AsyncIterator[Any]],
        route: Route | None,
        public_stream: bool,
    ) -> Callable[[Any, Ctx], AsyncIterator[Any]]:
        async def call(request: Any, context: Ctx) -> AsyncIterator[Any]:
            started = time.perf_counter()
            authorization, rid, original_path = self._start(context)
            code = "OK"
            admitted: str | None = None
            public = False
            try:
                who = await self._authenticate(method, authorization)
                if request is UNDECODABLE:
                    raise _undecodable()
                if route is not None and original_path is not None:
                    route.check(original_path, request)
                if public_stream:
                    self.admission.admit_public_stream()
                    public = True
                else:
                    admitted = self.admission.admit(who)
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
                if admitted is not None:
                    self.admission.release(admitted)
                if public:
                    self.admission.release_public_stream()
                _access(method, rid, code, started, self.on_rpc)

        return call

    def _bidi(
        self,
        method: str,
        behavior: Callable[[AsyncIterator[Any], Ctx], AsyncIterator[Any]],
    ) -> Callable[[AsyncIterator[Any], Ctx], AsyncIterator[Any]]:
        """Server reflection: public, bounded with the other unauthenticated streams."""

        async def call(requests: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
            started = time.perf_counter()
            authorization, rid, _ = self._start(context)
            code = "OK"
            public = False
            try:
                await self._authenticate(method, authorization)
                self.admission.admit_public_stream()
                public = True
                async for item in behavior(_decoded(requests), context):
                    yield item
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            except Exception as exc:
                code = _code_of(exc)
                await _fail(context, exc, method, rid)
            finally:
                if public:
                    self.admission.release_public_stream()
                _access(method, rid, code, started, self.on_rpc)

        return call


async def _decoded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if request is UNDECODABLE:
            raise _undecodable()
        yield request


def _code_of(exc: Exception) -> str:
    """The status name the access log records for an RPC that raised `exc`."""
    exc = from_storage(exc)
    if isinstance(exc, DomainError):
        return exc.code.name
    if isinstance(exc, NotImplementedError):
        return "UNIMPLEMENTED"
    return "ABORTED_BY_HANDLER" if _is_abort(exc) else "INTERNAL"


async def _fail(context: Ctx, exc: Exception, method: str, rid: str) -> None:
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
    context: Ctx,
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
