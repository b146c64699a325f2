"""Fronted: FastAPI behind the gateway's one front layer, `Front`, which runs for every HTTP request ahead
of FastAPI's per-request telemetry check, Starlette's middleware stack and the router (lifespan events go to
FastAPI directly). In this order, in one ASGI call (it was five nested layers, each an await and a wrapped
`send`: about a tenth of a cache hit's CPU, bench/README.md):

1. the compatible mode's aliases become /v1 paths (aliases.py), so that every step below sees the /v1 route;
2. the request's id and Exchange (exchange.py, observe.py), and whether its answer says `Connection: close`
   (the gateway is draining, drain.py);
3. the in-flight gauge, then, when the request ends, its count, duration and log line (observe.py; probes
   and scrapes, routes.QUIET, are neither counted nor logged);
4. the header cap (headerlimit.py): 431 in the caller's wire format;
5. the inner layers added with `add_front` (the request's span when traces are on, app/telemetry/incoming.py);
6. a POST to a fast-path route goes straight to its function (fastpath.py), any other request to FastAPI.

Every answer carries the request id, the route's own headers (the rate-limit headers, exchange.headers) and,
when draining, `Connection: close`. An answer the front layer has in hand (a fast-path route's Response, a
431) gets them in its head before it is written, so that its messages go to the server unwrapped; FastAPI's
answers get them through a wrapped `send`. An exception escaping the front layer is not rendered by
Starlette: none of ours raises (the fast path renders its routes' errors through the app's own handler table).

The rule that keeps the fast path honest: a middleware added the usual way (`app.add_middleware`, or
`@app.middleware("http")`) would run inside FastAPI's stack, which the fast path skips, so it would
silently never see the hot routes. Adding one while the fast path serves any route raises at once, and an
app that has one anyway (passed to the constructor, or appended by hand) fails at start, each time with a
message saying how to add it instead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import State
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...metrics import Metrics
from ..rendering import render, wire_of
from ..routes import COMPATIBLE, QUIET
from .aliases import aliased
from .exchange import SCOPE_KEY, Exchange
from .fastpath import Endpoint, FastPath, Handler
from .headerlimit import HeaderLimit
from .observe import OTHER_ROUTE, ROUTES, Observer

Headers = list[tuple[bytes, bytes]]


def stamp(headers: Headers, exchange: Exchange) -> Headers:
    """`headers` (an answer's head) with what the front layer adds to every answer."""
    if exchange.headers:
        headers += exchange.headers
    for name, _ in headers:
        if name.lower() == b"x-request-id":
            break
    else:
        headers.append((b"x-request-id", exchange.request_id.encode()))
    if exchange.closing:
        headers.append((b"connection", b"close"))
    return headers


class Front:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        routes: dict[str, Endpoint],
        handlers: Mapping[Any, Handler],
        header_limit: HeaderLimit,
        state: State,
        inner: Sequence[Middleware] = (),
    ) -> None:
        """`app`: FastAPI's own stack; `routes`: the fast path's; `state`: the app's (its `gateway`, once the
        lifespan started, says whether it is draining); `inner`: layers between the front and the routes,
        outermost first."""
        self.app = app
        self.state = state
        self.fast = FastPath(routes, handlers)
        self.observer = Observer(metrics)
        self.header_limit = header_limit
        served: ASGIApp = self.serve
        for layer in reversed(inner):
            served = layer.cls(served, *layer.args, **layer.kwargs)
        self.served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(COMPATIBLE):
            path = scope["path"] = aliased(path)  # raw_path keeps what the client sent
        observer = self.observer
        exchange = scope[SCOPE_KEY] = Exchange(observer.request_id(scope))
        gateway = getattr(self.state, "gateway", None)
        exchange.closing = gateway is not None and not gateway.ready
        if path in QUIET:
            await self.checked(exchange, scope, receive, send)
            return
        route = ROUTES.get(path, OTHER_ROUTE)
        observer.begin()
        t0 = time.perf_counter()
        try:
            await self.checked(exchange, scope, receive, send)
        finally:
            observer.end(route, exchange, time.perf_counter() - t0)

    async def checked(self, exchange: Exchange, scope: Scope, receive: Receive, send: Send) -> None:
        err = self.header_limit.refusal(scope["headers"])
        if err is None:
            await self.served(scope, receive, send)
            return
        response = render(err, wire_of(scope["path"]), exchange.request_id)
        exchange.status = response.status_code
        stamp(response.raw_headers, exchange)
        await response(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The innermost step: the fast path's route, or FastAPI."""
        exchange: Exchange = scope[SCOPE_KEY]
        endpoint = self.fast.routes.get(scope["path"]) if scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, self.stamped(exchange, send))
            return
        response = await self.fast.respond(endpoint, scope, receive)
        exchange.status = response.status_code
        stamp(response.raw_headers, exchange)
        await response(scope, receive, send)

    @staticmethod
    def stamped(exchange: Exchange, send: Send) -> Send:
        async def stamping(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                message["headers"] = stamp(list(message.get("headers", [])), exchange)
            await send(message)

        return stamping


class Fronted(FastAPI):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.front: list[Middleware] = []  # the inner layers (add_front), outermost first
        self.front_stack: ASGIApp | None = None
        self.fast_routes: dict[str, Endpoint] = {}
        self.fast_paths: list[str] = []  # the paths the fast path serves past FastAPI's middleware stack
        self.metrics: Metrics | None = None
        self.header_limit: HeaderLimit | None = None

    def serve_front(self, metrics: Metrics, routes: dict[str, Endpoint], header_limit: HeaderLimit) -> None:
        """The front layer's parts: the metrics it counts in, the fast path's routes, the header cap."""
        self.metrics, self.fast_routes, self.header_limit = metrics, routes, header_limit
        self.fast_paths = sorted(routes)
        self.check_middleware()

    def add_front(self, cls: Any, **kwargs: Any) -> None:
        """A pure ASGI layer between the front layer and the routes, for every HTTP request (the last one
        added is the outermost of them)."""
        if self.front_stack is not None:
            raise RuntimeError("cannot add a front layer once the application has started")
        self.front.insert(0, Middleware(cls, **kwargs))

    def add_middleware(self, middleware_class: Any, *args: Any, **kwargs: Any) -> None:
        super().add_middleware(middleware_class, *args, **kwargs)
        try:
            self.check_middleware()
        except RuntimeError:
            self.user_middleware.pop(0)  # Starlette inserts at the front
            raise

    def check_middleware(self) -> None:
        """Raise when a middleware of FastAPI's stack would never run for the fast path's routes."""
        paths = self.fast_paths
        if not self.user_middleware or not paths:
            return
        names = ", ".join(getattr(m.cls, "__name__", repr(m.cls)) for m in self.user_middleware)
        raise RuntimeError(
            f"middleware {names} would never run for POST {', '.join(paths)}: these routes are served by the "
            "fast path, in front of FastAPI's middleware stack (app/api/asgi/fastpath.py). Add it as a front "
            "layer instead, app.add_front(cls, **options) in app/main.py (a pure ASGI class; it runs for "
            "every HTTP request), or take those paths out of FAST_PATHS in app/api/routes.py."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                try:
                    self.check_middleware()
                except RuntimeError as exc:  # the server stops at start and says why
                    await receive()  # lifespan.startup
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
            await super().__call__(scope, receive, send)
            return
        if self.front_stack is None:
            self.check_middleware()
            metrics, limit = self.metrics, self.header_limit
            if metrics is None or limit is None:
                raise RuntimeError("no front layer: call serve_front(...) before serving (app/main.py)")
            handlers = self.exception_handlers
            self.front_stack = Front(
                super().__call__, metrics, self.fast_routes, handlers, limit, self.state, self.front
            )
        scope["app"] = self
        await self.front_stack(scope, receive, send)
