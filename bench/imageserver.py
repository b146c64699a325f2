"""A small image origin on loopback for tests and the soak: serves configured paths from a thread.

    with ImageServer() as origin:
        origin.add("/a.png", png_bytes(2, 2))
        origin.redirect("/r", "http://127.0.0.1:9/")
        url = origin.url("/a.png")
        ...
        origin.hits  # every path requested, in order

Each route can lie about its Content-Type, answer slowly, stream without a Content-Length, or answer
any status, so the media fetcher's checks can be exercised against a real HTTP server.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def png_bytes(width: int = 1, height: int = 1, seed: int = 0) -> bytes:
    """A real (decodable) RGB PNG whose pixels depend on seed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = bytes((seed + i) % 256 for i in range(width * 3))
    raw = b"".join(b"\x00" + row for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


JPEG_BYTES = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64 + b"\xff\xd9"


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "image/png"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunked: bool = False  # no Content-Length: the body is streamed in pieces


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        self.server.hosts.append(self.headers.get("Host", ""))
        route = self.server.routes.get(self.path) or self.server.routes.get(self.path.split("?")[0])
        if route is None:
            route = Route(b"not found", status=404, content_type="text/plain")
        if route.delay_s:
            time.sleep(route.delay_s)
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        for name, value in route.headers.items():
            self.send_header(name, value)
        if route.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(route.body), 65536):
                piece = route.body[i : i + 65536]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many fetches at once (socketserver's default backlog is 5)
    routes: dict[str, Route]
    hits: list[str]
    hosts: list[str]

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that hangs up mid-body (the fetcher's size cap) is expected


class ImageServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self._server = _Server((host, 0), _Handler)
        self._server.routes, self._server.hits, self._server.hosts = {}, [], []
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def hits(self) -> list[str]:
        return self._server.hits

    @property
    def hosts(self) -> list[str]:
        return self._server.hosts

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.netloc}{path}"

    def add(self, path: str, body: bytes, **route: Any) -> str:
        self._server.routes[path] = Route(body, **route)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self._server.routes[path] = Route(b"", status=status, content_type="text/plain", headers={"Location": location})
        return self.url(path)

    def start(self) -> ImageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
