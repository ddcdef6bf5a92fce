"""Native gRPC transport on the generated stubs (the saas-llm-grpc package, `pip install
'saas-litellm-client[grpc]'`). Requests and answers are converted with protobuf's JSON mapping
(proto field names, zero values printed), which is what Envoy prints for the REST surface, so the
models parse both alike. Errors come from the status's google.rpc.ErrorInfo detail
(grpc-status-details-bin)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from saas_litellm_client import errors
from saas_litellm_client._operations import Operation

try:
    import grpc
    from google.protobuf import json_format
    from google.rpc import error_details_pb2, status_pb2
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "the gRPC transport needs the grpc extra: pip install 'saas-litellm-client[grpc]' "
        "(and the stubs: pip install clients/python-grpc)"
    ) from exc

JSONObject = dict[str, Any]
# Service -> module of saas_llm.v1 that defines it.
_MODULES = {
    "JobService": "job_service",
    "CreditService": "credit_service",
    "TeamService": "team_service",
    "OrganizationService": "organization_service",
    "ModelGroupService": "model_group_service",
    "HealthService": "health_service",
}


def grpc_error(exc: grpc.aio.AioRpcError) -> errors.SaasLiteLLMError:
    """The typed error of a failed call."""
    code = int(exc.code().value[0])
    reason, metadata = "", {}
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    reason, metadata = info.reason, dict(info.metadata)
                    break
    return errors.error_from(code, exc.details() or exc.code().name, reason, metadata)


class GrpcTransport:
    """One grpc.aio channel; `authorization` metadata on every call."""

    def __init__(self, target: str, headers: Mapping[str, str]) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._metadata = tuple((k.lower(), v) for k, v in headers.items())
        self._stubs: dict[str, Any] = {}

    def _method(self, op: Operation) -> tuple[Any, Any]:
        """The stub's callable and the request class of an operation."""
        stub = self._stubs.get(op.service)
        module = _MODULES[op.service]
        if stub is None:
            grpc_module = importlib.import_module(f"saas_llm.v1.{module}_pb2_grpc")
            stub = getattr(grpc_module, f"{op.service}Stub")(self._channel)
            self._stubs[op.service] = stub
        pb2 = importlib.import_module(f"saas_llm.v1.{module}_pb2")
        method = pb2.DESCRIPTOR.services_by_name[op.service].methods_by_name[op.rpc]
        request_class = getattr(pb2, method.input_type.name, None)
        if request_class is None:  # defined in another file (common.proto)
            from google.protobuf import message_factory

            request_class = message_factory.GetMessageClass(method.input_type)
        return getattr(stub, op.rpc), request_class

    def _message(self, request_class: Any, request: JSONObject) -> Any:
        try:
            return json_format.ParseDict(request, request_class())
        except json_format.ParseError as exc:
            raise errors.InvalidRequestError(
                str(exc), code=errors.INVALID_ARGUMENT, reason="INVALID_ARGUMENT"
            ) from exc

    @staticmethod
    def _json(message: Any) -> JSONObject:
        data: JSONObject = json_format.MessageToDict(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
        return data

    async def call(self, op: Operation, request: JSONObject, timeout: float) -> JSONObject:
        method, request_class = self._method(op)
        try:
            answer = await method(
                self._message(request_class, request), metadata=self._metadata, timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise grpc_error(exc) from exc
        return self._json(answer)

    async def stream(
        self, op: Operation, request: JSONObject, timeout: float
    ) -> AsyncIterator[JSONObject]:
        """`timeout` bounds the wait for each message (as over REST), not the whole stream."""
        method, request_class = self._method(op)
        call = method(self._message(request_class, request), metadata=self._metadata)
        try:
            while True:
                try:
                    message = await asyncio.wait_for(call.read(), timeout)
                except TimeoutError as exc:
                    raise errors.RequestTimeoutError(
                        f"no data within {timeout} s", code=errors.DEADLINE_EXCEEDED
                    ) from exc
                if message is grpc.aio.EOF:
                    return
                yield self._json(message)
        except grpc.aio.AioRpcError as exc:
            raise grpc_error(exc) from exc
        finally:
            call.cancel()

    async def aclose(self) -> None:
        await self._channel.close()
