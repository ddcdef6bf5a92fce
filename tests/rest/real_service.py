"""The real service behind a real Envoy, and a small JSON-over-HTTP client for the REST tests
(tests/rest) and the seeds' contract tests (tests/contract).

    async with serve_real("sqlite", tmp_path) as svc:     # in-process grpc.aio App + Envoy
        api = RestClient(http_session, svc.base_url, svc.master_key)
        org = await api.ok("POST", "/api/organizations/create", json={...})

Import it as `tests.rest.real_service` (one module object for both suites).

`RestClient.ok()` checks every 200 answer against the proto of the RPC that serves the route (the
route table comes from gateway/openapi.json): exactly the proto's snake_case field names, every
scalar, repeated and map field present (zeros and empty strings too), int32 as JSON integers,
doubles as numbers, Timestamps as RFC 3339 UTC strings. `RestClient.err()` checks the error JSON
shape `{"code", "message", "details": [ErrorInfo]}` and its HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
from google.protobuf import descriptor, descriptor_pool

from saas_llm.v1 import (  # noqa: F401  (register every service in the default pool)
    access_group_service_pb2,
    credit_service_pb2,
    health_service_pb2,
    job_service_pb2,
    model_group_service_pb2,
    organization_service_pb2,
    team_service_pb2,
)
from tests.conftest import MASTER_KEY, Client, fresh_database, start_client, stop_client
from tests.support.envoy import Envoy, start_envoy
from tests.support.procs import Child, free_port, spawn

ROOT = Path(__file__).resolve().parents[2]
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
DOMAIN = "saas-llm.gateway"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# HTTP status of each gRPC code as Envoy's transcoder maps it (gateway/README.md).
HTTP_OF_CODE = {
    1: 499,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 400,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- services


@dataclass
class RestService:
    """A running service + Envoy. `app_client` is the in-process gRPC client (None for a
    subprocess service)."""

    kind: str
    base_url: str
    master_key: str
    envoy: Envoy
    app_client: Client | None = None

    def url(self, path: str) -> str:
        return self.base_url + path


@contextlib.asynccontextmanager
async def serve_real(kind: str, tmp: Path, **overrides: object) -> AsyncIterator[RestService]:
    """The real service (grpc.aio App in this event loop) on a fresh, migrated database of the
    given kind ("sqlite" or "postgres"), behind a real Envoy rendered from envoy.yaml."""
    url = await fresh_database(kind, tmp)
    client = await start_client(url, **overrides)
    try:
        envoy = await start_envoy(client.app.port, direct_hosts=[client.app.direct_http_port])
        try:
            yield RestService(kind, envoy.base_url, MASTER_KEY, envoy, client)
        finally:
            await envoy.stop()
    finally:
        await stop_client(client)


@contextlib.asynccontextmanager
async def serve_subprocess(database_url: str) -> AsyncIterator[RestService]:
    """What `make run` does, without make: `python -m service migrate`, then
    `python -m service serve` configured by environment variables, behind Envoy."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MASTER_KEY": MASTER_KEY,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(free_port()),
        "LOG_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    }
    migrate = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "migrate", env=env, cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await migrate.communicate()
    if migrate.returncode != 0:
        raise RuntimeError(f"migrate failed: {out.decode(errors='replace')}")
    workdir = Path(tempfile.mkdtemp(prefix="svc-"))
    child = spawn(
        "service", [sys.executable, "-m", "service", "serve"], env=env, cwd=ROOT, log_dir=workdir
    )
    try:
        port, direct_port = await _wait_listening(child)
        envoy = await start_envoy(port, direct_hosts=[direct_port])
        try:
            yield RestService("subprocess", envoy.base_url, MASTER_KEY, envoy)
        finally:
            await envoy.stop()
    finally:
        await child.stop_async(10)
        shutil.rmtree(workdir, ignore_errors=True)


