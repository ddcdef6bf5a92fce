"""What the gateway accepts from a provider: a provider is untrusted input too.

The rule, applied by CallRunner (domain/llm.py) to every answer of every backend: an answer that
fails these checks is a failed attempt, a retryable ProviderError, so the next model of the group
is tried, nothing is charged for it, and the attempt is recorded. A stream that fails them after
its first chunk ends as a failed call (recorded, not charged).

- Types: `content` and `finish_reason` are strings, `tool_calls` a list of JSON objects, token
  counts integers.
- Usage: each of prompt and completion tokens between 0 and MAX_USAGE_TOKENS, so that a call's
  total fits the int32 of the contract and of the database columns.
- Size: the answer's text (content, plus the JSON of its tool calls) at most MAX_ANSWER_CHARS,
  far below the gRPC send limit and Envoy's response buffer, for a unary answer and for the whole
  of a stream.
- No NUL character (PostgreSQL cannot store it; a create-and-call keeps its answer in the job
  row), tool calls nested at most MAX_JSON_DEPTH levels (like any JSON the gateway stores).

Error texts: `error_text` is what is kept of a provider's error message, in the call's record and
in the answer to the client: control characters dropped, anything that looks like a credential
(a long run of key-like characters: the key itself, altered, or base64-encoded) and any echo of
the request's messages replaced, and at most MAX_ERROR_CHARS characters.

The checks are a few type tests per answer or chunk (no model objects): the per-chunk cost is
measured in docs/decisions.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from service.domain import validation as v
from service.domain.errors import InvalidArgument
from service.providers.base import (
    ChatRequest,
    ChatResult,
    Choice,
    EmbeddingResult,
    ProviderError,
    StreamChunk,
    TokenUsage,
)

# Characters of answer text (content plus tool-call JSON) one call may return: about 500k
# tokens. At most 8 MiB in UTF-8, half the gRPC send limit (MAX_SEND_BYTES).
MAX_ANSWER_CHARS = 2 * 1024 * 1024
# The gRPC server's send limit never goes below this (server.py).
MAX_SEND_BYTES = 16 * 1024 * 1024
# Prompt or completion tokens of one call: 2 * MAX_USAGE_TOKENS < 2**31.
MAX_USAGE_TOKENS = 1_000_000_000
MAX_ERROR_CHARS = 300
_FINISH_REASON = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
# A credential-like token: 20+ characters of the alphabets keys, base64 and JWTs use, mixing
# letters with digits or both cases (words, error codes like context_length_exceeded and
# lower-case paths do not).
_SECRET_LIKE = re.compile(r"[A-Za-z0-9+/=_\-.~]{20,}")
_DIGIT = re.compile(r"[0-9]")
_LOWER = re.compile(r"[a-z]")
_UPPER = re.compile(r"[A-Z]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An echo of the prompt: consecutive words of the error, this many characters together, found
# as they are in the request's messages.
_ECHO_CHARS = 12
_PUNCTUATION = "'\"`.,:;()[]{}"
_REDACTED = "[redacted]"


def _invalid(why: str) -> ProviderError:
    return ProviderError(f"Provider sent an invalid answer: {why}", retryable=True)


def _too_large() -> ProviderError:
    return ProviderError(
        f"Provider answer exceeds {MAX_ANSWER_CHARS} characters", retryable=True, status=None
    )


def _check_usage(usage: Any) -> None:
    if not isinstance(usage, TokenUsage):
        raise _invalid("usage is not a token count")
    for n in (usage.prompt_tokens, usage.completion_tokens):
        if type(n) is not int:
            raise _invalid("token counts are not integers")
        if not 0 <= n <= MAX_USAGE_TOKENS:
            raise _invalid(f"token counts must be between 0 and {MAX_USAGE_TOKENS}")


def _tool_calls_size(tool_calls: Any) -> int:
    """Characters of the tool calls' JSON, after checking they are JSON objects without NUL,
    nested at most MAX_JSON_DEPTH levels."""
    if type(tool_calls) is not list or not all(type(t) is dict for t in tool_calls):
        raise _invalid("tool_calls is not a list of objects")
    try:
        v.json_value(tool_calls, "tool_calls")
        return len(orjson.dumps(tool_calls))
    except (InvalidArgument, TypeError) as exc:
        raise _invalid("tool_calls holds a NUL, nests too deep or is not JSON") from exc


def _check_text(content: Any, finish_reason: Any) -> None:
    if type(content) is not str:
        raise _invalid("content is not a string")
    if "\x00" in content:
        raise _invalid("content contains a NUL character")
    if finish_reason is not None and (
        type(finish_reason) is not str or not _FINISH_REASON.fullmatch(finish_reason)
    ):
        raise _invalid("finish_reason is not a short identifier")


def check_result(result: ChatResult) -> ChatResult:
    """`result` if it is a valid answer, else a retryable ProviderError."""
    size = 0
    choices: list[ChatResult | Choice] = [result, *result.more_choices]
    for choice in choices:
        _check_text(choice.content, choice.finish_reason)
        size += len(choice.content)
        if choice.tool_calls:
            size += _tool_calls_size(choice.tool_calls)
    if size > MAX_ANSWER_CHARS:
        raise _too_large()
    _check_usage(result.usage)
    return result


def check_embeddings(result: EmbeddingResult, inputs: int) -> EmbeddingResult:
    """`result` if it holds one finite vector of numbers per input (at most MAX_ANSWER_CHARS
    numbers in all), else a retryable ProviderError."""
    vectors = result.vectors
    if type(vectors) is not list or len(vectors) != inputs:
        raise _invalid(f"expected {inputs} embedding vectors")
    size = 0
    for vector in vectors:
        if type(vector) is not list or not all(
            type(x) is float and math.isfinite(x) for x in vector
        ):
            raise _invalid("an embedding is not a list of finite numbers")
        size += len(vector)
    if size > MAX_ANSWER_CHARS:
        raise _too_large()
    _check_usage(result.usage)
    return result


async def checked_stream(
    stream: AsyncIterator[StreamChunk], request: ChatRequest
) -> AsyncIterator[StreamChunk]:
    """`stream` with every chunk checked (and the stream's total size bounded): a chunk that
    fails ends it with a retryable ProviderError; the provider's own errors come out with their
    text made safe (error_text). Closing this closes `stream`."""
    size = 0
    try:
        async for chunk in stream:
            _check_text(chunk.content, chunk.finish_reason)
            size += len(chunk.content)
            if chunk.tool_calls is not None:
                size += _tool_calls_size(chunk.tool_calls)
            if size > MAX_ANSWER_CHARS:
                raise _too_large()
            if chunk.usage is not None:
                _check_usage(chunk.usage)
            yield chunk
    except ProviderError as exc:
        raise safe_error(exc, request) from exc
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            # Best effort: the upstream is gone either way.
            with contextlib.suppress(Exception):
                await asyncio.shield(aclose())


def safe_error(exc: ProviderError, request: ChatRequest) -> ProviderError:
    """`exc` with its message made safe to record and return (error_text)."""
    text = error_text(exc.message, request)
    if text == exc.message:
        return exc
    return ProviderError(text, retryable=exc.retryable, status=exc.status)


def error_text(message: str, request: ChatRequest) -> str:
    """A provider's error message as the gateway keeps it (see the module docstring)."""
    words = _CONTROL.sub(" ", message[: 4 * MAX_ERROR_CHARS]).split()
    words = [_REDACTED if _secret_like(w) else w for w in words]
    words = _without_echoes(words, _prompt_text(request))
    text = " ".join(words)
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return text


def _secret_like(word: str) -> bool:
    for run in _SECRET_LIKE.findall(word):
        lower, upper = _LOWER.search(run), _UPPER.search(run)
        if (lower or upper) and (_DIGIT.search(run) or (lower and upper)):
            return True
    return False


def _prompt_text(request: ChatRequest) -> str:
    """The text of the request's messages, whitespace collapsed as in error_text."""
    parts: list[str] = []
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, dict) and "text" in p)
    return " ".join(" ".join(str(p) for p in parts).split())


def _without_echoes(words: list[str], prompt: str) -> list[str]:
    """`words` with every echo of `prompt` replaced by one _REDACTED: each longest run of
    consecutive words found in the prompt (quotes and punctuation at its ends aside) that is at
    least _ECHO_CHARS characters long. One substring search per word."""
    if not prompt:
        return words
    out: list[str] = []
    i, n = 0, len(words)
    while i < n:
        j = i
        while j < n and " ".join(words[i : j + 1]).strip(_PUNCTUATION) in prompt:
            j += 1
        if j > i and len(" ".join(words[i:j]).strip(_PUNCTUATION)) >= _ECHO_CHARS:
            if not out or out[-1] != _REDACTED:
                out.append(_REDACTED)
            i = j
        else:
            out.append(words[i])
            i += 1
    return out
