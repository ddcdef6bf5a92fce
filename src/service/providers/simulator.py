"""A deterministic, network-free LLM for `simulator/<name>` models, so that
`make run`, the tests and the benchmarks need no API key.

Model config keys (all optional):
- `latency_ms` (default 0): time before the first token.
- `tokens_per_second` (default 0 = instant): generation speed.
- `failure_rate` (0..1, default 0): share of calls that fail. Deterministic:
  each model name has its own `random.Random` seeded with `"<seed>:<model>"`
  (`seed` config, default 0), drawn once per call; so the Nth call to a model
  fails or not the same way in every run, whatever the messages.
- `fail_with` (default 500 when failure_rate triggers): an HTTP status
  (429, 500, 503, 400, ...), `"timeout"` or `"connection"`. With
  failure_rate 1 (the default when `fail_with` is set and `failure_rate` is
  not) every call fails, handy for testing fallbacks. The failure happens
  after `latency_ms`, like a real upstream.
- `response`: fixed answer text. Default: "Simulated response to: " + the
  first 200 characters of the last user message.
- `completion_tokens`: emit exactly this many tokens (the answer's words are
  cycled or cut).
- `seed`: see failure_rate.

Request params honoured: `max_tokens`/`max_completion_tokens` (cut, with
finish_reason "length"), `tools` + `tool_choice` "required" or a named
function (a deterministic tool call, finish_reason "tool_calls"), and
`response_format` json_object/json_schema (a valid JSON object, built from
the schema's required properties). Tokens are whitespace-separated words.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson

from service.providers._common import (
    embedding_usage_estimate,
    is_retryable_status,
    timeout_error,
)
from service.providers.base import (
    ChatRequest,
    ChatResult,
    Choice,
    EmbeddingResult,
    ModelSpec,
    ProviderError,
    StreamChunk,
    TokenUsage,
)

SIMULATOR_PREFIX = "simulator/"
# A token is a run of non-space characters with the whitespace before it, so
# joining the tokens gives back the text.
_TOKEN_RE = re.compile(r"\s*\S+")
_WORD_RE = re.compile(r"\S+")
_MAX_ECHO = 200


class _Plan:
    """What one simulated call will produce."""

    __slots__ = ("finish_reason", "prompt_tokens", "stream_tool_calls", "tokens", "tool_calls")

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.stream_tool_calls: list[dict[str, Any]] = []
        self.finish_reason = "stop"
        self.prompt_tokens = 0


class SimulatorProvider:
    def __init__(self) -> None:
        self._rngs: dict[str, random.Random] = {}

    def _should_fail(self, model: ModelSpec) -> bool:
        config = model.config
        rate = config.get("failure_rate")
        if rate is None:
            rate = 1.0 if config.get("fail_with") is not None else 0.0
        rate = float(rate)
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        rng = self._rngs.get(model.model_name)
        if rng is None:
            rng = random.Random(f"{config.get('seed', 0)}:{model.model_name}")
            self._rngs[model.model_name] = rng
        return rng.random() < rate

    async def _start(
        self,
        model: ModelSpec,
        timeout: float,
        generation_s: float,
    ) -> float:
        """Sleep the configured latency (bounded by `timeout`), fail if
        configured to, and return the loop time generation starts at.

        `generation_s` is the time after the first token that must also fit
        in the timeout (the whole answer for complete, 0 for stream, whose
        later tokens are bounded by the caller's deadline like a real one).
        """
        if timeout <= 0:
            raise timeout_error()
        latency = float(model.config.get("latency_ms") or 0) / 1000.0
        fail = self._should_fail(model)
        if latency + generation_s > timeout:
            await asyncio.sleep(timeout)
            raise timeout_error()
        if latency > 0:
            await asyncio.sleep(latency)
        if fail:
            raise _configured_error(model.config.get("fail_with", 500))
        return asyncio.get_running_loop().time()

    async def complete(
        self,
        model: ModelSpec,
        request: ChatRequest,
        timeout: float,
    ) -> ChatResult:
        plan = _plan(model, request)
        tps = float(model.config.get("tokens_per_second") or 0)
        generation_s = len(plan.tokens) / tps if tps > 0 else 0.0
        await self._start(model, timeout, generation_s)
        if generation_s > 0:
            await asyncio.sleep(generation_s)
        content = "".join(plan.tokens)
        # `n` > 1: the same deterministic answer n times (usage counts each).
        n = request.params.get("n")
        more = max(0, min(int(n), 16) - 1) if isinstance(n, int) else 0
        return ChatResult(
            content=content,
            finish_reason=plan.finish_reason,
            usage=TokenUsage(plan.prompt_tokens, _completion_tokens(plan) * (more + 1)),
            tool_calls=plan.tool_calls,
            more_choices=tuple(
                Choice(content, plan.finish_reason, plan.tool_calls) for _ in range(more)
            ),
        )

    async def embed(
        self, model: ModelSpec, inputs: Any, params: Mapping[str, Any], timeout: float
    ) -> EmbeddingResult:
        """A unit vector per input, derived from its SHA-256 (`dimensions`, default 16)."""
        await self._start(model, timeout, 0.0)
        items = (
            inputs
            if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int)
            else [inputs]
        )
        dims = params.get("dimensions")
        size = dims if isinstance(dims, int) and 1 <= dims <= 4096 else 16
        vectors = []
        for item in items:
            seed = hashlib.sha256(orjson.dumps(item)).digest()
            rng = random.Random(seed)
            raw = [rng.uniform(-1.0, 1.0) for _ in range(size)]
            norm = sum(x * x for x in raw) ** 0.5 or 1.0
            vectors.append([x / norm for x in raw])
        return EmbeddingResult(vectors=vectors, usage=embedding_usage_estimate(inputs))

    async def stream(
        self,
        model: ModelSpec,
        request: ChatRequest,
        timeout: float,
    ) -> AsyncGenerator[StreamChunk, None]:
        plan = _plan(model, request)
        tps = float(model.config.get("tokens_per_second") or 0)
        start = await self._start(model, timeout, 0.0)
        loop = asyncio.get_running_loop()
        if plan.stream_tool_calls:
            yield StreamChunk(tool_calls=plan.stream_tool_calls)
        for i, token in enumerate(plan.tokens):
            if tps > 0 and i > 0:
                # Sleep to a schedule, not a fixed gap, so overhead does not
                # accumulate: token i is due at start + i / tps.
                delay = start + i / tps - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            yield StreamChunk(content=token)
        yield StreamChunk(
            finish_reason=plan.finish_reason,
            usage=TokenUsage(plan.prompt_tokens, _completion_tokens(plan)),
        )

    async def aclose(self) -> None:
        """Nothing pooled; present for the protocol."""


def _configured_error(fail_with: Any) -> ProviderError:
    kind = str(fail_with).strip().lower()
    if kind == "timeout":
        return timeout_error()
    if kind == "connection":
        return ProviderError("Could not connect to the provider", retryable=True)
    try:
        status = int(kind)
    except ValueError:
        status = 500
    if status == 429:
        message = "Rate limit exceeded (simulated)"
    else:
        message = f"Simulated provider error (HTTP {status})"
    return ProviderError(message, retryable=is_retryable_status(status), status=status)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(_WORD_RE.findall(_text_of(m.get("content")))) for m in messages)


def _default_answer(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return "Simulated response to: " + _text_of(message.get("content"))[:_MAX_ECHO]
    return "Simulated response."


def _chosen_tool(params: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The function to call when the request forces a tool call."""
    tools = params.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = params.get("tool_choice")
    functions: list[Mapping[str, Any]] = [
        t["function"]
        for t in tools
        if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
    ]
    if not functions:
        return None
    if choice == "required":
        return functions[0]
    if isinstance(choice, Mapping):
        wanted = (choice.get("function") or {}).get("name")
        for function in functions:
            if function.get("name") == wanted:
                return function
        return {"name": wanted} if wanted else None
    return None


def _from_schema(schema: Any, depth: int = 0) -> Any:
    """A value that satisfies the simple parts of a JSON schema: required
    properties, basic types and enums. Best effort, never raises."""
    if not isinstance(schema, Mapping) or depth > 8:
        return {}
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "string":
        return "simulated"
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "null":
        return None
    properties = schema.get("properties")
    required = schema.get("required")
    if not isinstance(properties, Mapping) or not isinstance(required, list):
        return {}
    return {
        name: _from_schema(properties.get(name), depth + 1)
        for name in required
        if isinstance(name, str)
    }


def _json_answer(response_format: Any) -> str | None:
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "{}"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        value = _from_schema(schema) if schema is not None else {}
        return orjson.dumps(value).decode()
    return None


def _plan(model: ModelSpec, request: ChatRequest) -> _Plan:
    config = model.config
    params = request.params
    plan = _Plan()
    plan.prompt_tokens = _prompt_tokens(request.messages)

    tool = _chosen_tool(params)
    if tool is not None:
        name = str(tool.get("name") or "tool")
        arguments = orjson.dumps(_from_schema(tool.get("parameters"))).decode()
        digest = hashlib.blake2b(
            orjson.dumps([model.model_name, request.messages, name]), digest_size=8
        ).hexdigest()
        call_id = f"call_sim_{digest}"
        function = {"name": name, "arguments": arguments}
        plan.tool_calls = [{"id": call_id, "type": "function", "function": function}]
        plan.stream_tool_calls = [
            {"index": 0, "id": call_id, "type": "function", "function": function}
        ]
        plan.finish_reason = "tool_calls"
        return plan

    text = config.get("response")
    if text is None:
        text = _json_answer(params.get("response_format"))
    if text is None:
        text = _default_answer(request.messages)
    tokens = _TOKEN_RE.findall(str(text))

    wanted = config.get("completion_tokens")
    if wanted is not None:
        count = max(0, int(wanted))
        base = len(tokens)
        if base and count > base:
            # Cycle the words; a repeated first word needs a separating space.
            tokens = [tokens[i % base] for i in range(count)]
            for i in range(base, count, base):
                tokens[i] = " " + tokens[i].lstrip()
        else:
            tokens = tokens[:count]

    limit = params.get("max_completion_tokens", params.get("max_tokens"))
    if isinstance(limit, int) and 0 < limit < len(tokens):
        tokens = tokens[:limit]
        plan.finish_reason = "length"
    plan.tokens = tokens
    return plan


def _completion_tokens(plan: _Plan) -> int:
    if plan.tool_calls:
        function = plan.tool_calls[0]["function"]
        return 1 + len(_WORD_RE.findall(function["arguments"]))
    return len(plan.tokens)
