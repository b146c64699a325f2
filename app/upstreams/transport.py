"""PoolTransport: a lean HTTP/1.1 keep-alive transport for httpx, used for upstream calls.

Why: measured on the miss path (`bench/README.md`), httpx's default transport (httpcore over anyio) was the
bottleneck: one process calling the stand-in upstream on loopback with httpx.AsyncClient made about 1,350
calls/s on one connection, about 510 at 32 concurrent connections and about 280 at 64 (httpx issue #3215:
its pool's bookkeeping grows with the connections it holds), while a plain asyncio client made 4,900 to
7,700 calls/s against the same stand-in. With this transport under the same httpx client: about 2,000,
3,800, 4,000 and 4,200 calls/s at 1, 8, 32 and 64 connections (the client's own work, building the request
and wrapping the response, is about 80 us a call). It keeps httpx's client API, so the adapters, their
error mapping and their tests are unchanged, and replaces only the connection layer: asyncio protocols
parsed by httptools (the parser uvicorn uses), a LIFO stack of idle connections per host, at most
`max_connections` open, one write per request, and httpx's own exception types.

It does not do proxies or HTTP/2: an upstream that needs them sets `transport: httpx` in its config.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import defaultdict
from typing import Any

import httptools
import httpx

Origin = tuple[bytes, bytes, int]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.closed = False
        self.received = False
        self.keep_alive = False
        self.status = 0
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(httpx.RemoteProtocolError("upstream closed the connection before answering"))

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(httpx.RemoteProtocolError("upstream answered malformed HTTP"))
            self.close()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful inside the parser's callbacks
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def exchange(self, raw: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        self.headers, self.body, self.received, self.keep_alive = [], [], False, False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        await self.waiter
        return self.status, self.headers, b"".join(self.body)

    @property
    def reusable(self) -> bool:
        return not self.closed and self.keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class PoolTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, *, max_connections: int, keepalive_s: float = 5.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.slots = asyncio.Semaphore(max_connections)
        self.keepalive_s = keepalive_s
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.idle: defaultdict[Origin, list[_Connection]] = defaultdict(list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        origin = (request.url.raw_scheme, request.url.raw_host, request.url.port or _default_port(request.url))
        raw = _serialise(request, await request.aread())
        async with self.slots:
            for _ in range(2):  # a reused connection the upstream closed while idle: once more on a new one
                conn, reused = await self._checkout(origin, timeouts.get("connect"))
                try:
                    async with asyncio.timeout(timeouts.get("read")):
                        status, headers, body = await conn.exchange(raw)
                except TimeoutError:
                    conn.close()
                    raise httpx.ReadTimeout("upstream did not answer in time", request=request) from None
                except httpx.RemoteProtocolError:
                    conn.close()
                    if reused and not conn.received:
                        continue
                    raise
                except BaseException:
                    conn.close()
                    raise
                self._checkin(origin, conn)
                return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body), request=request)
        raise httpx.RemoteProtocolError("upstream closed the connection before answering", request=request)

    async def _checkout(self, origin: Origin, connect_timeout: float | None) -> tuple[_Connection, bool]:
        stack = self.idle[origin]
        now = time.monotonic()
        while stack:
            conn = stack.pop()
            if conn.reusable and now - conn.idle_since < self.keepalive_s:
                return conn, True
            conn.close()
        scheme, host, port = origin
        tls = self.ssl_context if scheme == b"https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    _Connection, host.decode("ascii"), port, ssl=tls, server_hostname=host.decode() if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("connecting to the upstream timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"could not connect to the upstream ({type(exc).__name__})") from None
        return conn, False

    def _checkin(self, origin: Origin, conn: _Connection) -> None:
        if conn.reusable:
            conn.idle_since = time.monotonic()
            self.idle[origin].append(conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        for stack in self.idle.values():
            for conn in stack:
                conn.close()
        self.idle.clear()


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _serialise(request: httpx.Request, body: bytes) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in request.headers.raw]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
