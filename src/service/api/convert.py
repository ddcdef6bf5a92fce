"""Conversions between protobuf messages and plain Python values."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from saas_llm.v1 import common_pb2
from service.domain.errors import InvalidArgument

NULL = struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
INT32_MAX = 2**31 - 1


def saturated_int32(value: int) -> int:
    """A token total for an int32 field: past 2,147,483,647 it stays there (the contract's
    documented saturation; int64 would print as a JSON string)."""
    return value if value <= INT32_MAX else INT32_MAX


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromDatetime(value)
    return t


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if value:
        s.update(value)
    return s


def from_struct(value: struct_pb2.Struct) -> dict[str, Any]:
    if not value.fields:
        return {}
    out: dict[str, Any] = json_format.MessageToDict(value)
    return out


def string_or_null(value: str | None) -> struct_pb2.Value:
    return NULL if value is None else struct_pb2.Value(string_value=value)


def from_value(value: struct_pb2.Value) -> Any:
    """Python value of a google.protobuf.Value; strings (the common case)
    without reflection."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind is None or kind == "null_value":
        return None
    return json_format.MessageToDict(value)


def chat_content(message: common_pb2.ChatMessage) -> Any:
    """The OpenAI `content` of a ChatMessage: its `content` Value (what REST clients send), or
    the typed `text` / `parts` that native gRPC clients may set instead (common.proto)."""
    typed = message.WhichOneof("typed_content")
    if typed is None:
        return from_value(message.content)
    if message.HasField("content"):
        raise InvalidArgument(
            "A message sets one of content, text and parts, not several", field="content"
        )
    if typed == "text":
        return message.text
    return [_content_part(part) for part in message.parts.parts]


def _content_part(part: common_pb2.ContentPart) -> dict[str, Any]:
    kind = part.WhichOneof("part")
    if kind == "text":
        return {"type": "text", "text": part.text}
    if kind == "image_url":
        image: dict[str, Any] = {"url": part.image_url.url}
        if part.image_url.detail:
            image["detail"] = part.image_url.detail
        return {"type": "image_url", "image_url": image}
    raise InvalidArgument("A content part sets text or image_url", field="parts")


def chat_message(m: common_pb2.ChatMessage) -> dict[str, Any]:
    """A ChatMessage as the OpenAI message dict the providers send."""
    out: dict[str, Any] = {"role": m.role, "content": chat_content(m)}
    if m.name:
        out["name"] = m.name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        out["tool_calls"] = [from_struct(t) for t in m.tool_calls]
    return out


def params_of(r: Any) -> dict[str, Any]:
    """The sampling and tool parameters a request set (LlmCallRequest, CreateAndCallRequest,
    ChatCompletionRequest share these fields), as OpenAI request fields."""
    params: dict[str, Any] = {}
    for name in ("temperature", "max_tokens", "top_p", "seed"):
        if r.HasField(name):
            params[name] = getattr(r, name)
    if r.HasField("stop") and r.stop.WhichOneof("kind") not in (None, "null_value"):
        params["stop"] = from_value(r.stop)
    if r.user:
        params["user"] = r.user
    if r.tools:
        params["tools"] = [from_struct(t) for t in r.tools]
    if r.HasField("tool_choice") and r.tool_choice.WhichOneof("kind") not in (None, "null_value"):
        params["tool_choice"] = from_value(r.tool_choice)
    if r.HasField("response_format") and r.response_format.fields:
        params["response_format"] = from_struct(r.response_format)
    return params
