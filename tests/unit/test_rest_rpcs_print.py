"""api/rest_rpcs.print_message prints as Envoy's transcoder does where protobuf's Python JSON
printer differs from its C++ one (the REST comparison test, tests/rest/test_rest_rpcs.py, checks
the rest against the real transcoder)."""

from __future__ import annotations

from typing import Any

import orjson
from google.protobuf import struct_pb2

from saas_llm.v1 import job_service_pb2 as pb
from service.api.rest_rpcs import print_message


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def test_fields_in_declared_order_with_zero_values() -> None:
    answer = pb.LlmCallResponse(
        call_id="c1",
        response=pb.LlmResponse(content="hi", finish_reason="stop"),
        metadata=pb.LlmCallMetadata(tokens_used=3, model_group="g", prompt_tokens=1),
    )
    printed = print_message(answer)
    declared = [f.name for f in pb.LlmCallMetadata.DESCRIPTOR.fields]
    assert list(printed["metadata"]) == declared
    assert printed["metadata"]["latency_ms"] == 0
    assert printed["metadata"]["cached"] is False
    assert list(printed) == [f.name for f in pb.LlmCallResponse.DESCRIPTOR.fields]


def test_integral_numbers_print_without_a_fraction() -> None:
    whole = pb.CompleteJobResponse(costs=pb.JobCosts(total_cost_usd=2.0))
    part = pb.CompleteJobResponse(costs=pb.JobCosts(total_cost_usd=0.25))
    call = pb.LlmCallResponse(
        response=pb.LlmResponse(tool_calls=[_struct({"n": 2, "x": 2.5, "l": [1, 1.25]})])
    )
    assert orjson.dumps(print_message(whole)["costs"]["total_cost_usd"]) == b"2"
    assert orjson.dumps(print_message(part)["costs"]["total_cost_usd"]) == b"0.25"
    tool = print_message(call)["response"]["tool_calls"][0]
    assert orjson.dumps(tool, option=orjson.OPT_SORT_KEYS) == b'{"l":[1,1.25],"n":2,"x":2.5}'
