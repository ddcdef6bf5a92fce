"""Wiring: settings -> database -> repositories -> domain -> servicers ->
grpc.aio server, plus the job sweeper and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from saas_llm.v1 import (
    access_group_service_pb2,
    access_group_service_pb2_grpc,
    credit_service_pb2,
    credit_service_pb2_grpc,
    health_service_pb2,
    health_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
    model_group_service_pb2,
    model_group_service_pb2_grpc,
    openai_service_pb2,
    openai_service_pb2_grpc,
    organization_service_pb2,
    organization_service_pb2_grpc,
    team_service_pb2,
    team_service_pb2_grpc,
)
from service import metrics
from service.api.auth import Authenticator
from service.api.credit_servicer import CreditServicer
from service.api.health_servicer import HealthServicer
from service.api.interceptor import Admission, GatewayInterceptor
from service.api.job_servicer import JobServicer
from service.api.openai_servicer import OpenAIServicer
from service.api.path_bindings import PathBindings
from service.api.reflection import enable_reflection
from service.api.rest_rpcs import job_rest_rpcs
from service.api.service_http import ServiceHttp
from service.api.tenancy_servicers import (
    ModelAccessGroupServicer,
    ModelGroupServicer,
    OrganizationServicer,
    TeamServicer,
)
from service.domain.admission import Admission as CallAdmission
from service.domain.admission import LocalRateLimiter
from service.domain.answers import MAX_SEND_BYTES
from service.domain.breaker import Breakers
from service.domain.credits import CreditsService
from service.domain.direct import DirectService
from service.domain.jobs import JobsService
from service.domain.llm import CallRunner
from service.domain.models import TeamLimits
from service.domain.ports import RateLimiter
from service.domain.response_cache import CacheStore, LocalCacheStore, ResponseCache
from service.domain.tenancy import TenancyService
from service.domain.usage import UsageService
from service.observe import CallObserver, LogObserver
from service.providers import costs
from service.providers.base import Provider
from service.providers.credentials import CredentialPolicy
from service.providers.router import ProviderRouter
from service.ratelimit import RedisRateLimiter
from service.redis_state import RedisBreakers, RedisCacheStore, RedisState
from service.settings import Settings
from service.storage.catalog import CatalogRepository
from service.storage.database import Database
from service.storage.jobs import JobRepository
from service.storage.ledger import LedgerRepository
from service.storage.money import money_for
from service.storage.rows import utcnow
from service.storage.teams import TeamRepository
from service.storage.usage import UsageRepository

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from service.tracing import Tracing

log = logging.getLogger("service")

PROTO_FILES = (
    organization_service_pb2.DESCRIPTOR,
    model_group_service_pb2.DESCRIPTOR,
    team_service_pb2.DESCRIPTOR,
    credit_service_pb2.DESCRIPTOR,
    job_service_pb2.DESCRIPTOR,
    health_service_pb2.DESCRIPTOR,
    access_group_service_pb2.DESCRIPTOR,
)
SERVICE_NAMES = (
    organization_service_pb2.DESCRIPTOR.services_by_name["OrganizationService"].full_name,
    model_group_service_pb2.DESCRIPTOR.services_by_name["ModelGroupService"].full_name,
    team_service_pb2.DESCRIPTOR.services_by_name["TeamService"].full_name,
    credit_service_pb2.DESCRIPTOR.services_by_name["CreditService"].full_name,
    job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    health_service_pb2.DESCRIPTOR.services_by_name["HealthService"].full_name,
    access_group_service_pb2.DESCRIPTOR.services_by_name["ModelAccessGroupService"].full_name,
    openai_service_pb2.DESCRIPTOR.services_by_name["OpenAIService"].full_name,
)


# Seconds the shielded clean-up of RPCs cut at the end of the grace period gets to finish.
SETTLE_TASKS_S = 5.0
# Seconds before the end of the grace period at which open streams are ended.
STREAM_DRAIN_MARGIN_S = 1.0


class App:
    """One service process. `await start()`, then `await stop()`."""

    def __init__(
        self,
        settings: Settings,
        provider: Provider | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.tracing: Tracing | None = None
        if settings.otel_exporter_otlp_endpoint or tracer_provider is not None:
            # Imported only then: with tracing off, nothing of OpenTelemetry is loaded. Before
            # the database, so that the driver instrumentation sees every connection it opens.
            from service import tracing

            self.tracing = tracing.start(settings, tracer_provider)
        self.db = Database.open(settings.database_url, pool_size=settings.db_pool_size)
        key = settings.encryption_key.get_secret_value() if settings.encryption_key else None
        # EncryptionKeyError here (a malformed ENCRYPTION_KEY) stops the start with its message.
        credentials = CredentialPolicy.from_settings(key, settings.provider_env_names)
        self.provider: Provider = provider or ProviderRouter(
            simulate_without_keys=settings.simulate_without_keys, credentials=credentials
        )
        if self.tracing is not None:
            from service.providers.tracing import TracingProvider

            self.provider = TracingProvider(self.provider, self.tracing.tracer)
        observer: CallObserver = (
            metrics.MetricsObserver() if settings.metrics_enabled else LogObserver()
        )
        if settings.metrics_enabled:
            self.db.on_work = metrics.db_statement
        money = money_for(self.db)
        catalog = CatalogRepository(self.db)
        teams = TeamRepository(self.db, money, cache_ttl=settings.cache_ttl)
        ledger = LedgerRepository(self.db, money)
        self.jobs_repo = JobRepository(self.db, money)
        self.tenancy = tenancy = TenancyService(
            catalog,
            teams,
            credentials,
            default_limits=TeamLimits(
                max_calls_per_job=settings.default_max_calls_per_job,
                max_tokens_per_job=settings.default_max_tokens_per_job,
                max_job_cost_usd=settings.default_max_job_cost_usd,
            ),
        )
        usage = UsageService(UsageRepository(self.db), teams, catalog)
        self.credits = credits = CreditsService(ledger, ledger)
        # Rate limits, circuit breakers and the response cache: shared by every replica through
        # Redis (one connection pool) when REDIS_URL is set, else kept by this process.
        self.redis: RedisState | None = None
        shared_breakers: RedisBreakers | None = None
        cache_store: CacheStore = LocalCacheStore(
            settings.response_cache_max_entries, settings.response_cache_max_bytes
        )
        self.limiter: RateLimiter = LocalRateLimiter(settings.rate_limit_window_seconds)
        if settings.redis_url:
            self.redis = RedisState(
                settings.redis_url,
                settings.redis_key_prefix,
                timeout=settings.redis_timeout_seconds,
                retry_after=settings.redis_retry_seconds,
            )
            shared_breakers = RedisBreakers(self.redis)
            cache_store = RedisCacheStore(self.redis)
            self.limiter = RedisRateLimiter(
                self.redis.client,
                prefix=settings.redis_key_prefix,
                window_seconds=settings.rate_limit_window_seconds,
            )
        self.breakers = Breakers(
            failures=settings.breaker_failures,
            cooldown=settings.breaker_cooldown_seconds,
            shared=shared_breakers,
            observer=observer,
            sync_interval=settings.breaker_sync_seconds,
        )
        self.response_cache = ResponseCache(cache_store, teams, observer)
        runner = CallRunner(
            self.provider,
            settings.default_llm_timeout,
            observer,
            breakers=self.breakers,
            cache=self.response_cache,
        )
        call_admission = CallAdmission(
            teams,
            self.jobs_repo,
            self.limiter,
            metrics.refused if settings.metrics_enabled else None,  # type: ignore[arg-type]
        )
        self.jobs = JobsService(
            self.jobs_repo, teams, catalog, ledger, runner, observer, call_admission
        )
        self.ledger = ledger
        self.direct = DirectService(
            teams,
            ledger,
            runner,
            self.jobs.draining,
            default_max_tokens=settings.direct_default_max_tokens,
            observer=observer,
            admission=call_admission,
        )
        master = settings.master_key.get_secret_value() if settings.master_key else None
        self.health = HealthServicer(self.db, self.breakers)
        self.grpc_health = health_aio.HealthServicer()
        max_bytes = settings.max_message_bytes
        authenticator = Authenticator(master, teams)
        admission = Admission(
            per_key=settings.max_concurrent_rpcs_per_key,
            public_streams=settings.max_public_streams,
            http_requests=settings.max_concurrent_rpcs,
        )
        on_rpc = metrics.RpcMetrics() if settings.metrics_enabled else None
        paths = PathBindings(PROTO_FILES)
        jobs_servicer = JobServicer(self.jobs)
        self.service_http = ServiceHttp(
            self.direct,
            authenticator,
            admission,
            on_rpc,
            rest=job_rest_rpcs(jobs_servicer, paths),
            span=self.tracing.server_span if self.tracing is not None else None,
        )
        self.interceptor = GatewayInterceptor(
            authenticator, admission=admission, paths=paths, on_rpc=on_rpc
        )
        self.server = grpc.aio.server(
            interceptors=[
                *(self.tracing.interceptors if self.tracing is not None else ()),
                self.interceptor,
            ],
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                # Answers carry at most MAX_ANSWER_CHARS of provider text (4 bytes each at most
                # in UTF-8): always below this limit, whatever MAX_MESSAGE_BYTES is.
                ("grpc.max_send_message_length", max(16 * max_bytes, MAX_SEND_BYTES)),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        s = self.server
        organization_service_pb2_grpc.add_OrganizationServiceServicer_to_server(
            OrganizationServicer(tenancy, usage), s
        )
        model_group_service_pb2_grpc.add_ModelGroupServiceServicer_to_server(
            ModelGroupServicer(tenancy), s
        )
        access_group_service_pb2_grpc.add_ModelAccessGroupServiceServicer_to_server(
            ModelAccessGroupServicer(tenancy), s
        )
        team_service_pb2_grpc.add_TeamServiceServicer_to_server(TeamServicer(tenancy, usage), s)
        credit_service_pb2_grpc.add_CreditServiceServicer_to_server(CreditServicer(credits), s)
        job_service_pb2_grpc.add_JobServiceServicer_to_server(jobs_servicer, s)
        openai_service_pb2_grpc.add_OpenAIServiceServicer_to_server(OpenAIServicer(self.direct), s)
        health_service_pb2_grpc.add_HealthServiceServicer_to_server(self.health, s)
        health_pb2_grpc.add_HealthServicer_to_server(self.grpc_health, s)
        enable_reflection(
            s, (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        )
        self.port = 0
        self.direct_http_port = 0
        self.metrics_server: metrics.MetricsServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> int:
        # Preload the price map so that the first call pays nothing.
        await asyncio.to_thread(costs.warm)
        # A wrong or missing ENCRYPTION_KEY stops the start here rather than failing every call
        # that uses a pasted key (EncryptionKeyError, reported by `python -m service serve`).
        await self.tenancy.verify_stored_credentials()
        addr = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        self.port = self.server.add_insecure_port(addr)
        if self.port == 0:
            raise RuntimeError(f"cannot bind {addr}")
        await self.server.start()
        self.direct_http_port = await self.service_http.start(
            self.settings.direct_http_host, self.settings.direct_http_port
        )
        if self.settings.metrics_enabled:
            self.metrics_server = metrics.MetricsServer(
                self.settings.grpc_host, self.settings.metrics_port
            )
        for name in ("", *SERVICE_NAMES):
            await self.grpc_health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="job-sweeper")
        self.breakers.start()
        log.info(
            "listening",
            extra={
                "grpc_port": self.port,
                "direct_http_port": self.direct_http_port,
                "metrics_port": self.metrics_server.port if self.metrics_server else None,
                "tracing": self.tracing is not None,
                "database": self.db.dialect.name,
            },
        )
        return self.port

    async def sweep_once(self) -> int:
        cutoff = utcnow() - timedelta(seconds=self.settings.job_timeout)
        n = await self.jobs_repo.expire_stale_jobs(cutoff)
        if n:
            log.info("expired stale jobs", extra={"expired": n})
        # Direct calls in flight that long belong to a replica that stopped: their reservations
        # are released.
        d = await self.ledger.expire_direct_calls(cutoff)
        if d:
            log.info("expired direct calls", extra={"expired": d})
        if self.settings.metrics_enabled:
            # The open-jobs gauges: one aggregate query per sweep rather than work per request.
            metrics.open_jobs(*await self.jobs_repo.open_totals())
        return n + d

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job sweeper failed; retrying")
            await asyncio.sleep(self.settings.sweeper_interval)

    async def _stop_http(self, grace: float) -> None:
        # aiohttp's cleanup waits for the handlers in flight (their streams end with the drain
        # at the end of the grace period at the latest).
        try:
            async with asyncio.timeout(grace + SETTLE_TASKS_S):
                await self.service_http.stop()
        except TimeoutError:
            log.warning("OpenAI-compatible HTTP handler did not stop in time")

    async def stop(self, grace: float | None = None, *, settle_tasks: float = 0.0) -> None:
        """Refuse new work (health NOT_SERVING), let in-flight RPCs finish
        within the grace period, then release everything.

        RPCs still running when the grace period ends are cancelled; the work
        they shield from cancellation (recording the call, settling a
        create-and-call job) goes on in tasks of its own that need the
        database. With `settle_tasks` (seconds; the process's own event loop
        only, as in `serve`), every other task of the loop gets that long to
        finish before the database is closed."""
        self.health.shutting_down = True
        await self.grpc_health.enter_graceful_shutdown()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        grace = self.settings.shutdown_grace if grace is None else grace
        # Streams still open near the end of the grace period end with a final error event, so
        # that a client can tell a cut stream from a finished one.
        drain = asyncio.get_running_loop().call_later(
            max(grace - STREAM_DRAIN_MARGIN_S, grace / 2), self.jobs.draining.set
        )
        # The HTTP handler's streams are ended by the same drain; its server closes after them.
        await asyncio.gather(self.server.stop(grace), self._stop_http(grace))
        drain.cancel()
        self.jobs.draining.set()
        if settle_tasks > 0:
            me = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            if pending:
                _done, late = await asyncio.wait(pending, timeout=settle_tasks)
                if late:
                    log.warning("tasks still running at shutdown", extra={"tasks": len(late)})
        await self.breakers.stop()
        await self.provider.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        if self.tracing is not None:
            self.tracing.shutdown()


async def serve(settings: Settings) -> None:
    app = App(settings)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_s": settings.shutdown_grace})
    await app.stop(settle_tasks=SETTLE_TASKS_S)
    log.info("stopped")
