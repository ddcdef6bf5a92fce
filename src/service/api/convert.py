"""Conversions between protobuf messages and plain Python values."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from saas_llm.v1 import common_pb2
from service.domain.errors import InvalidArgument

NULL = struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)


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
