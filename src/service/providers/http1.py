"""A lean keep-alive HTTP/1.1 client for the provider fast path.

Every LLM call makes one request upstream, so the client's own cost is paid on every call. aiohttp
spends ~0.15 ms of CPU per request on objects this path never uses (cookie jar, tracing hooks,
per-request timer and response objects, header multidicts); this client sends a request as one
pre-built byte string in one write and parses the answer with httptools (llhttp, the parser
Node.js and uvicorn use), ~5x cheaper per call. `make bench` measures the difference.

What it does, and all it does:
- one `Endpoint` per URL (scheme, host, port, path), created once, holding the request head;
- keep-alive connections pooled per endpoint (most recently used first), dropped after
  `keepalive_timeout` idle seconds or when the server closed them; TLS with SNI and certificate
  checks for https (`ssl.create_default_context()`, which honours SSL_CERT_FILE); host names
  resolved once per DNS_TTL_S, every address tried in turn;
- response bodies framed by Content-Length, chunked encoding or the connection's end; we send
  `Accept-Encoding: identity`, so no body is compressed;
- limits: a whole body at most MAX_BODY_BYTES; while read by lines (streaming), at most
  MAX_LINE_BYTES buffered without a line end (the reader then pauses the socket, so a fast
  upstream cannot fill memory either).

Concurrent requests are bounded by the gRPC server's MAX_CONCURRENT_RPCS (each RPC makes at most
one upstream request at a time), so the pool needs no cap of its own.

A connection is reused only when its response was read to the end and the server allows it; any
exception, timeout or cancellation while a response is in flight closes the connection, which is
also how an upstream learns that a streaming client went away.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from typing import cast
from urllib.parse import urlsplit

import httptools

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_LINE_BYTES = 1024 * 1024
# How long a host name's addresses are reused for new connections (aiohttp's default too).
DNS_TTL_S = 300.0
USER_AGENT = b"saas-llm-gateway"


def _is_token(text: str) -> bool:
    """Printable ASCII without spaces: safe in a request line or a header value."""
    return text.isascii() and all(" " < ch < "\x7f" for ch in text)


def header_value_ok(value: str) -> bool:
    """A header value we can send as is (printable ASCII; spaces allowed inside)."""
    return value.isascii() and value.isprintable()


class HttpClientError(Exception):
    """Base of the client's failures."""


class ConnectError(HttpClientError):
    """No connection could be made (refused, DNS, TLS handshake): nothing reached the server."""


class ConnectionLost(HttpClientError):
    """The connection closed or reset before the response ended."""


class InvalidResponse(HttpClientError):
    """The server's answer is not valid HTTP, or exceeds a limit."""


