"""What the domain tells the outside world about LLM calls: the observer port.

The domain (domain/llm.py's CallRunner, domain/jobs.py's record step) calls a `CallObserver`
once per provider attempt and once per recorded call. It never imports prometheus_client or
OpenTelemetry: server.py injects `service.metrics.MetricsObserver` when metrics are on, and
`LogObserver` (this module's default) when they are off.

Only bounded, tenant-free values cross this port: the model group and model names (configured
by the operator), outcomes, token counts, cost and timings. Never a team id, key, job id or
prompt text.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from service.providers.base import ProviderError

# How a recorded call ended: "success", "failed", "cancelled" (llm_calls.status), or "cached"
# (answered by the response cache, issue 16).
CallStatus = str

log = logging.getLogger("service.llm")


class CallObserver(Protocol):
    def attempt(
        self, model_group: str, model: str, started: float, error: ProviderError | None
    ) -> None:
        """One provider attempt ended: answered (`error` None; for a stream, its first chunk
        arrived) or failed. `started` is its time.perf_counter() start."""
        ...

    def call(
        self,
        model_group: str,
        model: str,
        status: CallStatus,
        *,
        failed_attempts: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float | None,
        seconds: float,
        ttft_seconds: float | None,
        chunks: int,
    ) -> None:
        """One LLM call was recorded. `model` answered it (or was the last one tried);
        `failed_attempts` models failed before it (a success after one is a fallback);
        `chunks` is the number of stream events sent to the client (0 when not streamed)."""
        ...

    def breaker(self, model: str, state: str) -> None:
        """A model's circuit breaker changed state: closed, open or half_open."""
        ...

    def cache(self, model_group: str, hit: bool) -> None:
        """A response cache lookup of a group with caching on."""
        ...


def attempt_fields(
    model_group: str, model: str, started: float, error: ProviderError
) -> dict[str, object]:
    """The fields of the WARNING logged for a failed attempt. The HTTP status says what went
    wrong without the upstream's text, which may quote the request back."""
    return {
        "model_group": model_group,
        "model": model,
        "status": error.status,
        "retryable": error.retryable,
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
    }


class LogObserver:
    """The observer when metrics are off: a WARNING per failed provider attempt, nothing else."""

    def attempt(
        self, model_group: str, model: str, started: float, error: ProviderError | None
    ) -> None:
        if error is not None:
            log.warning(
                "provider attempt failed", extra=attempt_fields(model_group, model, started, error)
            )

    def call(
        self,
        model_group: str,
        model: str,
        status: CallStatus,
        *,
        failed_attempts: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float | None,
        seconds: float,
        ttft_seconds: float | None,
        chunks: int,
    ) -> None:
        return None

    def breaker(self, model: str, state: str) -> None:
        return None

    def cache(self, model_group: str, hit: bool) -> None:
        return None


class RpcObserver(Protocol):
    """Called by the API interceptor once per RPC that has ended."""

    def __call__(self, method: str, code: str, seconds: float) -> None:
        """`method` the full gRPC method name, `code` the status code name."""
        ...
