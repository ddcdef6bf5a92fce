"""The path wins over the body and the query.

Envoy's gRPC-JSON transcoder builds one request message from three sources: the path variables of
the route (`/api/teams/{team_id}/jobs`), the body (`body: "*"`) and the query string. When two of
them set the same field the later one wins, so `POST /api/credits/teams/teamC/add` with
`{"team_id": "teamB"}` would act on teamB, and `GET /api/teams/teamA/jobs?team_id=teamB` too.

The transcoder forwards the path the client called as `x-envoy-original-path`. For every RPC whose
`google.api.http` route has path variables, `PathBindings.check` matches that path against the
route and refuses (INVALID_ARGUMENT) a request whose field differs from the path's value: one rule
for every route, body and query alike, with no change to the contract. (Envoy's own
`reject_binding_body_field_collisions` covers the body only, not the query.) Native gRPC calls
carry no such header and have no path to disagree with.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from google.protobuf.descriptor import FileDescriptor

from service.domain.errors import InvalidArgument

# google.api's generated module ships no type information (gateway/openapi.py reads it alike).
HTTP_RULE: Any = importlib.import_module("google.api.annotations_pb2").http
ORIGINAL_PATH = "x-envoy-original-path"
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Percent-escapes the transcoder keeps as they are in a path variable (its default
# url_unescape_spec, ALL_CHARACTERS_EXCEPT_RESERVED: RFC 6570's reserved characters).
_RESERVED_ESCAPE = re.compile(r"%(3A|2F|3F|23|5B|5D|40|21|24|26|27|28|29|2A|2B|2C|3B|3D)", re.I)
_PROTECT = "\ue000"


@dataclass(frozen=True, slots=True)
class Route:
    """The path template of one RPC with at least one variable."""

    template: str
    pattern: re.Pattern[str]
    fields: tuple[str, ...]

    def bound(self, original_path: str) -> dict[str, str] | None:
        """The path variables' values as the transcoder binds them; None for a path that is not
        this route's."""
        found = self.pattern.fullmatch(original_path.partition("?")[0])
        if found is None:
            return None
        return {name: unescape(found.group(name)) for name in self.fields}

    def check(self, original_path: str, request: Any) -> None:
        # None: not a path the transcoder bound to this RPC (the header came from elsewhere).
        self.check_bound(self.bound(original_path), request)

    def check_bound(self, values: dict[str, str] | None, request: Any) -> None:
        """INVALID_ARGUMENT when a field of `request` differs from the path's value."""
        for name, value in (values or {}).items():
            if getattr(request, name) != value:
                raise InvalidArgument(
                    f"{name} in the request body or query differs from the {name} in the path "
                    f"{self.template}",
                    field=name,
                )


def unescape(segment: str) -> str:
    """A path variable's value as the transcoder binds it: percent-escapes decoded, except those
    of reserved characters."""
    if "%" not in segment:
        return segment
    protected = _RESERVED_ESCAPE.sub(lambda m: _PROTECT + m.group(1), segment)
    return unquote(protected).replace(_PROTECT, "%")


def _route(template: str) -> Route | None:
    fields = tuple(_VARIABLE.findall(template))
    if template.count("{") != len(fields):
        raise ValueError(f"only {{field}} path variables are supported: {template}")
    if not fields:
        return None
    regex = "".join(
        f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part)
        for i, part in enumerate(_VARIABLE.split(template))
    )
    return Route(template=template, pattern=re.compile(regex), fields=fields)


class PathBindings:
    """Method name (`/saas_llm.v1.TeamService/GetTeam`) -> its Route, for the RPCs whose REST
    route has path variables."""

    def __init__(self, files: Iterable[FileDescriptor]) -> None:
        self.routes: Mapping[str, Route] = {
            f"/{service.full_name}/{method.name}": route
            for file in files
            for service in file.services_by_name.values()
            for method in service.methods
            if (route := _route(_template(method.GetOptions()))) is not None
        }

    def route(self, method: str) -> Route | None:
        return self.routes.get(method)


def _template(options: Any) -> str:
    rule = options.Extensions[HTTP_RULE]
    if rule.additional_bindings:
        raise ValueError("additional_bindings are not supported by PathBindings")
    kind = rule.WhichOneof("pattern")
    if kind is None or kind == "custom":
        return ""
    template: str = getattr(rule, kind)
    return template
