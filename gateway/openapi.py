"""Generate the OpenAPI 3.0 document of the REST surface from the protobuf descriptor set.

    python -m gateway.openapi build/descriptor.pb gateway/openapi.json

Every RPC of package saas_llm.v1 with a google.api.http annotation becomes an operation: the path
template, its path parameters, query parameters (the request fields that are neither in the path
nor in the body), the request body (body "*": the request message minus the path fields; body
"<field>": that field, e.g. a bare JSON array), the 200 answer (text/event-stream for
server-streaming RPCs) and the JSON error answers. Schemas follow the proto3 JSON mapping as Envoy
prints it (preserve_proto_field_names: snake_case names). Descriptions come from the proto
comments (the descriptor set is built with --include_source_info); `required` lists and required
query parameters from `google.api.field_behavior` REQUIRED, `readOnly` from OUTPUT_ONLY.

The output is deterministic (sorted keys, stable order, trailing newline): `make gen-check` fails
when the committed gateway/openapi.json is not what this script produces.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

# Importing it registers the google.api.http extension of MethodOptions, so that the descriptor
# set's annotations parse. (Imported by name: googleapis-common-protos ships no py.typed.)
_annotations: Any = importlib.import_module("google.api.annotations_pb2")
# Likewise google.api.field_behavior (REQUIRED, OUTPUT_ONLY, ...) of FieldOptions.
_field_behavior: Any = importlib.import_module("google.api.field_behavior_pb2")
HttpRule = Any  # google.api.HttpRule
REQUIRED: int = _field_behavior.REQUIRED
OUTPUT_ONLY: int = _field_behavior.OUTPUT_ONLY

PACKAGE = "saas_llm.v1"
TITLE = "SaaS LLM Gateway REST API"
API_VERSION = "v1"
ERROR_DOMAIN = "saas-llm.gateway"

FDP = descriptor_pb2.FieldDescriptorProto
JSON = dict[str, Any]

# Source-info path components (descriptor.proto field numbers).
_FILE_MESSAGE = 4
_FILE_ENUM = 5
_FILE_SERVICE = 6
_MESSAGE_FIELD = 2
_MESSAGE_NESTED = 3
_MESSAGE_ENUM = 4
_SERVICE_METHOD = 2
_ENUM_VALUE = 2

_SCALARS: dict[int, JSON] = {
    FDP.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FDP.TYPE_FLOAT: {"type": "number", "format": "float"},
    FDP.TYPE_INT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FDP.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FDP.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FDP.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    # proto3 JSON prints 64-bit integers as strings.
    FDP.TYPE_INT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SINT64: {"type": "string", "format": "int64"},
    FDP.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FDP.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FDP.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FDP.TYPE_BOOL: {"type": "boolean"},
    FDP.TYPE_STRING: {"type": "string"},
    FDP.TYPE_BYTES: {"type": "string", "format": "byte"},
}

_WRAPPERS = {
    "google.protobuf.DoubleValue": FDP.TYPE_DOUBLE,
    "google.protobuf.FloatValue": FDP.TYPE_FLOAT,
    "google.protobuf.Int64Value": FDP.TYPE_INT64,
    "google.protobuf.UInt64Value": FDP.TYPE_UINT64,
    "google.protobuf.Int32Value": FDP.TYPE_INT32,
    "google.protobuf.UInt32Value": FDP.TYPE_UINT32,
    "google.protobuf.BoolValue": FDP.TYPE_BOOL,
    "google.protobuf.StringValue": FDP.TYPE_STRING,
    "google.protobuf.BytesValue": FDP.TYPE_BYTES,
}

# Error answers listed on every operation (the rest: `default`).
_ERROR_RESPONSES = {
    "400": "Invalid argument or failed precondition (INVALID_ARGUMENT, FAILED_PRECONDITION, "
    "OUT_OF_RANGE), or a malformed JSON body.",
    "401": "Missing or invalid API key (UNAUTHENTICATED).",
    "403": "The key may not do this (PERMISSION_DENIED).",
    "404": "Not found (NOT_FOUND), or no such route.",
    "409": "Already exists, or an idempotency key reused with another body (ALREADY_EXISTS).",
    "500": "Internal error, or the LLM call failed on every model of the group (INTERNAL).",
}
_DEFAULT_ERROR = (
    "Any other error, in the same shape: 413 body over 1 MiB, 429 rate limited "
    "(RESOURCE_EXHAUSTED), 501 not implemented, 503 unavailable, 504 deadline exceeded."
)


@dataclass
class _Message:
    proto: descriptor_pb2.DescriptorProto
    full_name: str
    comment: str
    field_comments: dict[str, str] = field(default_factory=dict)


@dataclass
class _Enum:
    proto: descriptor_pb2.EnumDescriptorProto
    full_name: str
    comment: str
    value_comments: dict[str, str] = field(default_factory=dict)


@dataclass
class _Method:
    service: str
    proto: descriptor_pb2.MethodDescriptorProto
    comment: str


def _clean_comment(text: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in text.split("\n")]
    return "\n".join(lines).strip()


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    out: dict[tuple[int, ...], str] = {}
    for location in file.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        if text:
            out[tuple(location.path)] = _clean_comment(text)
    return out


class _Registry:
    """Messages, enums and annotated methods of a descriptor set, with their comments."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, _Message] = {}
        self.enums: dict[str, _Enum] = {}
        self.methods: list[_Method] = []
        for file in files:
            comments = _comments(file)
            prefix = f".{file.package}" if file.package else ""
            for i, message in enumerate(file.message_type):
                self._add_message(message, prefix, (_FILE_MESSAGE, i), comments)
            for i, enum in enumerate(file.enum_type):
                self._add_enum(enum, prefix, (_FILE_ENUM, i), comments)
            if file.package != PACKAGE:
                continue
            for si, service in enumerate(file.service):
                for mi, method in enumerate(service.method):
                    comment = comments.get((_FILE_SERVICE, si, _SERVICE_METHOD, mi), "")
                    self.methods.append(_Method(service.name, method, comment))

    def _add_message(
        self,
        message: descriptor_pb2.DescriptorProto,
        prefix: str,
        path: tuple[int, ...],
        comments: dict[tuple[int, ...], str],
    ) -> None:
        full_name = f"{prefix}.{message.name}"
        entry = _Message(message, full_name, comments.get(path, ""))
        for i, fld in enumerate(message.field):
            entry.field_comments[fld.name] = comments.get((*path, _MESSAGE_FIELD, i), "")
        self.messages[full_name] = entry
        for i, nested in enumerate(message.nested_type):
            self._add_message(nested, full_name, (*path, _MESSAGE_NESTED, i), comments)
        for i, enum in enumerate(message.enum_type):
            self._add_enum(enum, full_name, (*path, _MESSAGE_ENUM, i), comments)

    def _add_enum(
        self,
        enum: descriptor_pb2.EnumDescriptorProto,
        prefix: str,
        path: tuple[int, ...],
        comments: dict[tuple[int, ...], str],
    ) -> None:
        full_name = f"{prefix}.{enum.name}"
        entry = _Enum(enum, full_name, comments.get(path, ""))
        for i, value in enumerate(enum.value):
            entry.value_comments[value.name] = comments.get((*path, _ENUM_VALUE, i), "")
        self.enums[full_name] = entry


