"""Every Prometheus metric of the service, defined here and nowhere else (prometheus_client).

Each service process serves its own registry at `GET /metrics` on METRICS_PORT (`serve()`);
replicas are separate processes with a port each, so Prometheus scrapes every replica and sums
across `instance` (no multiprocess mode: nothing here forks workers).

metric{labels}                                          type       fed by
gateway_rpc_duration_seconds{method,code}               histogram  api/interceptor.py, every RPC;
    its _count is the RPCs by method and status code name.
gateway_llm_calls_total{model_group,model,provider,outcome}
                                                        counter    domain/jobs.py's record step,
    every recorded call; outcome: success, fallback (success after a failed attempt), failed,
    cancelled, cached.
gateway_llm_call_duration_seconds{model_group,model,provider}
                                                        histogram  the record step: the whole
    call, every attempt and (streamed) the whole stream.
gateway_llm_time_to_first_token_seconds{model_group,model,provider}
                                                        histogram  the record step, streamed
    calls: from the call's start to its first chunk.
gateway_llm_attempt_duration_seconds{model,provider,result}
                                                        histogram  domain/llm.py's CallRunner,
    every provider attempt (result ok or error); a streamed attempt ends at its first chunk.
gateway_llm_attempt_errors_total{model,provider,status} counter    CallRunner, every failed
    attempt; status: the HTTP status, or "transport" (timeout, connection, invalid answer).
gateway_llm_tokens_total{model_group,model,provider,direction}
                                                        counter    the record step; direction:
    input or output (provider-reported, else estimated).
gateway_llm_cost_usd_total{model_group,model,provider}  counter    the record step (priced
    models only).
gateway_llm_stream_chunks_total{model_group,model,provider}
                                                        counter    the record step: events
    sent to streaming clients.
gateway_jobs_open                                       gauge      the job sweeper (server.py),
    one aggregate query per sweep. The database's count: every replica reports the same value,
    so aggregate with max, not sum.
gateway_credits_reserved                                gauge      as above: credits held by
    open jobs, all teams together.
gateway_refusals_total{kind,limit}                      counter    refused(): kind rate_limit
    (limit rpm or tpm) or job_limit (limit calls, tokens or cost).
gateway_rate_limiter_errors_total                       counter    limiter_error(): the Redis
    rate limiter could not be reached and admitted a call without counting it (fail open).
gateway_llm_breaker_state{model,gateway_llm_breaker_state}
                                                        enum       domain/breaker.py through
    the observer's breaker(): closed, open, half_open (one series per state, 1 for the current
    one), on each change this replica makes or learns from Redis. `model` is the breaker's key:
    the model name, with "@" and 8 hex digits of a hash of its api_base when it has one.
gateway_llm_cache_requests_total{model_group,result}    counter    domain/response_cache.py
    through the observer's cache(): hit or miss (groups with cache_ttl_seconds only).
gateway_db_statement_duration_seconds                   histogram  db_statement(): one unit
    of database work (a statement, a transaction or a read session), start to commit.
process_*, python_gc_*, python_info                     (default)  prometheus_client's own
    collectors: CPU seconds, memory, open file descriptors, garbage collection.

Labels are bounded: model groups and models are what the operator configured, providers are
the model names' prefixes, the rest are fixed sets. No team id, key, job id or prompt text is
ever a label or a value.

Hot path: label children are resolved once per label combination and kept in dicts, so an
observation is one dict lookup plus prometheus_client's own (lock, add).
"""

from __future__ import annotations

import time
from typing import Literal

from prometheus_client import (
    Counter,
    Enum,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

from service.observe import CallStatus, LogObserver
from service.providers.base import ProviderError, provider_of

# No `<name>_created` series next to every counter and histogram: they double the series count
# and nothing here reads them (Prometheus itself ignores them in the text format).
disable_created_metrics()  # type: ignore[no-untyped-call]

# Sub-millisecond to two minutes: most RPCs take about a millisecond, LLM calls up to minutes.
_RPC_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    120,
)
_LLM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_DB_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

