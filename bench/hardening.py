"""CPU of issue 21's checks on the call path, in process (no Envoy, no network): what each adds
per call or per stream chunk. `python -m bench.hardening`; docs/decisions.md cites its output.

- answer check: domain/answers.check_result on a typical answer (200 characters, usage).
- stream chunk: one chunk through answers.checked_stream, minus the same chunk through a bare
  async generator (the per-chunk cost a stream now pays).
- call input: domain/jobs.validate_call on a 3-message call (role checks before, json_value on
  each message now) minus the same without json_value.
- admission: Admission.admit + release of one key.
- path check: path_bindings.Route.check of one transcoded path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from saas_llm.v1 import job_service_pb2 as pb
from service.api.interceptor import Admission
from service.api.path_bindings import PathBindings
from service.domain import jobs as domain_jobs
from service.domain.answers import check_result, checked_stream
from service.domain.jobs import CallInput, validate_call
from service.domain.principal import Principal
from service.providers.base import ChatRequest, ChatResult, StreamChunk, TokenUsage

N = 200_000


def _per_op_ns(fn: Callable[[], Any], n: int = N) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - started) / n)
    return best


async def _chunks(n: int) -> AsyncIterator[StreamChunk]:
    chunk = StreamChunk(content="word ")
    for _ in range(n):
        yield chunk


async def _stream_ns(wrapped: bool, n: int = N) -> float:
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}])
    best = float("inf")
    for _ in range(5):
        stream = _chunks(n)
        source = checked_stream(stream, request) if wrapped else stream
        started = time.perf_counter_ns()
        async for _ in source:
            pass
        best = min(best, (time.perf_counter_ns() - started) / n)
    return best


def main() -> None:
    result = ChatResult(
        content="x" * 200,
        finish_reason="stop",
        usage=TokenUsage(prompt_tokens=11, completion_tokens=50),
    )
    call = CallInput(
        model_group="g",
        purpose="p",
        request=ChatRequest(
            messages=[
                {"role": "system", "content": "You are a helpful assistant." * 4},
                {"role": "user", "content": "Summarize this document: " + "lorem ipsum " * 50},
                {"role": "assistant", "content": "Sure."},
            ],
            params={"temperature": 0.2},
        ),
    )
    with_json = _per_op_ns(lambda: validate_call(call), N // 4)
    original = domain_jobs.v.json_value
    domain_jobs.v.json_value = lambda value, field: value  # type: ignore[assignment]
    try:
        without_json = _per_op_ns(lambda: validate_call(call), N // 4)
    finally:
        domain_jobs.v.json_value = original  # type: ignore[assignment]
    admission = Admission(per_key=500, public_streams=100)
    who = Principal(is_admin=False, team_id="team_a")

    def admit_release() -> None:
        admission.release(admission.admit(who))

    route = PathBindings([pb.DESCRIPTOR]).route("/saas_llm.v1.JobService/LlmCall")
    assert route is not None
    request = pb.LlmCallRequest(job_id="5f0c7a52-8a8e-4a53-9b3e-0a2b1c3d4e5f")
    path = "/api/jobs/5f0c7a52-8a8e-4a53-9b3e-0a2b1c3d4e5f/llm-call"
    bare = asyncio.run(_stream_ns(False))
    checked = asyncio.run(_stream_ns(True))
    rows = [
        ("answer check (per call)", _per_op_ns(lambda: check_result(result))),
        ("stream chunk, bare generator", bare),
        ("stream chunk, checked_stream", checked),
        ("  added per chunk", checked - bare),
        ("call input, validate_call without json_value", without_json),
        ("call input, validate_call with json_value", with_json),
        ("  added per call", with_json - without_json),
        ("admission admit + release (per RPC)", _per_op_ns(admit_release)),
        ("path check (per transcoded REST call)", _per_op_ns(lambda: route.check(path, request))),
    ]
    for name, ns in rows:
        print(f"{name:48s} {ns / 1000:8.3f} µs")


if __name__ == "__main__":
    main()
