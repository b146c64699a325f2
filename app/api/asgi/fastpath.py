"""FastPath: the embedding routes, served without FastAPI's per-request machinery.

FastAPI keeps documenting these routes (the OpenAPI schema comes from their decorators, and their
functions are the ones called here), but a POST to one of them is dispatched by `FastPath` straight to
the route function: no router walk, no dependency solving, no exception-middleware and exit-stack
layers; and from the front layer (front.py) it also runs ahead of FastAPI's per-request telemetry check,
ServerErrorMiddleware and body-limit layer. All these layers together cost about a fifth of the
gateway's time on a cache hit (py-spy, `bench/README.md`), and these routes use none of them: they read
and cap their own bodies and raise GatewayError. Their errors are rendered by the app's own handler table
(`app.exception_handlers`, the one FastAPI uses for every other route, looked up the way Starlette does),
so a handler added to the app applies here too. Every other path, and other methods on these paths, go
through FastAPI's whole stack as usual. A middleware of that stack would never see these routes: Fronted
refuses one (front.py).

Only a route that needs nothing from FastAPI is served here (`routes_of` checks: POST, no dependencies, no
declared parameters but the request): a route that gains a `Depends(...)` (auth, say) drops back to
FastAPI's routing by itself, and create_app logs that it did.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Any]


class FastPath:
    """The routes served past FastAPI, and the app's handler table for their errors. Not a layer of its own:
    the front layer (front.py) asks it for a route's Response and writes it."""

    def __init__(self, routes: dict[str, Endpoint], handlers: Mapping[Any, Handler]) -> None:
        """`handlers`: the app's exception handlers (`app.exception_handlers`, shared, not copied)."""
        self.routes = routes
        self.handlers = handlers

    async def respond(self, endpoint: Endpoint, scope: Scope, receive: Receive) -> Response:
        """`endpoint`'s answer to the request, or its error rendered by the app's handler table."""
        request = Request(scope, receive)
        try:
            return await endpoint(request)
        except Exception as exc:  # rendered by the app's handler table, as on every other route
            return await self.render(request, exc)

    async def render(self, request: Request, exc: Exception) -> Response:
        """The app's handler for `exc`: by status code for an HTTPException, then by the nearest class in its
        MRO (Starlette's own lookup; the table always holds `Exception`, the handler of last resort)."""
        handler = self.handlers.get(exc.status_code) if isinstance(exc, HTTPException) else None
        if handler is None:
            handler = next(self.handlers[cls] for cls in type(exc).__mro__ if cls in self.handlers)
        response = handler(request, exc)
        if inspect.isawaitable(response):
            response = await response
        assert isinstance(response, Response)
        return response


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
