"""Fronted: FastAPI with the gateway's own pure-ASGI layers in front of all of it.

The front layers (Observe, the header cap, the drain, FastPath) run ahead of FastAPI's per-request
telemetry check, Starlette's middleware stack and the router, for every HTTP request; lifespan events go
to FastAPI directly. `add_front` works like `add_middleware` (the last one added is the outermost). An
exception escaping a front layer is not rendered by Starlette: none of ours raises (FastPath renders its
routes' errors through the app's own handler table).

The rule that keeps the fast path honest: a middleware added the usual way (`app.add_middleware`, or
`@app.middleware("http")`) would run inside FastAPI's stack, which the fast path skips, so it would
silently never see the hot routes. Adding one while FastPath serves any route raises at once, and an
app that has one anyway (passed to the constructor, or appended by hand) fails at start, each time with a
message saying how to add it instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from .fastpath import FastPath


class Fronted(FastAPI):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.front: list[Middleware] = []
        self.front_stack: ASGIApp | None = None
        self.fast_paths: list[str] = []  # the paths FastPath serves past FastAPI's middleware stack

    def add_front(self, cls: Any, **kwargs: Any) -> None:
        if self.front_stack is not None:
            raise RuntimeError("cannot add a front layer once the application has started")
        self.front.insert(0, Middleware(cls, **kwargs))
        if cls is FastPath:
            self.fast_paths = sorted(kwargs["routes"])
        self.check_middleware()

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
            app: ASGIApp = super().__call__
            for layer in reversed(self.front):
                app = layer.cls(app, *layer.args, **layer.kwargs)
            self.front_stack = app
        scope["app"] = self
        await self.front_stack(scope, receive, send)