def _schema_name(full_name: str) -> str:
    """Component name: the short name for our package, the dotted full name otherwise."""
    name = full_name.lstrip(".")
    if name.startswith(PACKAGE + "."):
        return name[len(PACKAGE) + 1 :]
    return name


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _describe(schema: JSON, description: str) -> JSON:
    """Attach a description; a $ref cannot have siblings in OpenAPI 3.0, so wrap it."""
    if not description:
        return schema
    if "$ref" in schema:
        return {"allOf": [schema], "description": description}
    return {**schema, "description": description}


class _Builder:
    def __init__(self, registry: _Registry) -> None:
        self.registry = registry
        self.schemas: dict[str, JSON] = {}
        self._pending: list[str] = []

    # -- schemas --------------------------------------------------------------------------

    def message_ref(self, full_name: str) -> JSON:
        well_known = self._well_known(full_name)
        if well_known is not None:
            return well_known
        name = _schema_name(full_name)
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder against recursion
            self.schemas[name] = self._message_schema(self.registry.messages[full_name])
        return _ref(name)

    def enum_ref(self, full_name: str) -> JSON:
        name = _schema_name(full_name)
        if name not in self.schemas:
            enum = self.registry.enums[full_name]
            schema: JSON = {"type": "string", "enum": [v.name for v in enum.proto.value]}
            lines = [enum.comment] if enum.comment else []
            lines += [
                f"- `{value}`: {comment}"
                for value, comment in enum.value_comments.items()
                if comment
            ]
            self.schemas[name] = _describe(schema, "\n".join(lines))
        return _ref(name)

    @staticmethod
    def _well_known(full_name: str) -> JSON | None:
        name = full_name.lstrip(".")
        if name == "google.protobuf.Struct":
            return {"type": "object", "additionalProperties": True}
        if name == "google.protobuf.Value":
            return {"nullable": True}
        if name == "google.protobuf.ListValue":
            return {"type": "array", "items": {}}
        if name == "google.protobuf.Timestamp":
            return {"type": "string", "format": "date-time"}
        if name == "google.protobuf.Duration":
            return {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"}
        if name == "google.protobuf.FieldMask":
            return {"type": "string"}
        if name == "google.protobuf.Empty":
            return {"type": "object"}
        if name == "google.protobuf.Any":
            return {
                "type": "object",
                "properties": {"@type": {"type": "string"}},
                "additionalProperties": True,
            }
        if name in _WRAPPERS:
            return {**_SCALARS[_WRAPPERS[name]], "nullable": True}
        return None

    def _map_entry(self, fld: FDP) -> descriptor_pb2.DescriptorProto | None:
        if fld.type != FDP.TYPE_MESSAGE or fld.label != FDP.LABEL_REPEATED:
            return None
        entry = self.registry.messages.get(fld.type_name)
        if entry is not None and entry.proto.options.map_entry:
            return entry.proto
        return None

    def _single(self, fld: FDP) -> JSON:
        if fld.type == FDP.TYPE_MESSAGE or fld.type == FDP.TYPE_GROUP:
            return self.message_ref(fld.type_name)
        if fld.type == FDP.TYPE_ENUM:
            return self.enum_ref(fld.type_name)
        return dict(_SCALARS[fld.type])

    def field_schema(self, fld: FDP) -> JSON:
        entry = self._map_entry(fld)
        if entry is not None:
            value = next(f for f in entry.field if f.name == "value")
            return {"type": "object", "additionalProperties": self._single(value)}
        if fld.label == FDP.LABEL_REPEATED:
            return {"type": "array", "items": self._single(fld)}
        return self._single(fld)

    def _message_schema(self, message: _Message, exclude: Sequence[str] = ()) -> JSON:
        properties: JSON = {}
        required: list[str] = []
        for fld in message.proto.field:
            if fld.name in exclude:
                continue
            comment = message.field_comments.get(fld.name, "")
            field_schema = self.field_schema(fld)
            behaviors = _behaviors(fld)
            if OUTPUT_ONLY in behaviors:
                field_schema = _read_only(field_schema)
            if fld.proto3_optional:
                comment = (comment + "\n\n" if comment else "") + "Optional: omitted when unset."
            properties[fld.name] = _describe(field_schema, comment)
            if REQUIRED in behaviors:
                required.append(fld.name)
        schema: JSON = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        return _describe(schema, message.comment)

    def body_schema(self, full_name: str, exclude: Sequence[str]) -> JSON:
        """The request message minus the fields bound to the path."""
        message = self.registry.messages[full_name]
        exclude = [name for name in exclude if any(f.name == name for f in message.proto.field)]
        if not exclude:
            return self.message_ref(full_name)
        name = _schema_name(full_name) + "Body"
        if name not in self.schemas:
            schema = self._message_schema(message, exclude)
            note = "The request body; " + ", ".join(f"`{n}`" for n in exclude) + " from the path."
            schema["description"] = (
                f"{schema['description']}\n\n{note}" if "description" in schema else note
            )
            self.schemas[name] = schema
        return _ref(name)

    # -- operations -----------------------------------------------------------------------

    def operation(self, method: _Method, rule: HttpRule) -> tuple[str, str, JSON]:
        verb, template = _verb_and_path(rule)
        path_fields = re.findall(r"\{([^}=]+)(?:=[^}]*)?\}", template)
        path = re.sub(r"\{([^}=]+)(?:=[^}]*)?\}", r"{\1}", template)
        request = self.registry.messages[method.proto.input_type]
        top_path_fields = [p.split(".")[0] for p in path_fields]

        summary = _first_sentence(method.comment)
        operation: JSON = {
            "operationId": f"{method.service}_{method.proto.name}",
            "tags": [method.service],
            "summary": summary or method.proto.name,
            "x-grpc-method": f"/{PACKAGE}.{method.service}/{method.proto.name}",
        }
        if method.comment:
            operation["description"] = method.comment
        parameters: list[JSON] = []
        for name in path_fields:
            fld = _find_field(request.proto, name.split(".")[0])
            schema = self._single(fld) if fld is not None else {"type": "string"}
            comment = request.field_comments.get(name, "") if fld is not None else ""
            parameters.append(
                _describe({"name": name, "in": "path", "required": True, "schema": schema}, comment)
            )
        if not rule.body:
            for fld in request.proto.field:
                if fld.name in top_path_fields or fld.type == FDP.TYPE_MESSAGE:
                    continue
                schema = self.field_schema(fld)
                param: JSON = {"name": fld.name, "in": "query", "schema": schema}
                if REQUIRED in _behaviors(fld):
                    param["required"] = True
                if schema.get("type") == "array":
                    param.update({"style": "form", "explode": True})
                parameters.append(_describe(param, request.field_comments.get(fld.name, "")))
        elif rule.body != "*":
            for fld in request.proto.field:
                if fld.name in top_path_fields or fld.name == rule.body:
                    continue
                if fld.type == FDP.TYPE_MESSAGE:
                    continue
                param = {"name": fld.name, "in": "query", "schema": self.field_schema(fld)}
                parameters.append(_describe(param, request.field_comments.get(fld.name, "")))
        if parameters:
            operation["parameters"] = parameters

        if rule.body == "*":
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": self.body_schema(method.proto.input_type, top_path_fields)
                    }
                },
            }
        elif rule.body:
            fld = _find_field(request.proto, rule.body)
            if fld is None:
                raise ValueError(f"{method.proto.name}: body field {rule.body!r} not found")
            operation["requestBody"] = {
                "required": True,
                "description": request.field_comments.get(fld.name, ""),
                "content": {"application/json": {"schema": self.field_schema(fld)}},
            }

        response_ref = self.message_ref(method.proto.output_type)
        if method.proto.server_streaming:
            ok: JSON = {
                "description": (
                    "Server-Sent Events, sent as they are produced: one `data: <JSON>` event "
                    f"per `{_schema_name(method.proto.output_type)}` message, each followed by "
                    "a blank line. An error before the first event is a JSON error answer "
                    "instead."
                ),
                "content": {
                    "text/event-stream": {
                        "schema": {
                            "type": "string",
                            "description": "One `data: {...}` line and a blank line per message.",
                            "x-event-data": response_ref,
                        }
                    }
                },
            }
        else:
            ok = {
                "description": "OK",
                "content": {"application/json": {"schema": response_ref}},
            }
        responses: JSON = {"200": ok}
        is_health = method.service == "HealthService"
        for status in _ERROR_RESPONSES:
            if is_health and status in {"401", "403", "409"}:
                continue
            responses[status] = {"$ref": f"#/components/responses/Error{status}"}
        responses["default"] = {"$ref": "#/components/responses/ErrorDefault"}
        operation["responses"] = responses
        if is_health:
            operation["security"] = []
        return path, verb, operation


