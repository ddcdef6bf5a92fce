"""Per-request state set by the interceptor and read by servicers."""

from __future__ import annotations

import time
from contextvars import ContextVar

import grpc

from service.domain.principal import Principal

principal_var: ContextVar[Principal] = ContextVar("principal")
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


def principal() -> Principal:
    return principal_var.get()


def deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The request deadline on the time.monotonic() clock, or None."""
    left: float | None = context.time_remaining()
    if left is None:
        return None
    return time.monotonic() + left
