"""Domain errors -> gRPC status with a google.rpc.ErrorInfo detail."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from service.domain.errors import DomainError

DOMAIN = "saas-llm.gateway"
DETAILS_KEY = "grpc-status-details-bin"

_CODES = {c.value[0]: c for c in grpc.StatusCode}


def grpc_code(number: int) -> grpc.StatusCode:
    return _CODES.get(number, grpc.StatusCode.INTERNAL)


def rich_status(
    code: int, message: str, reason: str, metadata: dict[str, str] | None = None
) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    """(code, message, trailing metadata carrying the serialized google.rpc.Status)."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code, message=message, details=[detail])
    return grpc_code(code), message, ((DETAILS_KEY, status.SerializeToString()),)


def from_domain(exc: DomainError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    return rich_status(int(exc.code), exc.message, exc.reason, exc.metadata)


def internal(request_id: str) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]]:
    return rich_status(
        code_pb2.INTERNAL,
        f"Internal error (request id {request_id})",
        "INTERNAL",
        {"request_id": request_id},
    )