async def _wait_listening(child: Child) -> tuple[int, int]:
    """The gRPC and direct HTTP ports from the service's JSON "listening" log line."""
    for _ in range(300):
        if not child.alive():
            raise RuntimeError(f"service exited: {child.log()}")
        for line in child.log().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("msg") == "listening":
                    return int(record["grpc_port"]), int(record["direct_http_port"])
        await asyncio.sleep(0.05)
    raise TimeoutError(f"service not listening: {child.log()}")


# --------------------------------------------------------------------------- JSON shapes


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    regex: re.Pattern[str]
    rpc: str  # "saas_llm.v1.JobService.GetJob"


@cache
def routes() -> tuple[Route, ...]:
    """The REST routes of gateway/openapi.json, literal paths first."""
    document = json.loads((ROOT / "gateway" / "openapi.json").read_text())
    out: list[Route] = []
    for template, item in document["paths"].items():
        for verb, op in item.items():
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "/?$"
            rpc = op["x-grpc-method"].strip("/").replace("/", ".")
            out.append(Route(verb.upper(), template, re.compile(pattern), rpc))
    out.sort(key=lambda r: r.template.count("{"))
    return tuple(out)


def route_of(method: str, path: str) -> Route | None:
    path = path.split("?", 1)[0]
    for r in routes():
        if r.method == method.upper() and r.regex.match(path):
            return r
    return None


def output_type(route: Route) -> descriptor.Descriptor:
    return descriptor_pool.Default().FindMethodByName(route.rpc).output_type


_INT32 = {
    descriptor.FieldDescriptor.TYPE_INT32,
    descriptor.FieldDescriptor.TYPE_SINT32,
    descriptor.FieldDescriptor.TYPE_SFIXED32,
    descriptor.FieldDescriptor.TYPE_UINT32,
    descriptor.FieldDescriptor.TYPE_FIXED32,
}
_INT64 = {
    descriptor.FieldDescriptor.TYPE_INT64,
    descriptor.FieldDescriptor.TYPE_SINT64,
    descriptor.FieldDescriptor.TYPE_SFIXED64,
    descriptor.FieldDescriptor.TYPE_UINT64,
    descriptor.FieldDescriptor.TYPE_FIXED64,
}
_FLOAT = {descriptor.FieldDescriptor.TYPE_DOUBLE, descriptor.FieldDescriptor.TYPE_FLOAT}


def _is_map(f: descriptor.FieldDescriptor) -> bool:
    return bool(
        f.type == descriptor.FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry
    )


def check_message(data: Any, desc: descriptor.Descriptor, where: str = "$") -> None:
    """Assert that `data` is the proto3 JSON of `desc` as Envoy prints it (proto field names,
    primitive fields always printed)."""
    assert isinstance(data, dict), f"{where}: expected an object, got {data!r}"
    fields = desc.fields_by_name
    extra = set(data) - set(fields)
    assert not extra, f"{where}: keys not in {desc.full_name}: {sorted(extra)}"
    for name, f in fields.items():
        path = f"{where}.{name}"
        if name not in data:
            # Only unset singular message fields (and unset `optional` scalars) may be omitted.
            assert (
                not f.is_repeated and f.type == descriptor.FieldDescriptor.TYPE_MESSAGE
            ) or f.has_presence, f"{path}: missing (zero values must be printed)"
            continue
        value = data[name]
        if _is_map(f):
            assert isinstance(value, dict), f"{path}: expected a map object"
            value_field = f.message_type.fields_by_name["value"]
            for k, item in value.items():
                _check_value(item, value_field, f"{path}[{k!r}]")
        elif f.is_repeated:
            assert isinstance(value, list), f"{path}: expected a list, got {value!r}"
            for i, item in enumerate(value):
                _check_value(item, f, f"{path}[{i}]")
        else:
            _check_value(value, f, path)


