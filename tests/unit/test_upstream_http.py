"""HttpClient (aiohttp) against small real servers on loopback, raw sockets where the server misbehaves:
chunked, gzip, close, idle close, 100 Continue, a body that ends at close, oversized and inflating
answers, per-read timeouts, a POST never sent twice on a dropped connection, and a forward proxy on
127.0.0.1 taken from HTTP_PROXY (and skipped for NO_PROXY)."""

from __future__ import annotations

import asyncio
import gzip
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from app.errors import UpstreamFailed, UpstreamTimeout
from app.upstreams.http import AnswerTooLarge, HttpClient
from tests.support.polling import eventually_async

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MB = 1024 * 1024


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n" % (len(body), extra) + body


class Server:
    """A raw asyncio server on a free loopback port; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(counted, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/embeddings"

    async def next_request(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            request = await read_request(reader)
        except asyncio.IncompleteReadError:
            return None
        self.requests.append(request)
        return request


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient("up", max_connections=4, keepalive_s=4.0, connect_s=1.0, read_s=1.0)
    yield http
    await http.close()


async def post(http: HttpClient, url: str, body: bytes = b"{}", max_bytes: int = MB) -> tuple[int, bytes]:
    got = await http.post(url, body, {"Content-Type": "application/json"}, max_bytes=max_bytes)
    return got.status, got.body


def keep_alive_server(reply: Callable[[bytes], bytes]) -> Callable[[Server], Handler]:
    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (request := await server.next_request(reader)) is not None:
                writer.write(reply(request))
                await writer.drain()

        return handler

    return make


async def serving(make: Callable[[Server], Handler]) -> Server:
    server = Server(lambda r, w: asyncio.sleep(0))
    server.handler = make(server)
    return await server.__aenter__()


async def test_keep_alive_reuses_connections(client: HttpClient) -> None:
    server = await serving(keep_alive_server(lambda req: answer(b'{"n":%d}' % len(req))))
    for _ in range(5):
        assert (await post(client, server.url))[0] == 200
    results = await asyncio.gather(*(post(client, server.url) for _ in range(8)))
    assert all(status == 200 for status, _ in results)
    assert server.connections <= 4 and len(server.requests) == 13
    await server.__aexit__()


async def test_chunked_and_gzip_answers(client: HttpClient) -> None:
    payload = b'{"data": "' + b"x" * 5000 + b'"}'
    packed = gzip.compress(payload)

    def reply(request: bytes) -> bytes:
        if b"gzip-please" in request:
            return answer(packed, b"content-encoding: gzip\r\n")
        parts = [payload[i : i + 700] for i in range(0, len(payload), 700)]
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts)
        return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"

    server = await serving(keep_alive_server(reply))
    assert await post(client, server.url) == (200, payload)
    assert await post(client, server.url, b"gzip-please") == (200, payload)
    assert await post(client, server.url) == (200, payload)
    assert server.connections == 1
    await server.__aexit__()


async def test_connection_close_and_idle_close(client: HttpClient) -> None:
    """`Connection: close` answers, and a server that closes idle connections after 50 ms: every call
    succeeds, each request reaches the server exactly once."""

    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                try:
                    request = await asyncio.wait_for(read_request(reader), 0.05)
                except (TimeoutError, asyncio.IncompleteReadError):
                    return  # idle: the server closes the connection
                server.requests.append(request)
                closing = b"close-me" in request
                writer.write(answer(b"{}", b"connection: close\r\n" if closing else b""))
                await writer.drain()
                if closing:
                    return

        return handler

    server = await serving(make)
    for i in range(6):
        assert (await post(client, server.url, b"close-me" if i % 2 else b"{}"))[0] == 200
        await asyncio.sleep(0.1 if i % 3 == 0 else 0)  # past the server's idle timeout now and then
    assert len(server.requests) == 6 and server.connections >= 4
    await server.__aexit__()


async def test_100_continue_is_not_the_answer(client: HttpClient) -> None:
    def reply(request: bytes) -> bytes:
        tag = request.rsplit(b"\r\n\r\n", 1)[1]
        return b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b'{"tag":"' + tag + b'"}')

    server = await serving(keep_alive_server(reply))
    assert await post(client, server.url, b"first") == (200, b'{"tag":"first"}')
    assert await post(client, server.url, b"second") == (200, b'{"tag":"second"}')
    await server.__aexit__()


async def test_body_until_close(client: HttpClient) -> None:
    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.next_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")
            for part in (b'{"a":', b"[1,2,", b"3]}"):
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.01)

        return handler

    server = await serving(make)
    assert await post(client, server.url) == (200, b'{"a":[1,2,3]}')
    assert await post(client, server.url) == (200, b'{"a":[1,2,3]}')
    assert server.connections == 2
    await server.__aexit__()


async def test_oversized_answers_are_refused_without_reading_them(client: HttpClient) -> None:
    big = b"[" + b"0," * (3 * MB) + b"0]"
    sent: list[int] = []

    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = await server.next_request(reader)
            assert request is not None
            if b"chunked" in request:
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"1" * 64 * 1024)
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(big))
                chunk = big[: 64 * 1024]
            total = 0
            try:
                for _ in range(200):  # 12.5 MB offered, unless the client goes away
                    writer.write(chunk)
                    await writer.drain()
                    total += len(chunk)
            finally:
                sent.append(total)

        return handler

    server = await serving(make)
    with pytest.raises(AnswerTooLarge, match="more than 1048576 bytes"):
        await post(client, server.url, b"length")
    with pytest.raises(AnswerTooLarge):
        await post(client, server.url, b"chunked")
    await eventually_async(lambda: len(sent) == 2, within=5)  # both handlers saw the client go
    assert max(sent) < 8 * MB  # the client stopped reading and closed
    await server.__aexit__()


async def test_small_gzip_inflating_past_the_cap_is_refused() -> None:
    """A 64 KB gzip that inflates to 64 MB: refused once the decoded bytes pass the 1 MB cap, without
    ever holding the inflated answer."""
    bomb = gzip.compress(b"0" * 64 * MB, compresslevel=9)
    assert len(bomb) < 200 * 1024

    server = await serving(keep_alive_server(lambda req: answer(bomb, b"content-encoding: gzip\r\n")))
    http = HttpClient("up", max_connections=2, keepalive_s=4.0, connect_s=1.0, read_s=5.0)
    tracemalloc.start()
    try:
        with pytest.raises(AnswerTooLarge):
            await post(http, server.url, max_bytes=MB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await http.close()
    assert peak < 12 * MB, peak
    await server.__aexit__()


async def test_error_answers_are_read_truncated(client: HttpClient) -> None:
    body = b'{"code":"InternalError","message":"' + b"m" * 200_000 + b'"}'
    server = await serving(
        keep_alive_server(lambda req: answer(body).replace(b"200 OK", b"500 Internal Server Error", 1))
    )
    status, got = await post(client, server.url)
    assert status == 500 and len(got) == 64 * 1024 and got.startswith(b'{"code":"InternalError"')
    await server.__aexit__()


async def test_read_timeout_is_per_read_not_per_answer() -> None:
    """read_s bounds the wait between reads: a steady trickle longer than read_s in total is fine, a stall
    of more than read_s is a timeout."""

    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (request := await server.next_request(reader)) is not None:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
                await writer.drain()
                pause = 0.1 if b"trickle" in request else 1.0
                for _ in range(10):
                    await asyncio.sleep(pause)
                    writer.write(b"1")
                    await writer.drain()

        return handler

    server = await serving(make)
    http = HttpClient("up", max_connections=2, keepalive_s=4.0, connect_s=1.0, read_s=0.4)
    try:
        t0 = time.monotonic()
        assert await post(http, server.url, b"trickle") == (200, b"1" * 10)
        assert time.monotonic() - t0 > 0.8
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await post(http, server.url, b"stall")
        assert time.monotonic() - t0 < 0.9
    finally:
        await http.close()
        await server.__aexit__()


async def test_post_is_never_sent_twice_on_a_dropped_connection(client: HttpClient) -> None:
    """The server answers the first request of a connection, then reads the second and drops the
    connection without answering: the call fails (the retry policy decides what next) and the server
    received that POST once, not again on a new connection behind the caller's back."""

    def make(server: Server) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.next_request(reader)
            writer.write(answer(b"{}"))
            await writer.drain()
            await server.next_request(reader)  # read, never answered: the connection closes

        return handler

    server = await serving(make)
    assert (await post(client, server.url, b"one"))[0] == 200
    with pytest.raises(UpstreamFailed, match="closed before the answer"):
        await post(client, server.url, b"two")
    await eventually_async(lambda: len(server.requests) == 2, within=5)
    assert [r.rsplit(b"\r\n\r\n", 1)[1] for r in server.requests] == [b"one", b"two"]
    assert server.connections == 1
    await server.__aexit__()