RPC_DURATION = Histogram(
    "gateway_rpc_duration_seconds",
    "gRPC calls served (REST calls arrive through Envoy as gRPC), by method and status code.",
    ["method", "code"],
    buckets=_RPC_BUCKETS,
)
LLM_CALLS = Counter(
    "gateway_llm_calls_total",
    "LLM calls recorded, by how they ended.",
    ["model_group", "model", "provider", "outcome"],
)
LLM_CALL_DURATION = Histogram(
    "gateway_llm_call_duration_seconds",
    "LLM call latency: every attempt, and the whole stream for a streamed call.",
    ["model_group", "model", "provider"],
    buckets=_LLM_BUCKETS,
)
LLM_TTFT = Histogram(
    "gateway_llm_time_to_first_token_seconds",
    "Streamed LLM calls: time from the call's start to its first chunk.",
    ["model_group", "model", "provider"],
    buckets=_TTFT_BUCKETS,
)
LLM_ATTEMPT_DURATION = Histogram(
    "gateway_llm_attempt_duration_seconds",
    "Provider attempts: time to the answer (a stream: to its first chunk) or to the failure.",
    ["model", "provider", "result"],
    buckets=_LLM_BUCKETS,
)
LLM_ATTEMPT_ERRORS = Counter(
    "gateway_llm_attempt_errors_total",
    "Failed provider attempts, by HTTP status (or 'transport': timeout, connection, bad answer).",
    ["model", "provider", "status"],
)
LLM_TOKENS = Counter(
    "gateway_llm_tokens_total",
    "Tokens of recorded LLM calls (provider-reported, else estimated).",
    ["model_group", "model", "provider", "direction"],
)
LLM_COST = Counter(
    "gateway_llm_cost_usd_total",
    "Provider cost in USD of recorded LLM calls (priced models only).",
    ["model_group", "model", "provider"],
)
LLM_STREAM_CHUNKS = Counter(
    "gateway_llm_stream_chunks_total",
    "Events sent to clients of streamed LLM calls.",
    ["model_group", "model", "provider"],
)
JOBS_OPEN = Gauge(
    "gateway_jobs_open",
    "Jobs pending or in progress in the database (refreshed by every replica's job sweeper).",
)
CREDITS_RESERVED = Gauge(
    "gateway_credits_reserved",
    "Credits reserved by open jobs, all teams together (refreshed by the job sweeper).",
)
REFUSALS = Counter(
    "gateway_refusals_total",
    "Requests refused by a rate limit or a per-job limit.",
    ["kind", "limit"],
)
LIMITER_ERRORS = Counter(
    "gateway_rate_limiter_errors_total",
    "Rate-limit checks that could not reach Redis: the call was admitted (fail open).",
)
BREAKER_STATE = Enum(
    "gateway_llm_breaker_state",
    "Circuit breaker state of each model.",
    ["model"],
    states=["closed", "open", "half_open"],
)
CACHE_REQUESTS = Counter(
    "gateway_llm_cache_requests_total",
    "Response cache lookups of model groups with caching on.",
    ["model_group", "result"],
)
DB_STATEMENT_DURATION = Histogram(
    "gateway_db_statement_duration_seconds",
    "Database work (a statement, a transaction or a read session), from start to commit.",
    buckets=_DB_BUCKETS,
)

RefusalKind = Literal["rate_limit", "job_limit"]
RefusedLimit = Literal["rpm", "tpm", "calls", "tokens", "cost"]
BreakerState = Literal["closed", "open", "half_open"]
CacheResult = Literal["hit", "miss"]


# The typed API of the features that feed their own metrics (rate limits, job limits, the
# breaker, the response cache, the storage executor).


def refused(kind: RefusalKind, limit: RefusedLimit) -> None:
    """A request refused by a limit (before it reached a provider)."""
    REFUSALS.labels(kind, limit).inc()


def limiter_error() -> None:
    """The shared rate limiter failed and admitted a call uncounted (service/ratelimit.py)."""
    LIMITER_ERRORS.inc()