def _check_value(value: Any, f: descriptor.FieldDescriptor, path: str) -> None:
    t = f.type
    if t in _INT64:
        raise AssertionError(f"{path}: int64 field in a REST message (prints as a string)")
    if t in _INT32:
        assert type(value) is int, f"{path}: expected a JSON integer, got {value!r}"
    elif t in _FLOAT:
        assert type(value) in (int, float), f"{path}: expected a JSON number, got {value!r}"
    elif t == descriptor.FieldDescriptor.TYPE_BOOL:
        assert type(value) is bool, f"{path}: expected true/false, got {value!r}"
    elif t in (descriptor.FieldDescriptor.TYPE_STRING, descriptor.FieldDescriptor.TYPE_BYTES):
        assert isinstance(value, str), f"{path}: expected a string, got {value!r}"
    elif t == descriptor.FieldDescriptor.TYPE_ENUM:
        raise AssertionError(f"{path}: enum in a REST message (seeds print plain strings)")
    else:
        name = f.message_type.full_name
        if name == "google.protobuf.Timestamp":
            assert isinstance(value, str), f"{path}: Timestamp must be a string, got {value!r}"
            assert RFC3339.match(value), f"{path}: not RFC 3339 UTC: {value!r}"
        elif name == "google.protobuf.Struct":
            assert isinstance(value, dict), f"{path}: Struct must be an object, got {value!r}"
        elif name == "google.protobuf.ListValue":
            assert isinstance(value, list), f"{path}: ListValue must be a list"
        elif name == "google.protobuf.Value":
            pass  # any JSON value, null included
        else:
            check_message(value, f.message_type, path)


def check_error(
    resp: Resp,
    status: int,
    reason: str | None = None,
    *,
    message: str | None = None,
    envoy_local: bool = False,
) -> dict[str, Any]:
    """Assert the error JSON shape. A service error carries one ErrorInfo; an error of Envoy
    itself (local reply) has `"details": []`."""
    assert resp.status == status, f"expected {status}, got {resp.status}: {resp.text[:500]}"
    assert resp.headers.get("content-type") == "application/json", resp.headers
    data = resp.json()
    assert isinstance(data, dict), data
    assert set(data) == {"code", "message", "details"}, data
    assert type(data["code"]) is int, data
    if not envoy_local:  # Envoy's own replies pick their code (413 is INVALID_ARGUMENT)
        assert HTTP_OF_CODE[data["code"]] == status, data
    assert isinstance(data["message"], str), data
    assert data["message"], data
    if message is not None:
        assert data["message"] == message, data
    assert not [h for h in resp.headers if h.startswith("grpc-")], resp.headers
    if envoy_local:
        assert data["details"] == [], data
        return data
    assert isinstance(data["details"], list), data
    assert len(data["details"]) == 1, data
    info = data["details"][0]
    assert set(info) == {"@type", "reason", "domain", "metadata"}, info
    assert info["@type"] == ERROR_INFO_TYPE, info
    assert info["domain"] == DOMAIN, info
    assert isinstance(info["metadata"], dict), info
    assert all(isinstance(v, str) for v in info["metadata"].values()), info
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", info["reason"]), info
    if reason is not None:
        assert info["reason"] == reason, data
    return data


# --------------------------------------------------------------------------- HTTP client


@dataclass
class Resp:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


_UNSET: Any = object()


