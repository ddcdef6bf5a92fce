"""How a request reaches the gateway. Both transports take and return the JSON objects of the
REST surface (snake_case, zero values present), so the client above them is the same for both:

- `RestTransport` (default): JSON over HTTP through Envoy with httpx, Server-Sent Events for
  streams;
- `GrpcTransport` (`transport="grpc"`, needs the `grpc` extra): native gRPC on the generated stubs
  of the saas-llm-grpc package, messages converted with protobuf's JSON mapping.

Each raises the typed errors of errors.py, decoded from the ErrorInfo of the answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from saas_litellm_client import errors
from saas_litellm_client._operations import Operation

JSONObject = dict[str, Any]
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


class Transport(Protocol):
    async def call(self, op: Operation, request: JSONObject, timeout: float) -> JSONObject: ...

    def stream(
        self, op: Operation, request: JSONObject, timeout: float
    ) -> AsyncIterator[JSONObject]: ...

    async def aclose(self) -> None: ...


def _split(op: Operation, request: Mapping[str, Any]) -> tuple[str, JSONObject]:
    """The URL path with the path fields filled in, and the rest of the request."""
    rest = dict(request)
    path = op.path
    for name in op.path_fields:
        value = rest.pop(name, "")
        if not isinstance(value, str) or not value:
            raise errors.InvalidRequestError(
                f"{name} is required", code=errors.INVALID_ARGUMENT, reason="INVALID_ARGUMENT"
            )
        path = path.replace("{" + name + "}", quote(value, safe=""))
    return path, rest


def rest_error(status: int, body: bytes) -> errors.SaasLiteLLMError:
    """The typed error of a REST error answer ({"code", "message", "details"})."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        text = body.decode(errors="replace").strip() or f"HTTP {status}"
        code = errors.UNAVAILABLE if status in (502, 503) else errors.INTERNAL
        return errors.error_from(code, text, http_status=status)
    reason, metadata = "", {}
    for detail in data.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == _ERROR_INFO:
            reason = str(detail.get("reason", ""))
            metadata = {str(k): str(v) for k, v in (detail.get("metadata") or {}).items()}
            break
    grpc_code = data.get("code")
    return errors.error_from(
        grpc_code if isinstance(grpc_code, int) else errors.INTERNAL,
        str(data.get("message", "")) or f"HTTP {status}",
        reason,
        metadata,
        http_status=status,
    )


class RestTransport:
    """JSON over HTTP(S) with one pooled httpx.AsyncClient."""

    def __init__(
        self, base_url: str, headers: Mapping[str, str], client: httpx.AsyncClient | None = None
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._headers = dict(headers)
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient()

    def _request(
        self, op: Operation, request: JSONObject, timeout: float
    ) -> tuple[str, dict[str, Any]]:
        path, rest = _split(op, request)
        kwargs: dict[str, Any] = {
            "headers": self._headers,
            "timeout": httpx.Timeout(timeout),
        }
        if op.http_method == "GET":
            kwargs["params"] = {k: v for k, v in rest.items() if v is not None}
        else:
            kwargs["json"] = rest
        return self._base_url + path, kwargs

    async def call(self, op: Operation, request: JSONObject, timeout: float) -> JSONObject:
        url, kwargs = self._request(op, request, timeout)
        try:
            response = await self._client.request(op.http_method, url, **kwargs)
        except httpx.TimeoutException as exc:
            raise errors.RequestTimeoutError(
                f"no answer within {timeout} s", code=errors.DEADLINE_EXCEEDED
            ) from exc
        except httpx.TransportError as exc:
            raise errors.ServiceUnavailableError(
                f"cannot reach the gateway: {exc!r}", code=errors.UNAVAILABLE
            ) from exc
        if response.status_code != 200:
            raise rest_error(response.status_code, response.content)
        data = response.json()
        if not isinstance(data, dict):
            raise errors.SaasLiteLLMError(f"unexpected answer: {response.text[:200]}")
        return data

    async def stream(
        self, op: Operation, request: JSONObject, timeout: float
    ) -> AsyncIterator[JSONObject]:
        url, kwargs = self._request(op, request, timeout)
        try:
            async with self._client.stream(op.http_method, url, **kwargs) as response:
                if response.status_code != 200:
                    raise rest_error(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[len("data: ") :])
                        if isinstance(event, dict):
                            yield event
        except httpx.TimeoutException as exc:
            raise errors.RequestTimeoutError(
                f"no data within {timeout} s", code=errors.DEADLINE_EXCEEDED
            ) from exc
        except httpx.TransportError as exc:
            raise errors.ServiceUnavailableError(
                f"cannot reach the gateway: {exc!r}", code=errors.UNAVAILABLE
            ) from exc

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