def _behaviors(fld: FDP) -> set[int]:
    """The google.api.field_behavior values of a field (a repeated extension: empty if unset)."""
    return set(fld.options.Extensions[_field_behavior.field_behavior])


def _read_only(schema: JSON) -> JSON:
    if "$ref" in schema:
        return {"allOf": [schema], "readOnly": True}
    return {**schema, "readOnly": True}


def _first_sentence(comment: str) -> str:
    text = " ".join(comment.split())
    match = re.search(r"(?<=[.!?])\s", text)
    return text[: match.start()] if match else text


def _find_field(message: descriptor_pb2.DescriptorProto, name: str) -> FDP | None:
    return next((f for f in message.field if f.name == name), None)


def _verb_and_path(rule: HttpRule) -> tuple[str, str]:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise ValueError("google.api.http rule without a pattern")
    if pattern == "custom":
        return rule.custom.kind.lower(), rule.custom.path
    return pattern, str(getattr(rule, pattern))


def _rules(method: descriptor_pb2.MethodDescriptorProto) -> list[HttpRule]:
    if not method.options.HasExtension(_annotations.http):
        return []
    rule = method.options.Extensions[_annotations.http]
    return [rule, *rule.additional_bindings]


def _error_components(builder: _Builder) -> tuple[JSON, JSON]:
    reasons: list[str] = []
    reason_enum = builder.registry.enums.get(f".{PACKAGE}.ErrorReason")
    if reason_enum is not None:
        reasons = [
            v.name.removeprefix("ERROR_REASON_") for v in reason_enum.proto.value if v.number != 0
        ]
    reason: JSON = {
        "type": "string",
        "description": "Machine-readable cause (ErrorReason in proto/saas_llm/v1/errors.proto).",
    }
    if reasons:
        reason["enum"] = reasons
    schemas: JSON = {
        "ErrorInfo": {
            "type": "object",
            "description": "google.rpc.ErrorInfo, as carried in `details`.",
            "properties": {
                "@type": {
                    "type": "string",
                    "enum": ["type.googleapis.com/google.rpc.ErrorInfo"],
                },
                "reason": reason,
                "domain": {"type": "string", "enum": [ERROR_DOMAIN]},
                "metadata": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Context, e.g. `field` for INVALID_ARGUMENT.",
                },
            },
            "required": ["@type", "reason", "domain"],
        },
        "Error": {
            "type": "object",
            "description": (
                "Every error answer: the gRPC status as JSON. `details` holds one ErrorInfo for "
                "errors of the service, and is empty for errors of the gateway itself (malformed "
                "JSON, unknown route, body too large, service unavailable, timeout)."
            ),
            "properties": {
                "code": {
                    "type": "integer",
                    "format": "int32",
                    "description": "gRPC status code (3 INVALID_ARGUMENT, 5 NOT_FOUND, ...).",
                },
                "message": {"type": "string", "description": "Human-readable message."},
                "details": {"type": "array", "items": _ref("ErrorInfo")},
            },
            "required": ["code", "message", "details"],
        },
    }
    error_body = {"application/json": {"schema": _ref("Error")}}
    responses: JSON = {
        f"Error{status}": {"description": text, "content": error_body}
        for status, text in _ERROR_RESPONSES.items()
    }
    responses["ErrorDefault"] = {"description": _DEFAULT_ERROR, "content": error_body}
    return schemas, responses