class ResponseTimeout(HttpClientError, TimeoutError):
    """The deadline passed while waiting for (more of) the response."""


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the response currently being read on it."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        # The answer's Retry-After header, as sent (the circuit breaker honours it).
        self.retry_after: bytes | None = None
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self._framed = False  # Content-Length or chunked: the end is not the connection's end
        self._interim = False  # parsing a 1xx answer
        self._body = bytearray()
        self._pos = 0  # start of the unread part of _body
        self._paused = False
        # Set by next_lines: only a reader of lines pauses the socket when it falls behind
        # (read_body wants the whole body, bounded by MAX_BODY_BYTES alone).
        self._by_lines = False
        self._error: HttpClientError | None = None

    # asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(InvalidResponse(f"invalid HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        self._lost()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def _lost(self) -> None:
        self.closed = True
        if self.headers_done and not self.complete and not self._framed:
            # The body ran to the connection's end (HTTP/1.0 style): that is its end.
            self.complete = True
        elif not self.complete:
            self._fail(ConnectionLost("connection closed before the response ended"))
        self._wake()

    # httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname == b"content-length" or lname == b"transfer-encoding":
            self._framed = True
        elif lname == b"retry-after":
            self.retry_after = value

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # An interim answer (103 Early Hints from a CDN, 100 Continue): the real one follows
            # on the same connection.
            self._interim = True
            return
        self.status = status
        self.headers_done = True
        self._wake()

    def on_body(self, data: bytes) -> None:
        self._body += data
        unread = len(self._body) - self._pos
        if unread > MAX_BODY_BYTES:
            self._fail(InvalidResponse("response body too large"))
            self.close()
            return
        if (
            self._by_lines
            and unread > MAX_LINE_BYTES
            and not self._paused
            and self.transport is not None
        ):
            # The reader is behind: stop reading until it catches up (see next_lines).
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._framed = False
            return
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # reading ------------------------------------------------------------------------------

    def _fail(self, error: HttpClientError) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, deadline: float | None) -> None:
        """Until the parser has news (or the connection failed), at most until `deadline` (the
        loop's clock). A plain timer on the loop, armed only when we actually wait: cheaper
        than an asyncio.timeout() context per request or per streamed chunk."""
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_at(deadline, self._time_out) if deadline is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self._error is not None:
            raise self._error

    def _time_out(self) -> None:
        self._fail(ResponseTimeout("no response in time"))

    async def read_head(self, deadline: float | None = None) -> int:
        """Wait for the response's status line and headers; return the status code."""
        while not self.headers_done:
            await self._wait(deadline)
        return self.status

    async def read_body(self, deadline: float | None = None) -> bytes:
        """The whole (rest of the) body."""
        self._by_lines = False
        if self._paused:
            self._paused = False
            if self.transport is not None:
                self.transport.resume_reading()
        while not self.complete:
            await self._wait(deadline)
        body = bytes(self._body[self._pos :]) if self._pos else bytes(self._body)
        self._body = bytearray()
        self._pos = 0
        return body

    async def next_lines(self, deadline: float | None = None) -> list[bytes]:
        """Every complete line received and not yet returned (line ends stripped), waiting for at
        least one; [] once the body has ended (a last unterminated line comes before that)."""
        self._by_lines = True
        while True:
            body = self._body
            end = body.rfind(b"\n", self._pos)
            if end >= 0:
                lines = bytes(body[self._pos : end]).split(b"\n")
                self._pos = end + 1
                if self._pos == len(body):  # all read: the usual case
                    body.clear()
                    self._pos = 0
                elif self._pos > 65536:
                    del body[: self._pos]
                    self._pos = 0
                if self._paused and len(body) - self._pos <= MAX_LINE_BYTES // 2:
                    self._paused = False
                    if self.transport is not None:
                        self.transport.resume_reading()
                return [line[:-1] if line.endswith(b"\r") else line for line in lines]
            if self.complete:
                rest = bytes(body[self._pos :])
                self._body = bytearray()
                self._pos = 0
                return [rest.rstrip(b"\r")] if rest else []
            if len(body) - self._pos > MAX_LINE_BYTES:
                raise InvalidResponse("response line too long")
            await self._wait(deadline)

    # lifecycle ----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self._reset()
        cast(asyncio.Transport, self.transport).write(data)

    def release(self) -> None:
        """Give the connection back to its endpoint's pool if the response was read to its end
        and the server keeps the connection open; close it otherwise."""
        if self.complete and self.keep_alive and not self.closed and self._error is None:
            self.endpoint.put_back(self)  # send() resets the state for the next request
        else:
            self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Endpoint:
    """Requests of one method (POST unless told) to one URL over a pool of keep-alive
    connections."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str],
        keepalive_timeout: float,
        ssl_context: ssl.SSLContext | None,
        method: str = "POST",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        host_header = self.host if ":" not in self.host else f"[{self.host}]"
        if not default_port:
            host_header += f":{self.port}"
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if not _is_token(path + host_header):
            # A space or control character would split the request line or the headers.
            raise ValueError(f"URL has characters that need escaping: {url!r}")
        if not method.isalpha() or not method.isupper():
            raise ValueError(f"not an HTTP method: {method!r}")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._ssl = (ssl_context or ssl.create_default_context()) if self.tls else None
        self._keepalive = keepalive_timeout
        self._idle: list[Connection] = []
        self._closed = False
        # An IP address needs no lookup; a name is resolved once per DNS_TTL_S (see _addresses).
        try:
            ipaddress.ip_address(self.host)
            self._literal = True
        except ValueError:
            self._literal = False
        self._resolved: list[str] = []
        self._resolved_until = 0.0
        self._resolving: asyncio.Future[list[str]] | None = None

    def request_bytes(self, body: bytes, extra_headers: bytes = b"") -> bytes:
        """The whole request: head, `extra_headers` (complete `Name: value\\r\\n` lines), body."""
        return b"%s%bContent-Length: %d\r\n\r\n%b" % (self._head, extra_headers, len(body), body)

    async def send(
        self, body: bytes, extra_headers: bytes = b"", deadline: float | None = None
    ) -> Connection:
        """Send one request on a pooled or new connection and return it (headers not read yet);
        connecting is bounded by `deadline` (the loop's clock). The caller reads the response,
        then calls `release()`, or `close()` on any failure."""
        conn = self._checkout()
        if conn is None:
            if deadline is None:
                conn = await self._connect()
            else:
                async with asyncio.timeout_at(deadline):
                    conn = await self._connect()
        conn.send(self.request_bytes(body, extra_headers))
        return conn

    def _checkout(self) -> Connection | None:
        idle = self._idle
        if not idle:
            return None
        oldest_allowed = time.monotonic() - self._keepalive
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since >= oldest_allowed:
                return conn
            conn.close()
        return None

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        addresses = await self._addresses()
        error: BaseException | None = None
        for address in addresses:
            try:
                _transport, conn = await loop.create_connection(
                    lambda: Connection(self),
                    address,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
            except (OSError, ssl.SSLError) as exc:  # refused, unreachable, certificate
                error = exc
                continue
            return conn
        # Every address failed: ask the resolver again next time (the host may have moved).
        self._resolved_until = 0.0
        raise ConnectError(f"cannot connect to {self.host}:{self.port}: {error}") from error

    async def _addresses(self) -> list[str]:
        """The host's addresses, resolved once per DNS_TTL_S and shared by concurrent connects:
        a burst of new connections (a cold pool under load) costs one lookup, not one each in
        the loop's small resolver thread pool."""
        if self._literal:
            return [self.host]
        if time.monotonic() < self._resolved_until:
            return self._resolved
        resolving = self._resolving
        if resolving is None:
            resolving = self._resolving = asyncio.ensure_future(self._resolve())
            resolving.add_done_callback(self._resolve_done)
        return await asyncio.shield(resolving)

    async def _resolve(self) -> list[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except OSError as exc:  # socket.gaierror: unknown host, resolver down
            raise ConnectError(f"cannot resolve {self.host}: {exc}") from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        self._resolved = addresses
        self._resolved_until = time.monotonic() + DNS_TTL_S
        return addresses

    def _resolve_done(self, future: asyncio.Future[list[str]]) -> None:
        self._resolving = None
        if not future.cancelled():
            future.exception()  # retrieved: each waiter gets it through the shield

    def put_back(self, conn: Connection) -> None:
        if self._closed:  # a request that was in flight when the client closed
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Http1Client:
    """Endpoints by URL, created on first use and kept for the process's lifetime."""

    def __init__(
        self,
        *,
        headers: dict[str, str] | None = None,
        keepalive_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._headers = {
            "User-Agent": USER_AGENT.decode(),
            "Accept-Encoding": "identity",
            **(headers or {}),
        }
        self._keepalive = keepalive_timeout
        self._ssl = ssl_context
        self._endpoints: dict[str, Endpoint] = {}

    def endpoint(self, url: str, method: str = "POST") -> Endpoint:
        # A URL has no space (Endpoint refuses one), so "GET <url>" cannot collide with a POST key.
        key = url if method == "POST" else f"{method} {url}"
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = Endpoint(
                url,
                headers=self._headers,
                keepalive_timeout=self._keepalive,
                ssl_context=self._ssl,
                method=method,
            )
            self._endpoints[key] = endpoint
        return endpoint

    def close(self) -> None:
        endpoints, self._endpoints = self._endpoints, {}
        for endpoint in endpoints.values():
            endpoint.close()
