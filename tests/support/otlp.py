"""An OTLP/gRPC trace collector for the tests: the service's exporter and Envoy's OpenTelemetry
tracer send their spans here, over real gRPC on an ephemeral port.

    async with OtlpCollector() as collector:   # collector.endpoint: "http://127.0.0.1:<port>"
        ...
        spans = await collector.wait_for(lambda spans: ..., timeout=10)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class Span:
    service: str  # the resource's service.name
    name: str
    trace_id: str  # hex
    span_id: str
    parent_span_id: str  # "" for a root span
    kind: int
    attributes: dict[str, Any]
    raw: str  # the span as JSON, to search for what must not be there


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class OtlpCollector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = str(attrs.get("service.name", ""))
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    self.spans.append(
                        Span(
                            service=service,
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            raw=MessageToJson(s),
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()

    async def wait_for(
        self, done: Callable[[list[Span]], bool], timeout: float = 10.0
    ) -> list[Span]:
        deadline = time.monotonic() + timeout
        while not done(self.spans):
            assert time.monotonic() < deadline, [(s.service, s.name) for s in self.spans]
            await asyncio.sleep(0.05)
        return list(self.spans)

    async def __aenter__(self) -> OtlpCollector:
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            await self._server.stop(0)