def build(descriptor_set: descriptor_pb2.FileDescriptorSet) -> JSON:
    """The OpenAPI document (a JSON-able dict) for the annotated RPCs of package saas_llm.v1."""
    registry = _Registry(descriptor_set.file)
    builder = _Builder(registry)
    paths: dict[str, JSON] = {}
    tags: dict[str, str] = {}
    for file in descriptor_set.file:
        if file.package != PACKAGE:
            continue
        comments = _comments(file)
        for si, service in enumerate(file.service):
            tags[service.name] = comments.get((_FILE_SERVICE, si), "")
    for method in registry.methods:
        for rule in _rules(method.proto):
            path, verb, operation = builder.operation(method, rule)
            if verb in paths.setdefault(path, {}):
                raise ValueError(f"{verb.upper()} {path} is bound twice")
            paths[path][verb] = operation

    error_schemas, error_responses = _error_components(builder)
    schemas = {**builder.schemas, **error_schemas}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": TITLE,
            "version": API_VERSION,
            "description": (
                "JSON/REST surface of the gateway, served by Envoy's gRPC-JSON transcoder in "
                "front of the gRPC service. Generated from proto/saas_llm/v1 by "
                "`python -m gateway.openapi`; do not edit. Field names are snake_case, zero "
                "values are printed, errors are `{code, message, details}` (see the Error "
                "schema and gateway/README.md)."
            ),
        },
        "servers": [{"url": "http://localhost:8080"}],
        "security": [{"bearerAuth": []}],
        "tags": [
            _describe({"name": name}, description) for name, description in sorted(tags.items())
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The master key (MASTER_KEY) or a team's virtual key (sk-...).",
                }
            },
            "schemas": schemas,
            "responses": error_responses,
        },
    }


