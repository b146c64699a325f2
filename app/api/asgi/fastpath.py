"""The embedding routes, served without FastAPI's per-request machinery.

FastAPI keeps documenting these routes (the OpenAPI schema comes from their decorators, and their
functions are the ones called here), but a POST to one of them is dispatched by `FastPath` straight to
the route function: no router walk, no dependency solving, no exception-middleware and exit-stack
layers. And `Fronted` puts the gateway's own pure-ASGI layers (Observe, the header cap, the drain,
FastPath) in front of FastAPI instead of inside Starlette's middleware stack, so these routes also skip
FastAPI's per-request telemetry check, ServerErrorMiddleware and FastAPI's body-limit layer. All these
layers together cost about a fifth of the gateway's time on a cache hit (py-spy, `bench/README.md`),
and these routes use none of them: they read and cap their own bodies and raise GatewayError, which is
rendered here by the same table as everywhere else (errors.response_for). Every other path, and other
methods on these paths, go through FastAPI's whole stack as usual.

Only a route that needs nothing from FastAPI is served here (`routes_of` checks: POST, no dependencies, no
declared parameters but the request): a route that gains a `Depends(...)` (auth, say) drops back to
FastAPI's routing by itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ...errors import response_for

Endpoint = Callable[[Request], Awaitable[Response]]


class Fronted(FastAPI):
    """FastAPI with pure-ASGI layers in front of all of it (its telemetry check, Starlette's middleware
    stack, the router) for HTTP requests. `add_front` works like `add_middleware` (the last one added is
    the outermost); lifespan events go to FastAPI directly. An exception escaping a front layer is not
    rendered by Starlette (none of ours raises: FastPath renders its routes' errors itself)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.front: list[Middleware] = []
        self.front_stack: ASGIApp | None = None

    def add_front(self, cls: Any, **kwargs: Any) -> None:
        if self.front_stack is not None:
            raise RuntimeError("cannot add a front layer once the application has started")
        self.front.insert(0, Middleware(cls, **kwargs))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.front_stack is None:
            app: ASGIApp = super().__call__
            for layer in reversed(self.front):
                app = layer.cls(app, *layer.args, **layer.kwargs)
            self.front_stack = app
        scope["app"] = self
        await self.front_stack(scope, receive, send)


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


def routes_of(app: FastAPI, paths: Iterable[str]) -> dict[str, Endpoint]:
    """The routes among `paths` that can be served past FastAPI: POST only, and nothing to solve (no
    dependencies of their own, of a router they were included with, or of the app)."""
    wanted = set(paths)
    if app.router.dependencies:
        return {}
    return {path: ep for path, ep in _plain_routes(app.routes, "") if path in wanted}


def _plain_routes(routes: Iterable[object], prefix: str) -> Iterator[tuple[str, Endpoint]]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI >= 0.16x keeps included routers apart
        if included is not None:
            context = getattr(route, "include_context", None)
            if context is None or getattr(context, "dependencies", None):
                continue
            yield from _plain_routes(included.routes, prefix + getattr(context, "prefix", ""))
        elif isinstance(route, APIRoute) and route.methods == {"POST"} and _plain(route):
            yield prefix + route.path, route.endpoint


def _plain(route: APIRoute) -> bool:
    d = route.dependant
    declared = (d.dependencies, d.path_params, d.query_params, d.header_params, d.cookie_params, d.body_params)
    return not any(declared) and not route.dependencies and d.request_param_name == "request"
