"""Structured JSON logs on stderr. Never log keys, provider secrets or
prompt text: callers pass only ids, codes and timings."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter (and LiteLLM's request dumps, which may hold
    # prompts) stays out of our logs. At DEBUG, aiosqlite logs every SQL
    # statement with its parameters (metadata, stored answers) and the OpenAI
    # SDK and HTTP libraries log request bodies and headers.
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
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
