"""Render the repository's envoy.yaml with other ports, descriptor path and upstream endpoints
(and absolute paths for the admin dashboard's files), and optionally tracing and a stats
listener.

envoy.yaml stays the real, readable configuration; tests and `make run` need the same config with
free ports, an absolute descriptor path, or several service replicas. The substitution is textual
and strict: each placeholder value must appear exactly where expected, otherwise rendering fails
loudly instead of producing a config that silently points at the wrong place.

    python -m gateway.envoy_config --http-port 18080 --grpc 127.0.0.1:50051 --grpc 127.0.0.1:50052

Observability additions (not in envoy.yaml, which stays the plain config):
- `otlp_endpoint` ("http://collector:4317", OTEL_EXPORTER_OTLP_ENDPOINT): Envoy's OpenTelemetry
  tracer on the REST listener, exporting over OTLP/gRPC to that collector. Envoy starts (or
  continues) the trace and sends `traceparent` to the service, whose spans join it.
- `stats_port`: a listener serving only GET /stats/prometheus (proxied to the admin interface),
  so that a scraper on another host (Prometheus in docker-compose) can read Envoy's stats while
  the admin interface itself stays on loopback.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

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


# Cluster grpc_service (the gRPC port) and cluster service_http (the service's HTTP handler for
# the OpenAI-compatible and the job flow's paths, DIRECT_HTTP_PORT).
_ENDPOINT = _endpoint_pattern(50051)
_DIRECT_ENDPOINT = _endpoint_pattern(50090)

Endpoint = tuple[str, int]

# The routes of the job flow's paths to the HTTP handler: from their comment to the next one.
_JOB_FLOW_ROUTE = "              # The job flow's paths"
_AFTER_JOB_FLOW_ROUTE = "              # The transcoder rewrites the path"
_SERVER_NAME = "          server_name: saas-llm-gateway\n"
_LISTENERS = "  listeners:\n"
OTLP_GRPC_PORT = 4317

_TRACING = """\
          # Tracing (rendered when OTEL_EXPORTER_OTLP_ENDPOINT is set): every request is traced
          # and its traceparent sent to the service. The request id stays as the client sent it
          # (no trace decision packed into it) and plays no part in sampling (a client's own
          # x-request-id, UUID or not, would otherwise decide that the request is not traced).
          tracing:
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service:
                  envoy_grpc: {cluster_name: opentelemetry_collector}
                  timeout: 1s
                service_name: saas-llm-gateway-envoy
          request_id_extension:
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig
              pack_trace_reason: false
              use_request_id_for_trace_sampling: false
"""

_COLLECTOR_CLUSTER = """\
  - name: opentelemetry_collector
    type: {cluster_type}
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: opentelemetry_collector
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: {host}, port_value: {port}}}
"""

# Envoy sends its spans every second (default: every 5 s, or 5 spans).
_TRACING_RUNTIME = """\
layered_runtime:
  layers:
  - name: tracing
    static_layer:
      tracing.opentelemetry.flush_interval_ms: 1000
      tracing.opentelemetry.min_flush_spans: 1
"""

_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)
_STATS_LISTENER = """\
  # Envoy's Prometheus stats alone (the admin interface stays on loopback).
  - name: stats
    address:
      socket_address: {{address: {address}, port_value: {port}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {hcm}
          stat_prefix: stats
          route_config:
            virtual_hosts:
            - name: stats
              domains: ["*"]
              routes:
              - match: {{path: /stats/prometheus}}
                route: {{cluster: envoy_admin}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""

_ADMIN_CLUSTER = """\
  - name: envoy_admin
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: envoy_admin
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: {address}, port_value: {port}}}
"""


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
    otlp_endpoint: str | None = None,
    stats_port: int | None = None,
    job_flow_over_http: bool = True,
) -> str:
    """Return envoy.yaml with the given ports, descriptor path and upstream endpoints.

    grpc_hosts, when given, replaces the single upstream 127.0.0.1:grpc_port by one endpoint per
    entry ("host:port", a port, or (host, port)); hosts that are names rather than IP addresses
    switch the cluster to STRICT_DNS (docker-compose service names). cors_allowed_origins, when
    given, turns CORS on for those origins (settings.CORS_ALLOWED_ORIGINS). direct_hosts, when
    given, are the replicas' HTTP handlers for the OpenAI-compatible paths (DIRECT_HTTP_PORT;
    default 127.0.0.1:50090).

    otlp_endpoint ("http://host:port") turns Envoy's tracing on; stats_port adds the stats
    listener (on listen_address; it needs a fixed admin_port to proxy to). See the module doc.

    job_flow_over_http=False leaves the job flow's paths to the transcoder too (the routes
    to the service's HTTP handler, api/rest_rpcs.py, are removed): for tests of the transcoder
    against a stub gRPC server, and to compare the two ways.
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
    if not job_flow_over_http:
        start = text.find(_JOB_FLOW_ROUTE)
        end = text.find(_AFTER_JOB_FLOW_ROUTE, start)
        if start < 0 or end < 0:
            raise ValueError("envoy.yaml: expected the job flow's routes before the gRPC routes")
        text = text[:start] + text[end:]
    if cors_allowed_origins:
        text = _replace_once(text, _VIRTUAL_HOST, _VIRTUAL_HOST + cors_policy(cors_allowed_origins))

    text = _set_endpoints(text, _ENDPOINT, endpoints)
    if direct_hosts:
        text = _set_endpoints(text, _DIRECT_ENDPOINT, [parse_endpoint(h) for h in direct_hosts])
    if not all(_is_ip(host) for host, _ in endpoints):
        text = _replace_once(text, _CLUSTER_TYPE, "    type: STRICT_DNS\n")
    if not text.endswith("\n"):
        text += "\n"
    if stats_port is not None:
        if not admin_port:
            raise ValueError("stats_port needs a fixed admin_port to proxy to")
        stats = _STATS_LISTENER.format(address=listen_address, port=int(stats_port), hcm=_HCM)
        text = _replace_once(text, _LISTENERS, _LISTENERS + stats)
        text += _ADMIN_CLUSTER.format(address=admin_address, port=int(admin_port))
    if otlp_endpoint:
        host, port = _collector(otlp_endpoint)
        text = _replace_once(text, _SERVER_NAME, _SERVER_NAME + _TRACING)
        cluster_type = "STATIC" if _is_ip(host) else "STRICT_DNS"
        text += _COLLECTOR_CLUSTER.format(cluster_type=cluster_type, host=host, port=port)
        text += _TRACING_RUNTIME
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


def _collector(endpoint: str) -> Endpoint:
    """(host, port) of an OTLP/gRPC endpoint URL. Plain gRPC only: Envoy reaches a collector
    next to it (an agent or sidecar), as the service does."""
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    if url.scheme != "http" or not url.hostname:
        raise ValueError(f"OTLP endpoint for Envoy must be http://host:port, got {endpoint!r}")
    return url.hostname, url.port or OTLP_GRPC_PORT


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
    parser.add_argument(
        "--otlp-endpoint",
        default=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
        help="trace to this OTLP/gRPC collector (default: $OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    parser.add_argument("--stats-port", type=int, help="serve /stats/prometheus on this port")
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
        otlp_endpoint=args.otlp_endpoint,
        stats_port=args.stats_port,
    )
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
