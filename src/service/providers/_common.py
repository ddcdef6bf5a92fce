"""Small helpers shared by the providers: key resolution, error building and
token estimation. Nothing here imports LiteLLM or does I/O."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from service.providers.base import ProviderError, TokenUsage
from service.providers.credentials import ENV_PREFIX as ENV_REFERENCE
from service.providers.credentials import read_env_reference

ENV_PREFIX = ENV_REFERENCE
# Upstream error texts are echoed into attempt records; keep them short.
MAX_UPSTREAM_MESSAGE = 300
# The usual rule of thumb for English text and BPE tokenizers.
CHARS_PER_TOKEN = 4


def resolve_api_key(config: Mapping[str, Any], default_env: str | None = None) -> str | None:
    """The API key of a model, read at call time so a rotated env var is
    picked up without a restart.

    `api_key` is `"os.environ/NAME"` (NAME checked by providers/credentials.py) or a
    literal key (a pasted key arrives here already opened by the router). When absent,
    `default_env` (e.g. OPENAI_API_KEY) is used if given, else there is no key (local
    vLLM/Ollama servers need none).
    """
    raw = config.get("api_key")
    if raw is None or raw == "":
        if default_env is None:
            return None
        raw = ENV_PREFIX + default_env
    raw = str(raw)
    if raw.startswith(ENV_PREFIX):
        return read_env_reference(raw[len(ENV_PREFIX) :])
    return raw


def is_retryable_status(status: int) -> bool:
    """408/409/429 and 5xx may succeed elsewhere or later; other 4xx fail the
    same way on every model of the group."""
    return status in (408, 409, 429) or status >= 500


def clean_message(message: str, secret: str | None) -> str:
    """Truncate an upstream message and make sure it never carries the key."""
    message = " ".join(message.split())
    if secret and len(secret) >= 4:
        message = message.replace(secret, "***")
    if len(message) > MAX_UPSTREAM_MESSAGE:
        message = message[: MAX_UPSTREAM_MESSAGE - 3] + "..."
    return message


# The longest Retry-After honoured: a provider (or a proxy in front of it) cannot keep a model out
# of its groups for longer than this.
MAX_RETRY_AFTER_S = 3600.0


def parse_retry_after(value: bytes | str | None) -> float | None:
    """Seconds of a Retry-After header: delta-seconds ("30", "1.5") or an HTTP date; None when
    absent, unreadable or not in the future. Capped at MAX_RETRY_AFTER_S."""
    if not value:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


def http_error(
    status: int,
    upstream_message: str | None,
    secret: str | None,
    retry_after: float | None = None,
) -> ProviderError:
    """A ProviderError for an HTTP error answer, with a short human message. `retry_after`
    (seconds, from the answer's Retry-After) is kept on 429 and 503 answers."""
    if status in (401, 403, 407):
        # The operator's provider credentials, not the tenant's request, are
        # wrong: say so without echoing the provider's text (it may quote a
        # masked key), and let the next model of the group try.
        return ProviderError(
            f"Provider authentication failed (HTTP {status}); check the model's api_key",
            retryable=True,
            status=status,
        )
    if status == 429:
        base = "Rate limit exceeded"
    elif status == 408:
        base = "Provider timed out"
    elif status >= 500:
        base = f"Provider error (HTTP {status})"
    else:
        base = f"Provider rejected the request (HTTP {status})"
    if upstream_message:
        base = f"{base}: {clean_message(upstream_message, secret)}"
    return ProviderError(
        base,
        retryable=is_retryable_status(status),
        status=status,
        retry_after=retry_after if status in (429, 503) else None,
    )


def timeout_error() -> ProviderError:
    return ProviderError("Request timed out", retryable=True)


def connection_error() -> ProviderError:
    return ProviderError("Could not connect to the provider", retryable=True)


def estimate_tokens_from_chars(chars: int) -> int:
    return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def message_chars(messages: Iterable[Mapping[str, Any]]) -> int:
    """Characters of text in chat messages: string contents, the text parts
    of multi-part contents, and tool-call arguments."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping):
                    text = part.get("text")
                    if isinstance(text, str):
                        total += len(text)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            total += tool_call_chars(tool_calls)
    return total


def tool_call_chars(tool_calls: Iterable[Any]) -> int:
    total = 0
    for call in tool_calls:
        if isinstance(call, Mapping):
            function = call.get("function")
            if isinstance(function, Mapping):
                total += len(str(function.get("name") or ""))
                total += len(str(function.get("arguments") or ""))
    return total


def estimate_usage(messages: Iterable[Mapping[str, Any]], output_chars: int) -> TokenUsage:
    """Usage when the provider reported none (~4 characters per token)."""
    return TokenUsage(
        prompt_tokens=estimate_tokens_from_chars(message_chars(messages)),
        completion_tokens=estimate_tokens_from_chars(output_chars),
        estimated=True,
    )


def embedding_usage_estimate(inputs: Any) -> TokenUsage:
    """Usage of an embeddings request whose provider reported none: ~4 characters per token
    for text, one token per element of a token array."""
    items = inputs if isinstance(inputs, list) else [inputs]
    tokens = 0
    for item in items:
        if isinstance(item, str):
            tokens += estimate_tokens_from_chars(len(item))
        elif isinstance(item, list):
            tokens += len(item)
        elif isinstance(item, int):
            tokens += 1
    return TokenUsage(prompt_tokens=max(tokens, 1), completion_tokens=0, estimated=True)


def parse_usage(raw: Any) -> TokenUsage | None:
    """OpenAI-style `usage` object → TokenUsage, or None if absent/invalid."""
    if not isinstance(raw, Mapping):
        return None
    prompt = raw.get("prompt_tokens")
    completion = raw.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return TokenUsage(prompt_tokens=prompt, completion_tokens=completion)