def breaker_state(model: str, state: BreakerState) -> None:
    BREAKER_STATE.labels(model).state(state)


def cache(model_group: str, result: CacheResult) -> None:
    CACHE_REQUESTS.labels(model_group, result).inc()


def db_statement(seconds: float) -> None:
    DB_STATEMENT_DURATION.observe(seconds)


def open_jobs(jobs: int, credits_reserved: int) -> None:
    """The database's open jobs and reserved credits (the sweeper's aggregate query)."""
    JOBS_OPEN.set(jobs)
    CREDITS_RESERVED.set(credits_reserved)


class RpcMetrics:
    """The interceptor's per-RPC hook (service.observe.RpcObserver)."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str], Histogram] = {}

    def __call__(self, method: str, code: str, seconds: float) -> None:
        child = self._children.get((method, code))
        if child is None:
            child = self._children[(method, code)] = RPC_DURATION.labels(method, code)
        child.observe(seconds)


class _CallSeries:
    """The children of one (model group, model) pair, resolved on its first call."""

    __slots__ = ("cost", "duration", "input", "outcomes", "output", "provider", "stream", "ttft")

    def __init__(self, model_group: str, model: str) -> None:
        p = self.provider = provider_of(model)
        self.duration = LLM_CALL_DURATION.labels(model_group, model, p)
        self.ttft = LLM_TTFT.labels(model_group, model, p)
        self.input = LLM_TOKENS.labels(model_group, model, p, "input")
        self.output = LLM_TOKENS.labels(model_group, model, p, "output")
        self.cost = LLM_COST.labels(model_group, model, p)
        self.stream = LLM_STREAM_CHUNKS.labels(model_group, model, p)
        self.outcomes: dict[str, Counter] = {}


class MetricsObserver(LogObserver):
    """service.observe.CallObserver with metrics (and the WARNING per failed attempt)."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], _CallSeries] = {}
        self._attempts: dict[tuple[str, bool], Histogram] = {}

    def attempt(
        self, model_group: str, model: str, started: float, error: ProviderError | None
    ) -> None:
        seconds = time.perf_counter() - started
        child = self._attempts.get((model, error is None))
        if child is None:
            child = LLM_ATTEMPT_DURATION.labels(
                model, provider_of(model), "ok" if error is None else "error"
            )
            self._attempts[(model, error is None)] = child
        child.observe(seconds)
        if error is not None:
            status = str(error.status) if error.status else "transport"
            LLM_ATTEMPT_ERRORS.labels(model, provider_of(model), status).inc()
            super().attempt(model_group, model, started, error)

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
        series = self._calls.get((model_group, model))
        if series is None:
            series = self._calls[(model_group, model)] = _CallSeries(model_group, model)
        outcome = "fallback" if status == "success" and failed_attempts else status
        counter = series.outcomes.get(outcome)
        if counter is None:
            counter = series.outcomes[outcome] = LLM_CALLS.labels(
                model_group, model, series.provider, outcome
            )
        counter.inc()
        series.duration.observe(seconds)
        if prompt_tokens:
            series.input.inc(prompt_tokens)
        if completion_tokens:
            series.output.inc(completion_tokens)
        if cost_usd:
            series.cost.inc(cost_usd)
        if ttft_seconds is not None:
            series.ttft.observe(ttft_seconds)
        if chunks:
            series.stream.inc(chunks)

    def breaker(self, model: str, state: str) -> None:
        if state in ("closed", "open", "half_open"):
            BREAKER_STATE.labels(model).state(state)

    def cache(self, model_group: str, hit: bool) -> None:
        cache(model_group, "hit" if hit else "miss")


class MetricsServer:
    """GET /metrics of this process (prometheus_client's HTTP server, on a thread of its own:
    a scrape never waits for the event loop)."""

    def __init__(self, host: str, port: int) -> None:
        self._httpd, self._thread = start_http_server(port, addr=host)
        self.port: int = self._httpd.server_port

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
