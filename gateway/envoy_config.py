"""Render the repository's envoy.yaml with other ports, descriptor path and upstream endpoints
(and absolute paths for the admin dashboard's files).

envoy.yaml stays the real, readable configuration; tests and `make run` need the same config with
free ports, an absolute descriptor path, or several service replicas. The substitution is textual
and strict: each placeholder value must appear exactly where expected, otherwise rendering fails
loudly instead of producing a config that silently points at the wrong place.

    python -m gateway.envoy_config --http-port 18080 --grpc 127.0.0.1:50051 --grpc 127.0.0.1:50052
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVOY_YAML = ROOT / "envoy.yaml"

# The values written in envoy.yaml that render() replaces.
_HTTP_PORT = "port_value: 8080"
_ADMIN = "address: 127.0.0.1, port_value: 9901"
_DESCRIPTOR = "proto_descriptor: build/descriptor.pb"
# The admin dashboard's files, relative to the repository (Envoy reads them at start).
_ADMIN_FILES = "filename: gateway/admin/"
_CLUSTER_TYPE = "    type: STATIC\n"
# The REST virtual host; a CORS policy goes right after its `domains` line.
_VIRTUAL_HOST = '            - name: gateway\n              domains: ["*"]\n'
_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
_CORS_HEADERS = "authorization, content-type, x-request-id, traceparent"


def _endpoint_pattern(port: int) -> re.Pattern[str]:
    """The one upstream endpoint 127.0.0.1:`port` of a cluster, with its indentation."""
    return re.compile(
        r"^(?P<indent> *)- endpoint:\n"
        r"(?P=indent)    address:\n"
        rf"(?P=indent)      socket_address: \{{address: 127\.0\.0\.1, port_value: {port}\}}\n",
        re.MULTILINE,
    )


# Cluster grpc_service (the gRPC port) and cluster openai_http (the service's HTTP handler for
# the OpenAI-compatible paths, DIRECT_HTTP_PORT).
_ENDPOINT = _endpoint_pattern(50051)
_DIRECT_ENDPOINT = _endpoint_pattern(50090)

Endpoint = tuple[str, int]


def parse_endpoint(value: str | int | Endpoint) -> Endpoint:
    """Accept 50051, "50051", "host:50051" or ("host", 50051)."""
    if isinstance(value, tuple):
        return str(value[0]), int(value[1])
    if isinstance(value, int):
        return "127.0.0.1", value
    text = value.strip()
    if ":" not in text:
        return "127.0.0.1", int(text)
    host, _, port_text = text.rpartition(":")
    return host.strip("[]"), int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _replace_once(text: str, old: str, new: str) -> str:
    count = text.count(old)
    if count != 1:
        raise ValueError(f"envoy.yaml: expected {old!r} exactly once, found it {count} times")
    return text.replace(old, new)


def cors_policy(origins: Sequence[str]) -> str:
    """The virtual host's typed_per_filter_config for Envoy's CORS filter: `*` allows any origin,
    anything else is an exact origin ("https://app.example.com"). No credentials: the API is
    called with a bearer key, never with cookies."""
    matchers = [
        '{safe_regex: {regex: ".*"}}' if o == "*" else "{exact: " + json.dumps(o) + "}"
        for o in origins
    ]
    lines = [
        "              typed_per_filter_config:",
        "                envoy.filters.http.cors:",
        '                  "@type": type.googleapis.com/'
        "envoy.extensions.filters.http.cors.v3.CorsPolicy",
        "                  allow_origin_string_match:",
        *(f"                  - {m}" for m in matchers),
        f'                  allow_methods: "{_CORS_METHODS}"',
        f'                  allow_headers: "{_CORS_HEADERS}"',
        '                  expose_headers: "x-request-id"',
        '                  max_age: "600"',
    ]
    return "\n".join(lines) + "\n"


def render(
    http_port: int = 8080,
    grpc_port: int = 50051,
    admin_port: int = 9901,
    descriptor_path: str | Path = "build/descriptor.pb",
    grpc_hosts: Sequence[str | int | Endpoint] | None = None,
    *,
    listen_address: str = "0.0.0.0",
    admin_address: str = "127.0.0.1",
    cors_allowed_origins: Sequence[str] = (),
    direct_hosts: Sequence[str | int | Endpoint] | None = None,
    source: str | Path = ENVOY_YAML,
) -> str:
    """Return envoy.yaml with the given ports, descriptor path and upstream endpoints.

    grpc_hosts, when given, replaces the single upstream 127.0.0.1:grpc_port by one endpoint per
    entry ("host:port", a port, or (host, port)); hosts that are names rather than IP addresses
    switch the cluster to STRICT_DNS (docker-compose service names). cors_allowed_origins, when
    given, turns CORS on for those origins (settings.CORS_ALLOWED_ORIGINS). direct_hosts, when
    given, are the replicas' HTTP handlers for the OpenAI-compatible paths (DIRECT_HTTP_PORT;
    default 127.0.0.1:50090).
    """
    text = Path(source).read_text()
    endpoints = [parse_endpoint(h) for h in grpc_hosts] if grpc_hosts else []
    if not endpoints:
        endpoints = [("127.0.0.1", grpc_port)]

    text = _replace_once(
        text, "address: 0.0.0.0, port_value: 8080", f"address: {listen_address}, port_value: 8080"
    )
    text = _replace_once(text, _HTTP_PORT, f"port_value: {int(http_port)}")
    text = _replace_once(text, _ADMIN, f"address: {admin_address}, port_value: {int(admin_port)}")
    text = _replace_once(text, _DESCRIPTOR, f"proto_descriptor: {Path(descriptor_path)}")
    if _ADMIN_FILES not in text:
        raise ValueError(f"envoy.yaml: expected the admin dashboard's routes ({_ADMIN_FILES!r})")
    # Absolute, so that Envoy finds them whatever its working directory.
    text = text.replace(_ADMIN_FILES, f"filename: {ROOT / 'gateway' / 'admin'}/")
    if cors_allowed_origins:
        text = _replace_once(text, _VIRTUAL_HOST, _VIRTUAL_HOST + cors_policy(cors_allowed_origins))

    text = _set_endpoints(text, _ENDPOINT, endpoints)
    if direct_hosts:
        text = _set_endpoints(text, _DIRECT_ENDPOINT, [parse_endpoint(h) for h in direct_hosts])
    if not all(_is_ip(host) for host, _ in endpoints):
        text = _replace_once(text, _CLUSTER_TYPE, "    type: STRICT_DNS\n")
    return text


def _set_endpoints(text: str, pattern: re.Pattern[str], endpoints: Sequence[Endpoint]) -> str:
    match = pattern.search(text)
    if match is None or len(pattern.findall(text)) != 1:
        raise ValueError(f"envoy.yaml: cannot find the single endpoint {pattern.pattern!r}")
    indent = match.group("indent")
    block = "".join(
        f"{indent}- endpoint:\n"
        f"{indent}    address:\n"
        f"{indent}      socket_address: {{address: {host}, port_value: {port}}}\n"
        for host, port in endpoints
    )
    return text[: match.start()] + block + text[match.end() :]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument("--descriptor", default="build/descriptor.pb")
    parser.add_argument(
        "--grpc", action="append", default=[], help="upstream host:port (repeatable)"
    )
    parser.add_argument("--listen-address", default="0.0.0.0")
    parser.add_argument("--admin-address", default="127.0.0.1")
    parser.add_argument(
        "--cors-origin", action="append", default=[], help="allowed CORS origin (repeatable)"
    )
    parser.add_argument(
        "--direct",
        action="append",
        default=[],
        help="a replica's HTTP handler for the OpenAI-compatible paths, host:port (repeatable)",
    )
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    args = parser.parse_args(argv)
    text = render(
        http_port=args.http_port,
        admin_port=args.admin_port,
        descriptor_path=args.descriptor,
        grpc_hosts=args.grpc or None,
        listen_address=args.listen_address,
        admin_address=args.admin_address,
        cors_allowed_origins=args.cors_origin,
        direct_hosts=args.direct or None,
    )
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