@dataclass
class RestClient:
    """JSON over HTTP through Envoy with aiohttp. `key` is sent as `Authorization: Bearer`;
    `with_key()` gives the same client with another key (None: no header)."""

    http: aiohttp.ClientSession
    base_url: str
    key: str | None
    seen: set[tuple[str, str]] = field(default_factory=set)

    def with_key(self, key: str | None) -> RestClient:
        return RestClient(self.http, self.base_url, key, self.seen)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = {"Authorization": f"Bearer {self.key}"} if self.key is not None else {}
        out.update(extra or {})
        return out

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = _UNSET,
        data: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Resp:
        kwargs: dict[str, Any] = {"headers": self.headers(headers), "params": params}
        if json is not _UNSET:
            kwargs["json"] = json
        elif data is not None:
            kwargs["data"] = data
        async with self.http.request(method, self.base_url + path, **kwargs) as r:
            body = await r.read()
            return Resp(r.status, {k.lower(): v for k, v in r.headers.items()}, body)

    async def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """A 200 answer, checked against the RPC's response message; returns the JSON."""
        resp = await self.call(method, path, **kwargs)
        assert resp.status == 200, f"{method} {path}: {resp.status} {resp.text[:800]}"
        assert resp.headers.get("content-type") == "application/json", resp.headers
        assert not [h for h in resp.headers if h.startswith("grpc-")], resp.headers
        route = route_of(method, path)
        assert route is not None, f"no documented route for {method} {path}"
        self.seen.add((route.method, route.template))
        data = resp.json()
        check_message(data, output_type(route))
        return data

    async def err(
        self,
        method: str,
        path: str,
        status: int,
        reason: str | None = None,
        *,
        message: str | None = None,
        envoy_local: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        resp = await self.call(method, path, **kwargs)
        return check_error(resp, status, reason, message=message, envoy_local=envoy_local)

    async def stream(
        self,
        path: str,
        body: Any,
        *,
        on_event: Callable[[dict[str, Any]], bool] | None = None,
    ) -> tuple[list[tuple[float, dict[str, Any]]], dict[str, str]]:
        """POST a streaming route and read its Server-Sent Events as they arrive:
        [(monotonic arrival time, event)], response headers. `on_event` returning True closes
        the connection right there (a client that goes away)."""
        loop = asyncio.get_running_loop()
        events: list[tuple[float, dict[str, Any]]] = []
        route = route_of("POST", path)
        assert route is not None, path
        desc = output_type(route)
        async with self.http.post(self.base_url + path, json=body, headers=self.headers()) as r:
            headers = {k.lower(): v for k, v in r.headers.items()}
            assert r.status == 200, f"{path}: {r.status} {(await r.read())[:500]!r}"
            assert headers.get("content-type") == "text/event-stream", headers
            while True:
                try:
                    raw = await r.content.readuntil(b"\n\n")
                except asyncio.IncompleteReadError as exc:
                    assert exc.partial == b"", f"trailing bytes after the last event: {exc!r}"
                    break
                if not raw:  # end of the stream
                    break
                assert raw.startswith(b"data: "), raw
                event = json.loads(raw[len(b"data: ") :])
                check_message(event, desc)
                events.append((loop.time(), event))
                if on_event is not None and on_event(event):
                    r.close()  # drop the connection mid-stream
                    break
        self.seen.add(("POST", route.template))
        return events, headers


# --------------------------------------------------------------------------- tenants


async def create_org(api: RestClient, org_id: str | None = None) -> str:
    org_id = org_id or uid("org")
    await api.ok("POST", "/api/organizations/create", json={"organization_id": org_id, "name": "O"})
    return org_id


async def create_group(
    api: RestClient,
    models: list[tuple[str, dict[str, Any]]] | None = None,
    name: str | None = None,
) -> str:
    name = name or uid("grp")
    models = models or [("simulator/fast", {})]
    await api.ok(
        "POST",
        "/api/model-groups/create",
        json={
            "group_name": name,
            "models": [
                {"model_name": m, "priority": i, "config": cfg} for i, (m, cfg) in enumerate(models)
            ],
        },
    )
    return name


async def create_team(
    api: RestClient,
    *,
    credits: int = 10,
    groups: list[str] | None = None,
    org: str | None = None,
) -> tuple[str, str]:
    """A team (in a new org unless given) -> (team_id, virtual_key)."""
    org = org or await create_org(api)
    if groups is None:
        groups = [await create_group(api)]
    team_id = uid("team")
    answer = await api.ok(
        "POST",
        "/api/teams/create",
        json={
            "organization_id": org,
            "team_id": team_id,
            "model_groups": groups,
            "credits_allocated": credits,
        },
    )
    return team_id, answer["virtual_key"]


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]
