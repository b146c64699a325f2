"""An OTLP/HTTP sink for benchmarks with traces on: accepts every POST (spans are not decoded), answers
200 with an empty export response, and counts them (GET /_stats: posts and bytes received).

    python -m bench.otlpsink --port 4318
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

counts = {"posts": 0, "bytes": 0}
lock = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

    def do_POST(self) -> None:
        size = int(self.headers.get("content-length", "0"))
        self.rfile.read(size)
        with lock:
            counts["posts"] += 1
            counts["bytes"] += size
        self._answer(b"", "application/x-protobuf")

    def do_GET(self) -> None:
        with lock:
            body = json.dumps(counts).encode()
        self._answer(body, "application/json")

    def _answer(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.otlpsink")
    ap.add_argument("--port", type=int, required=True)
    port = ap.parse_args().port
    ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()


if __name__ == "__main__":
    main()
