"""The minimal ASGI baseline: reads the request body and answers a fixed JSON body of a chosen size,
under the same server (uvicorn, uvloop, httptools) as the gateway. What a gateway response of that size
costs with no work at all.

    python -m bench.baseline --port 8098
    POST /?size=N  -> 200 with an N-byte JSON body (the first request of each size builds it)
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.standin import answer_lifespan

Scope = dict[str, Any]


def body_of(size: int) -> bytes:
    """A JSON document of exactly `size` bytes (at least 12)."""
    head, tail = b'{"pad":"', b'"}'
    return head + b"x" * max(0, size - len(head) - len(tail)) + tail


class Baseline:
    def __init__(self) -> None:
        self.bodies: dict[int, bytes] = {}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        more = True
        while more:
            msg = await receive()
            more = msg.get("more_body", False)
        query = scope.get("query_string", b"")
        size = int(query[5:]) if query.startswith(b"size=") and query[5:].isdigit() else 2
        body = self.bodies.get(size)
        if body is None:
            body = self.bodies[size] = body_of(min(size, 64 * 1024 * 1024))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.baseline")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8098)
    a = ap.parse_args(argv)
    import uvicorn

    uvicorn.run(
        Baseline(), host=a.host, port=a.port, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
