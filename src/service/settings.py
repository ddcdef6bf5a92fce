"""All configuration, from environment variables (documented in README.md)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str = Field(
        default="sqlite+aiosqlite:///./data/gateway.db",
        description="sqlite+aiosqlite:///<path> or postgresql+asyncpg://user@host/db",
    )
    master_key: SecretStr | None = Field(
        default=None, description="Admin key; `make run` generates one into data/ when unset."
    )
    # Interface the gRPC port listens on: loopback by default, so that only Envoy (and local
    # tools) reach it; "0.0.0.0" (every interface) in containers or when remote gRPC clients call
    # the service directly.
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    log_level: str = "INFO"
    # Seconds a job may stay open before the sweeper expires it and releases
    # its credit.
    job_timeout: float = Field(default=3600.0, gt=0)
    sweeper_interval: float = Field(default=30.0, gt=0)
    # Seconds in-flight RPCs get to finish on SIGTERM.
    shutdown_grace: float = Field(default=10.0, ge=0)
    max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_concurrent_rpcs: int = Field(default=2000, ge=1)
    # Provider timeout when neither the request deadline nor the model config
    # gives one.
    default_llm_timeout: float = Field(default=120.0, gt=0)
    # Demo mode: models without credentials are answered by the built-in
    # simulator (see providers/router.py). `make run` turns it on.
    simulate_without_keys: bool = False
    db_pool_size: int = Field(default=10, ge=1)
    # Seconds a replica may use a key's team and status, and a team's model groups, read
    # earlier (every call needs them). Changes made through the same replica apply at once;
    # 0 disables the cache.
    cache_ttl: float = Field(default=1.0, ge=0, le=60)
    # Keys that seal provider credentials pasted into model configs (src/service/encryption.py):
    # comma-separated, the first seals, all open. Unset: literal keys are refused (env references
    # still work). `make run` generates data/encryption_key.
    encryption_key: SecretStr | None = None
    # Extra environment variable names a model config may reference ("os.environ/NAME") besides
    # names ending in _API_KEY, _KEY, _TOKEN or _SECRET (src/service/providers/credentials.py).
    provider_env_names: str = ""
    # Origins a browser app may call the REST API from (Envoy's CORS filter): comma-separated,
    # e.g. "https://app.example.com,http://localhost:3000", or "*" for any. Empty (the default):
    # no CORS answers, browsers refuse cross-origin calls. Read by `make run` / `make run-cluster`
    # when they render envoy.yaml.
    cors_allowed_origins: str = ""
    # RPCs one key (a team's, or the master key) may run at once; beyond it RESOURCE_EXHAUSTED.
    # Keeps MAX_CONCURRENT_RPCS, which counts every RPC, out of any one client's reach.
    max_concurrent_rpcs_per_key: int = Field(default=500, ge=1)
    # Long-lived streams anyone may open without a key (grpc.health.v1 Watch, server
    # reflection), all callers together; beyond it RESOURCE_EXHAUSTED.
    max_public_streams: int = Field(default=100, ge=1)

    # The OpenAI-compatible REST paths (/v1/chat/completions, /v1/models, /v1/embeddings) are
    # served by the service's own HTTP handler, which Envoy routes to (api/service_http.py). Only
    # Envoy needs to reach it: loopback by default. 0 = a free port (`make run` uses 50090).
    direct_http_host: str = "127.0.0.1"
    direct_http_port: int = Field(default=0, ge=0, le=65535)
    # Output tokens a direct call without max_tokens is assumed to produce when its upper-bound
    # cost is reserved from the team's budget (domain/direct.py).
    direct_default_max_tokens: int = Field(default=4096, ge=1, le=1_000_000)

    # Length of a rate-limit window: rpm_limit and tpm_limit count per window (60 = per minute;
    # tests shorten it).
    rate_limit_window_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Limits of a team created without them (DESIGN.md "Operations"; 0 = none). PATCH
    # /api/teams/{team_id}/limits changes a team's.
    default_max_calls_per_job: int = Field(default=100, ge=0, le=1_000_000_000)
    default_max_tokens_per_job: int = Field(default=0, ge=0, le=2_000_000_000)
    default_max_job_cost_usd: float = Field(default=0.0, ge=0, le=1_000_000)

    # Prometheus metrics (service/metrics.py) at GET /metrics on METRICS_PORT, bound to
    # GRPC_HOST. 0 picks a free port (logged in the "listening" line; what the tests use).
    # `make run-cluster` gives replica N the port METRICS_PORT + N - 1.
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    # false: no endpoint and nothing counted (the off side of the overhead measurement).
    metrics_enabled: bool = True
    # OpenTelemetry tracing (service/tracing.py): spans exported over OTLP/gRPC to this
    # endpoint (http://collector:4317). Empty: tracing off, no instrumentation installed. The
    # SDK's own OTEL_* variables (OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_HEADERS, ...) apply.
    otel_exporter_otlp_endpoint: str = ""
    otel_service_name: str = "saas-llm-gateway"

    # Redis (optional, redis://host:port/db): when set, the rate limits count there
    # (service/ratelimit.py) and circuit breaker state and the response cache are shared
    # (service/redis_state.py), on one connection pool, so that they hold across every replica;
    # unset, each process keeps its own. Keys start with REDIS_KEY_PREFIX, so that several
    # deployments (or test runs) can share one Redis. A Redis that fails is skipped (fail open,
    # logged) for REDIS_RETRY_SECONDS (the rate limiter: 1 s) before it is tried again.
    redis_url: str = ""
    redis_key_prefix: str = "gw:"
    redis_timeout_seconds: float = Field(default=0.25, gt=0, le=10)
    redis_retry_seconds: float = Field(default=5.0, ge=0, le=300)
    # Circuit breaker (domain/breaker.py): a model failing BREAKER_FAILURES times in a row (or
    # answering with a Retry-After) is skipped by its groups for BREAKER_COOLDOWN_SECONDS (or the
    # Retry-After, if longer), then tried once again. With Redis, each replica refreshes its view
    # of the shared state every BREAKER_SYNC_SECONDS.
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0, le=3600)
    breaker_sync_seconds: float = Field(default=1.0, gt=0, le=60)
    # The in-process response cache (no Redis): at most this many answers (least recently used
    # dropped first) and this many bytes.
    response_cache_max_entries: int = Field(default=1000, ge=1, le=1_000_000)
    response_cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.cors_allowed_origins.split(",") if o.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
