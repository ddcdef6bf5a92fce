"""Per-request state set by the interceptor and read by servicers and by every log line of the
request (service/logs.py). grpc.aio runs each RPC in a task of its own, so these variables are
the request's own."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any, TypeAlias

import grpc

from service.domain.principal import Principal

# The servicer context of every RPC (its message types vary by method).
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]

principal_var: ContextVar[Principal] = ContextVar("principal")
# Set first thing in every RPC (before authentication): Envoy's x-request-id, or a new one.
request_id_var: ContextVar[str] = ContextVar("request_id")


def principal() -> Principal:
    return principal_var.get()


def request_id() -> str:
    """The current request's id, "-" outside a request."""
    return request_id_var.get("-")


def deadline(context: Ctx) -> float | None:
    """The request deadline on the time.monotonic() clock, or None."""
    left: float | None = context.time_remaining()
    if left is None:
        return None
    return time.monotonic() + left
