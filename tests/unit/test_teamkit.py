"""tests/support/teamkit.py: fire() spreads its requests over several servers without ever closing a
connection a request is using.

httpcore's pool can close an idle connection it has already handed to a queued request (encode/httpcore#1110):
a pool shared by several origins and full at max_connections closes an idle connection of one origin to
make room for another, and the connection it picks may be the one a request was just given, whose request then
ends in httpx.ReadError (ClosedResourceError) without reaching the server's answer. fire() keeps a pool per
server, each sized for every request in flight, so a pool never closes an idle connection to make room: a
connection opens only when the requests in flight to its server need one more.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from tests.support.polling import eventually_async
from tests.support.teamkit import fire


class Counting:
    """An ASGI app answering `{}` after `pause_s`, keeping the client port of every request: the connections
    the client opened."""

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s
        self.ports: set[int] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.ports.add(scope["client"][1])
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep(self.pause_s)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
async def servers() -> AsyncIterator[list[tuple[str, Counting]]]:
    running: list[tuple[uvicorn.Server, asyncio.Task[None], str, Counting]] = []
    for pause_s in (0.0, 0.002, 0.01):  # answers come back in another order than the requests went out
        app = Counting(pause_s)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=60)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        running.append((server, task, f"http://127.0.0.1:{sock.getsockname()[1]}", app))
    await eventually_async(lambda: all(server.started for server, *_ in running), interval=0.01, what="started")
    yield [(url, app) for _, _, url, app in running]
    for server, task, _, _ in running:
        server.should_exit = True
        await task


async def test_each_server_gets_no_more_connections_than_requests_in_flight(
    servers: list[tuple[str, Counting]],
) -> None:
    replies = await fire([url for url, _ in servers], 600, None, lambda i: {"i": i}, in_flight=30)
    assert [r.status for r in replies] == [200] * 600
    opened = [len(app.ports) for _, app in servers]
    assert all(n <= 30 for n in opened), opened