async def test_refused_connection_is_a_clean_error(client: HttpClient) -> None:
    server = await serving(keep_alive_server(lambda req: answer(b"{}")))
    url = server.url
    await server.__aexit__()
    await asyncio.sleep(0.01)
    with pytest.raises(UpstreamFailed, match="could not be reached"):
        await post(client, url)


class ForwardProxy:
    """A tiny HTTP forward proxy: reads an absolute-form request, sends it to the origin on a fresh
    connection in origin form, relays the answer; records the targets it was asked for."""

    def __init__(self) -> None:
        self.targets: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    request = await read_request(reader)
                except asyncio.IncompleteReadError:
                    return
                line, rest = request.split(b"\r\n", 1)
                method, target, version = line.split(b" ")
                self.targets.append(target.decode())
                hostport, _, path = target.removeprefix(b"http://").partition(b"/")
                host, port = hostport.split(b":")
                up_reader, up_writer = await asyncio.open_connection(host.decode(), int(port))
                up_writer.write(b"%s /%s %s\r\n" % (method, path, version) + rest)
                await up_writer.drain()
                head = await up_reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                )
                writer.write(head + await up_reader.readexactly(length))
                await writer.drain()
                up_writer.close()
        finally:
            writer.close()


async def test_proxy_from_the_environment_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = ForwardProxy()
    proxy_server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{proxy_server.sockets[0].getsockname()[1]}"
    server = await serving(keep_alive_server(lambda req: answer(b'{"via":"origin"}')))
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    try:
        via_proxy = HttpClient("up", max_connections=2, keepalive_s=4.0, connect_s=1.0, read_s=1.0)
        assert await post(via_proxy, server.url) == (200, b'{"via":"origin"}')
        await via_proxy.close()
        assert proxy.targets == [server.url]

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        direct = HttpClient("up", max_connections=2, keepalive_s=4.0, connect_s=1.0, read_s=1.0)
        assert await post(direct, server.url) == (200, b'{"via":"origin"}')
        await direct.close()
        assert proxy.targets == [server.url] and len(server.requests) == 2
    finally:
        proxy_server.close()
        await server.__aexit__()
