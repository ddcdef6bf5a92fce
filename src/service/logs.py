"""Structured JSON logs on stderr, one object per line, rendered by structlog.

The service logs through the standard library (`logging.getLogger(...)`, fields as `extra=`);
structlog's ProcessorFormatter renders every record, ours and third-party ones alike, and
`structlog.get_logger()` works too (configured to go through the same handler). Every line
written while a request runs carries its `request_id`, `principal` (admin or team) and
`team_id`, read from the request's context variables (service/api/context.py), and, when
tracing is on, the `trace_id` and `span_id` of the current span.

Never log keys, provider secrets or prompt text: callers pass only ids, codes and timings.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import orjson
import structlog

from service.api import context

EventDict = MutableMapping[str, Any]

# Set by enable_trace_ids() when tracing is on: (trace_id, span_id) of the current span, or None.
_current_ids: Callable[[], tuple[str, str] | None] | None = None


def _request_context(_logger: Any, _method: str, event: EventDict) -> EventDict:
    rid = context.request_id_var.get(None)
    if rid is not None:
        event.setdefault("request_id", rid)
        who = context.principal_var.get(None)
        if who is not None:
            if who.is_admin:
                event.setdefault("principal", "admin")
            elif who.team_id:
                event.setdefault("principal", "team")
                event.setdefault("team_id", who.team_id)
            else:
                event.setdefault("principal", "anonymous")
    return event


def _trace_context(_logger: Any, _method: str, event: EventDict) -> EventDict:
    if _current_ids is not None:
        ids = _current_ids()
        if ids is not None:
            event["trace_id"], event["span_id"] = ids
    return event


def enable_trace_ids(current_ids: Callable[[], tuple[str, str] | None] | None) -> None:
    """Add the current span's ids to every line (None: stop). Called by service/tracing.py."""
    global _current_ids
    _current_ids = current_ids


def _dumps(obj: Any, **_kw: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


# Run on every record, from the standard library or from structlog.
_PRE_CHAIN: list[Any] = [
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    _request_context,
    _trace_context,
]


class JsonFormatter(structlog.stdlib.ProcessorFormatter):
    """A logging.Formatter writing the service's JSON line (keys: ts, level, logger, msg, the
    record's extra fields, the request and trace context, exception)."""

    def __init__(self) -> None:
        super().__init__(
            foreign_pre_chain=_PRE_CHAIN,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.EventRenamer("msg"),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ],
        )


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *(p for p in _PRE_CHAIN if not isinstance(p, structlog.stdlib.ExtraAdder)),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # Third-party chatter (and LiteLLM's request dumps, which may hold
    # prompts) stays out of our logs. At DEBUG, aiosqlite logs every SQL
    # statement with its parameters (metadata, stored answers) and the OpenAI
    # SDK and HTTP libraries log request bodies and headers. OpenTelemetry's
    # exporters log the spans they fail to send.
    for noisy in (
        "LiteLLM",
        "litellm",
        "httpx",
        "httpcore",
        "hpack",
        "openai",
        "aiosqlite",
        "aiohttp.access",
        "alembic",
        "opentelemetry",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