def render(descriptor_set: descriptor_pb2.FileDescriptorSet) -> str:
    return json.dumps(build(descriptor_set), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def markdown_table(document: JSON) -> str:
    """The REST -> RPC table of gateway/README.md, from a document made by build()."""
    rows: list[tuple[str, str, str]] = []  # (path, verb, row)
    for path, item in document["paths"].items():
        for verb, op in item.items():
            query = "&".join(
                f"{p['name']}=" for p in op.get("parameters", []) if p["in"] == "query"
            )
            body = ""
            if "requestBody" in op:
                schema = op["requestBody"]["content"]["application/json"]["schema"]
                body = "bare JSON array" if schema.get("type") == "array" else "JSON object"
            if "text/event-stream" in op["responses"]["200"].get("content", {}):
                body += " → SSE"
            service, method = op["x-grpc-method"].split("/")[1:]
            rpc = f"{service.removeprefix(PACKAGE + '.')}.{method}"
            rest = f"{verb.upper()} {path}" + (f"?{query}" if query else "")
            rows.append((path, verb, f"| `{rest}` | `{rpc}` | {body} |"))
    lines = ["| REST | RPC | Body |", "|---|---|---|"] + [row for _, _, row in sorted(rows)]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the OpenAPI document.")
    parser.add_argument("descriptor", type=Path, help="descriptor set (build/descriptor.pb)")
    parser.add_argument("output", type=Path, nargs="?", help="where to write the JSON document")
    parser.add_argument(
        "--markdown", action="store_true", help="print the REST table of gateway/README.md"
    )
    args = parser.parse_args(argv)
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(args.descriptor.read_bytes())
    if args.markdown:
        sys.stdout.write(markdown_table(build(descriptor_set)))
        return 0
    if args.output is None:
        parser.error("the output path is required (or --markdown)")
    text = render(descriptor_set)
    if not args.output.exists() or args.output.read_text() != text:
        args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
