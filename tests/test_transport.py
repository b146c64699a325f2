"""PoolTransport against small real servers on loopback: keep-alive reuse, chunked answers, a connection the
server closed while idle, timeouts, refused connections, and TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from app.upstreams.transport import PoolTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n" % (len(body), extra) + body


async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    return server, f"{'https' if tls else 'http'}://127.0.0.1:{port}/embeddings"


async def test_connections_are_kept_alive_and_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                request = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(answer(b'{"echo":%d}' % len(request)))
            await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with server, httpx.AsyncClient(transport=PoolTransport(max_connections=4)) as client:
        for _ in range(5):
            r = await client.post(url, content=b"x" * 100, headers={"Authorization": "Bearer k"})
            assert r.status_code == 200 and r.json()["echo"] > 100
        results = await asyncio.gather(*(client.post(url, content=b"y") for _ in range(8)))
        assert all(r.status_code == 200 for r in results)
    assert connections <= 4


async def test_chunked_answers_and_connection_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
            b"retry-after: 2\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server, url = await serve(handler)
    async with server, httpx.AsyncClient(transport=PoolTransport(max_connections=2)) as client:
        for _ in range(3):  # each answer closes its connection: the next request opens a new one
            r = await client.post(url, content=b"{}")
            assert r.status_code == 503 and r.content == b"hello world" and r.headers["retry-after"] == "2"


async def test_a_connection_closed_while_idle_is_replaced_without_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b"{}"))  # keep-alive, as far as the client can tell...
        await writer.drain()
        writer.close()  # ...but the server closes it right after

    server, url = await serve(handler)
    async with server, httpx.AsyncClient(transport=PoolTransport(max_connections=1)) as client:
        for _ in range(4):
            assert (await client.post(url, content=b"{}")).status_code == 200
            await asyncio.sleep(0.01)


async def test_timeouts_and_refusals_raise_httpx_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    server, url = await serve(silent)
    async with server, httpx.AsyncClient(transport=PoolTransport(max_connections=1), timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(url, content=b"{}")
    closed = url  # the server is closed now: nothing listens on its port
    async with httpx.AsyncClient(transport=PoolTransport(max_connections=1), timeout=1) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(closed, content=b"{}")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(b'{"tls":true}'))
        await writer.drain()
        writer.close()

    server, url = await serve(handler, server_tls)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with server, httpx.AsyncClient(transport=PoolTransport(max_connections=1, ssl_context=trusting)) as c:
        assert (await c.post(url, content=b"{}")).json() == {"tls": True}
    async with httpx.AsyncClient(transport=PoolTransport(max_connections=1)) as untrusting:
        with pytest.raises(httpx.ConnectError):
            await untrusting.post(url, content=b"{}")
