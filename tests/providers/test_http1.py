"""The fast path's HTTP/1.1 client (service/providers/http1.py) against raw servers that answer
with exact bytes: framing (Content-Length, chunked, connection end), keep-alive reuse and its
limits, TLS, size limits and the reader's backpressure. The OpenAI-level behaviour is covered in
test_openai_compat.py against the aiohttp fake upstream."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
import uvloop

from service.providers import http1
from service.providers.base import ChatRequest, ModelSpec, ProviderError
from service.providers.http1 import (
    ConnectError,
    ConnectionLost,
    Http1Client,
    InvalidResponse,
    ResponseTimeout,
)
from service.providers.openai_compat import OpenAICompatProvider

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    port: int
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def raw_servers() -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    servers: list[asyncio.Server] = []

    async def start(
        answer: Callable[[int], bytes | list[bytes]],
        *,
        close_after: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> RawServer:
        """answer(n) gives the bytes for the n-th request (or pieces, written 5 ms apart)."""
        state = RawServer(port=0)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            state.connections += 1
            try:
                while True:
                    try:
                        request = await read_request(reader)
                    except (asyncio.IncompleteReadError, ConnectionError):
                        return
                    state.requests.append(request)
                    out = answer(len(state.requests))
                    for piece in out if isinstance(out, list) else [out]:
                        writer.write(piece)
                        await writer.drain()
                        if isinstance(out, list):
                            await asyncio.sleep(0.005)
                    if close_after:
                        return
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
        servers.append(server)
        state.port = server.sockets[0].getsockname()[1]
        return state

    try:
        yield start
    finally:
        for server in servers:
            server.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    async with raw_servers() as start:
        yield start


def ok(body: bytes = b'{"ok": true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)


async def fetch(client: Http1Client, url: str, body: bytes = b"{}") -> tuple[int, bytes]:
    conn = await client.endpoint(url).send(body)
    try:
        status = await conn.read_head()
        raw = await conn.read_body()
    except BaseException:
        conn.close()
        raise
    conn.release()
    return status, raw


async def test_request_bytes_and_keep_alive_reuse(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    server = await serve(lambda n: ok(b'{"n": %d}' % n))
    client = Http1Client(headers={"Content-Type": "application/json"})
    assert await fetch(client, server.url, b'{"a": 1}') == (200, b'{"n": 1}')
    assert await fetch(client, server.url) == (200, b'{"n": 2}')
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in first
    assert b"Content-Type: application/json\r\n" in first
    assert b"Accept-Encoding: identity\r\n" in first
    assert first.endswith(b'Content-Length: 8\r\n\r\n{"a": 1}')
    client.close()


async def test_other_methods_get_their_own_pool(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    server = await serve(lambda n: ok(b'{"n": %d}' % n))
    client = Http1Client()
    get = client.endpoint(server.url, "GET")
    assert get is client.endpoint(server.url, "GET")
    assert get is not client.endpoint(server.url)
    conn = await get.send(b"")
    assert await conn.read_head() == 200 and await conn.read_body() == b'{"n": 1}'
    conn.release()
    assert server.requests[0].startswith(b"GET /v1/chat/completions HTTP/1.1\r\n")
    assert server.requests[0].endswith(b"Content-Length: 0\r\n\r\n")
    for method in ("get", "GET /x", "G\r\nX"):
        with pytest.raises(ValueError, match="not an HTTP method"):
            client.endpoint(server.url, method)
    client.close()


async def test_chunked_body(serve: Callable[..., Awaitable[RawServer]]) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    server = await serve(lambda n: [chunked[:50], chunked[50:]])
    client = Http1Client()
    assert await fetch(client, server.url) == (200, b"abcde")
    assert await fetch(client, server.url) == (200, b"abcde")
    assert server.connections == 1


async def test_interim_answers_are_skipped(serve: Callable[..., Awaitable[RawServer]]) -> None:
    # A CDN's 103 Early Hints (or a 100 Continue) before the real answer.
    server = await serve(
        lambda n: b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n" + ok(b"real")
    )
    client = Http1Client()
    assert await fetch(client, server.url) == (200, b"real")
    assert await fetch(client, server.url) == (200, b"real")
    assert server.connections == 1


async def test_body_ended_by_connection_close(serve: Callable[..., Awaitable[RawServer]]) -> None:
    server = await serve(lambda n: b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close_after=True)
    client = Http1Client()
    assert await fetch(client, server.url) == (200, b"until the end")
    assert await fetch(client, server.url) == (200, b"until the end")
    assert server.connections == 2


async def test_connection_close_header_is_honoured(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    server = await serve(lambda n: ok(extra=b"Connection: close\r\n"), close_after=True)
    client = Http1Client()
    for _ in range(3):
        assert (await fetch(client, server.url))[0] == 200
    assert server.connections == 3


async def test_connection_closed_by_server_while_idle_is_not_reused(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    # The server closes after each answer without saying so: the pooled connection is dead.
    server = await serve(lambda n: ok(), close_after=True)
    client = Http1Client()
    assert (await fetch(client, server.url))[0] == 200
    await asyncio.sleep(0.05)  # the FIN arrives
    assert (await fetch(client, server.url))[0] == 200
    assert server.connections == 2


async def test_idle_connections_expire(serve: Callable[..., Awaitable[RawServer]]) -> None:
    server = await serve(lambda n: ok())
    client = Http1Client(keepalive_timeout=0.05)
    await fetch(client, server.url)
    await asyncio.sleep(0.1)
    await fetch(client, server.url)
    assert server.connections == 2


async def test_reset_before_the_end_is_connection_lost(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    server = await serve(
        lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", close_after=True
    )
    with pytest.raises(ConnectionLost):
        await fetch(Http1Client(), server.url)


async def test_garbage_is_invalid_response(serve: Callable[..., Awaitable[RawServer]]) -> None:
    server = await serve(lambda n: b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    with pytest.raises(InvalidResponse):
        await fetch(Http1Client(), server.url)


async def test_a_whole_body_larger_than_the_line_buffer_is_read(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    # Only a reader of lines pauses the socket at MAX_LINE_BYTES; a completion's body (a large
    # tool-call answer) is read whole, up to MAX_BODY_BYTES.
    big = b"x" * (3 * http1.MAX_LINE_BYTES)
    server = await serve(lambda n: ok(big))
    loop = asyncio.get_running_loop()
    conn = await Http1Client().endpoint(server.url).send(b"{}")
    assert await conn.read_head(loop.time() + 5) == 200
    assert await conn.read_body(loop.time() + 5) == big
    conn.close()


async def test_body_size_limit(
    serve: Callable[..., Awaitable[RawServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http1, "MAX_BODY_BYTES", 1000)
    server = await serve(lambda n: ok(b"x" * 5000))
    with pytest.raises(InvalidResponse, match="too large"):
        await fetch(Http1Client(), server.url)


async def test_deadline_bounds_the_wait_for_the_answer(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    # Headers, then silence: both waits are bounded by the deadline passed in.
    server = await serve(
        lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc" if n > 1 else b""
    )
    client = Http1Client()
    loop = asyncio.get_running_loop()
    for _ in range(2):
        started = loop.time()
        conn = await client.endpoint(server.url).send(b"{}", deadline=started + 0.2)
        with pytest.raises(ResponseTimeout):
            await conn.read_head(started + 0.2)
            await conn.read_body(started + 0.2)
        assert 0.19 < loop.time() - started < 1.0
        conn.close()


async def test_host_names_are_resolved_once_for_a_burst_of_connections(
    serve: Callable[..., Awaitable[RawServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await serve(lambda n: [b"", ok()])  # answers 5 ms late: connections overlap
    loop = asyncio.get_running_loop()
    lookups: list[str] = []
    real = loop.getaddrinfo

    async def counting(host: str, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        return await real("127.0.0.1", *args, **kwargs)  # "localhost" may also mean ::1

    monkeypatch.setattr(loop, "getaddrinfo", counting)
    client = Http1Client()
    url = f"http://localhost:{server.port}/v1/chat/completions"
    results = await asyncio.gather(*(fetch(client, url) for _ in range(8)))
    assert all(status == 200 for status, _ in results)
    assert server.connections == 8
    assert lookups == ["localhost"]
    # An IP address is never looked up.
    await fetch(client, server.url)
    assert lookups == ["localhost"]

    async def failing(host: str, *args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loop, "getaddrinfo", failing)
    with pytest.raises(ConnectError, match="cannot resolve"):
        await fetch(Http1Client(), "http://no-such-host.invalid/v1/chat/completions")


async def test_a_request_in_flight_when_the_client_closes_is_not_pooled(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    server = await serve(lambda n: ok())
    client = Http1Client()
    endpoint = client.endpoint(server.url)
    conn = await endpoint.send(b"{}")
    client.close()
    assert await conn.read_head() == 200
    await conn.read_body()
    conn.release()
    assert endpoint._idle == []
    assert conn.transport is not None and conn.transport.is_closing()


async def test_refused_is_connect_error() -> None:
    with pytest.raises(ConnectError):
        await fetch(Http1Client(), "http://127.0.0.1:9/v1/chat/completions")


def test_urls_that_would_split_the_request_are_refused() -> None:
    client = Http1Client()
    for bad in ("http://h/a b", "http://h/\x00", "ftp://h/x", "http:///x", "http://h/é"):
        with pytest.raises(ValueError, match="URL"):
            client.endpoint(bad)


async def test_streamed_lines_and_backpressure(
    serve: Callable[..., Awaitable[RawServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a 1 KiB buffer limit, a 300 KiB body sent at once makes the reader pause the socket
    # and resume it as the consumer drains; every line still arrives, in order.
    monkeypatch.setattr(http1, "MAX_LINE_BYTES", 1024)
    lines = [b"data: %06d %s" % (i, b"y" * 100) for i in range(3000)]
    body = b"\r\n".join(lines) + b"\r\n"
    server = await serve(lambda n: ok(body))
    client = Http1Client()
    conn = await client.endpoint(server.url).send(b"{}")
    assert await conn.read_head() == 200
    got: list[bytes] = []
    while batch := await conn.next_lines():
        got += batch
        await asyncio.sleep(0)
    assert got == lines
    conn.release()
    assert len(client.endpoint(server.url)._idle) == 1


async def test_line_longer_than_the_limit_is_invalid(
    serve: Callable[..., Awaitable[RawServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http1, "MAX_LINE_BYTES", 1024)
    server = await serve(
        lambda n: (
            [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
            + [b"400\r\n%s\r\n" % (b"z" * 1024)] * 3
        )
    )
    conn = await Http1Client().endpoint(server.url).send(b"{}")
    assert await conn.read_head() == 200
    with pytest.raises(InvalidResponse, match="line too long"):
        await conn.next_lines()
    conn.close()


# TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_https_with_certificate_check(
    serve: Callable[..., Awaitable[RawServer]], ca: trustme.CA
) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    server = await serve(lambda n: ok(b"secret"), ssl_context=server_ctx)
    url = f"https://localhost:{server.port}/v1/chat/completions"

    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client = Http1Client(ssl_context=client_ctx)
    assert await fetch(client, url) == (200, b"secret")
    assert await fetch(client, url) == (200, b"secret")
    assert server.connections == 1

    # Without the CA, the certificate is refused: a connect error, nothing sent.
    with pytest.raises(ConnectError):
        await fetch(Http1Client(), url)
    assert len(server.requests) == 2


# Through the provider --------------------------------------------------------------------


async def test_provider_refuses_a_key_that_would_inject_headers(
    serve: Callable[..., Awaitable[RawServer]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await serve(lambda n: ok())
    monkeypatch.setenv("BAD_KEY", "sk-1\r\nX-Evil: 1")
    model = ModelSpec(
        "m",
        0,
        {"api_base": server.url.removesuffix("/chat/completions"), "api_key": "os.environ/BAD_KEY"},
    )
    provider = OpenAICompatProvider()
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], params={})
    with pytest.raises(ProviderError, match="not allowed in an HTTP header"):
        await provider.complete(model, request, 5.0)
    assert server.requests == []
    bad_base = ModelSpec("m", 0, {"api_base": "http://host/a b"})
    with pytest.raises(ProviderError, match="api_base"):
        await provider.complete(bad_base, request, 5.0)
    await provider.aclose()


# uvloop ----------------------------------------------------------------------------------


async def test_host_name_with_the_real_resolver(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    # "localhost" may resolve to ::1 first, where nothing listens: the next address is tried.
    server = await serve(lambda n: ok(b"named"))
    url = f"http://localhost:{server.port}/v1/chat/completions"
    assert await fetch(Http1Client(), url) == (200, b"named")


UVLOOP_CASES = [
    test_a_whole_body_larger_than_the_line_buffer_is_read,
    test_host_name_with_the_real_resolver,
    test_request_bytes_and_keep_alive_reuse,
    test_chunked_body,
    test_body_ended_by_connection_close,
    test_connection_closed_by_server_while_idle_is_not_reused,
    test_reset_before_the_end_is_connection_lost,
    test_garbage_is_invalid_response,
]


@pytest.mark.parametrize("case", UVLOOP_CASES, ids=lambda case: case.__name__)
def test_on_uvloop(case: Callable[[Callable[..., Awaitable[RawServer]]], Awaitable[None]]) -> None:
    """The service runs on uvloop, whose transports are not asyncio's classes: the same cases
    there (the tests above run on pytest's asyncio loop)."""

    async def main() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        async with raw_servers() as start:
            await case(start)

    uvloop.run(main())


def test_streaming_with_backpressure_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with raw_servers() as start:
            await test_streamed_lines_and_backpressure(start, monkeypatch)

    uvloop.run(main())


async def test_stream_done_before_the_body_end_keeps_the_connection_only_if_the_end_follows(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    # `[DONE]` in one chunk, the chunked body's terminator 5 ms later: the connection is pooled.
    # A server that never ends the body costs a new connection, and the final chunk waits at
    # most BODY_END_WAIT_S for it.
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    events = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
        b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    body = b"%x\r\n%b\r\n" % (len(events), events)
    ends = {1: True, 2: True, 3: False}
    server = await serve(lambda n: [head + body, b"0\r\n\r\n"] if ends[n] else [head + body])
    model = ModelSpec("m", 0, {"api_base": server.url.removesuffix("/chat/completions")})
    provider = OpenAICompatProvider()
    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], params={})
    loop = asyncio.get_running_loop()
    for _ in range(2):
        chunks = [c async for c in provider.stream(model, request, 5.0)]
        assert [c.content for c in chunks] == ["hi", ""]
    assert server.connections == 1
    started = loop.time()
    chunks = [c async for c in provider.stream(model, request, 5.0)]
    assert chunks[-1].finish_reason == "stop"
    assert loop.time() - started < 1.0
    assert not next(iter(provider._endpoints.values()))._idle  # dropped, not pooled
    await provider.aclose()
