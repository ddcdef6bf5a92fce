"""OpenTelemetry tracing: on when OTEL_EXPORTER_OTLP_ENDPOINT is set, absent otherwise.

One trace per request, from Envoy (its OpenTelemetry tracer, configured by
gateway/envoy_config.py with the same endpoint, sends `traceparent` upstream) through:
- the RPC: opentelemetry-instrumentation-grpc's aio server interceptor, first in the server's
  interceptor list, continues the caller's trace (Envoy's or a gRPC client's `traceparent`);
- the database statements: opentelemetry-instrumentation-asyncpg, and the DB-API instrumentation
  (opentelemetry-instrumentation-dbapi, what -sqlite3 applies to `sqlite3.connect`) at the driver
  level, so that whatever sits above the drivers is covered. The storage runs its SQLite
  statements with `Connection.execute`, a shortcut for `cursor().execute` that the DB-API proxy
  does not trace (it wraps `cursor()` only): `_SqliteConnection` routes the shortcut through the
  traced cursor;
- each provider attempt: providers/tracing.py, around the provider (and its HTTP client).
Log lines carry the current trace and span ids (service/logs.py).

Off, nothing of this is installed: no interceptor, no driver patch, no provider wrapper.
Spans are batched and exported over OTLP/gRPC; the SDK's OTEL_* variables (sampler, headers,
resource attributes) apply. Span attributes hold model names, statuses, token counts and SQL
text with placeholders (never parameters), never a key or prompt text.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from sqlite3 import dbapi2
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.instrumentation import dbapi
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from service import logs
from service.settings import Settings

INSTRUMENTATION_NAME = "service"
# Where sqlite3's connect() is looked up (the storage calls sqlite3.connect).
_SQLITE_MODULES = (sqlite3, dbapi2)


class _SqliteConnection(dbapi.TracedConnectionProxy):  # type: ignore[type-arg]
    """The DB-API instrumentation's connection proxy, with sqlite3's execute shortcuts traced."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self.cursor().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        return self.cursor().executemany(*args, **kwargs)


class _SqliteIntegration(dbapi.DatabaseApiIntegration):
    def wrapped_connection(
        self, connect_method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[Any, Any]
    ) -> _SqliteConnection:
        connection = connect_method(*args, **kwargs)
        self.get_connection_attributes(connection)
        return _SqliteConnection(connection, self)


def _instrument_sqlite(provider: TracerProvider) -> None:
    for module in _SQLITE_MODULES:
        dbapi.wrap_connect(
            __name__,
            module,  # type: ignore[arg-type]  # annotated as a callable; a module is what it takes
            "connect",
            "sqlite",
            {},
            tracer_provider=provider,
            db_api_integration_factory=_SqliteIntegration,
        )


def _uninstrument_sqlite() -> None:
    for module in _SQLITE_MODULES:
        dbapi.unwrap_connect(module, "connect")  # type: ignore[arg-type]  # as above


def _current_ids() -> tuple[str, str] | None:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


@dataclass
class Tracing:
    """Tracing installed for one App: `interceptors` go first in the gRPC server's list."""

    provider: TracerProvider
    tracer: trace.Tracer
    interceptors: Sequence[Any]
    owns_provider: bool

    def server_span(self, method: str, headers: Mapping[str, str]) -> AbstractContextManager[Any]:
        """The span of a request served by the HTTP handler (api/service_http.py), named and
        parented like the gRPC interceptor's: the RPC's method, under the caller's traceparent."""
        return self.tracer.start_as_current_span(
            method, context=propagate.extract(headers), kind=trace.SpanKind.SERVER
        )

    def shutdown(self) -> None:
        """Uninstall the driver instrumentation and flush the spans still buffered."""
        _uninstrument_sqlite()
        AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
        logs.enable_trace_ids(None)
        if self.owns_provider:
            self.provider.shutdown()
        else:
            self.provider.force_flush()


def start(settings: Settings, provider: TracerProvider | None = None) -> Tracing | None:
    """Install tracing when OTEL_EXPORTER_OTLP_ENDPOINT is set (or `provider` is given: tests
    pass one with an in-memory exporter); None when tracing is off."""
    owns = provider is None
    if provider is None:
        if not settings.otel_exporter_otlp_endpoint:
            return None
        # Imported here: the exporter pulls in its gRPC and protobuf modules.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider = TracerProvider(
            resource=Resource.create({"service.name": settings.otel_service_name})
        )
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint))
        )
    # Connections opened from now on are traced (the App opens its own after this).
    _instrument_sqlite(provider)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    logs.enable_trace_ids(_current_ids)
    # Health checks (every few seconds from Envoy, Docker, Kubernetes) and reflection: no spans.
    skip = filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection"))
    interceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=provider, filter_=filters.negate(skip)
    )
    return Tracing(
        provider=provider,
        tracer=provider.get_tracer(INSTRUMENTATION_NAME),
        interceptors=[interceptor],
        owns_provider=owns,
    )
