"""The embedding routes, served without FastAPI's per-request machinery.

FastAPI keeps documenting these routes (the OpenAPI schema comes from their decorators, and their
functions are the ones called here), but a POST to one of them is dispatched by this middleware
straight to the route function: no router walk, no dependency solving, no exception-middleware and
exit-stack layers. Those layers cost about a sixth of the gateway's time on a cache hit, as measured
with py-spy (`bench/README.md`), and these routes use none of them: they read their own bodies and
raise GatewayError, which is rendered here by the same table as everywhere else (errors.response_for).
Every other path, and other methods on these paths, go through FastAPI as usual.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import response_for

Endpoint = Callable[[Request], Awaitable[Response]]


class FastPath:
    def __init__(self, app: ASGIApp, routes: dict[str, Endpoint]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            response = await endpoint(request)
        except Exception as exc:  # the one handler of this path: the same table as FastAPI's handlers
            response = await response_for(request, exc)
        await response(scope, receive, send)
