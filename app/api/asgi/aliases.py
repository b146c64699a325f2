"""Aliases: the paths of DashScope's OpenAI-compatible mode served as the gateway's own /v1 routes.

A team that used DashScope through the openai SDK has `base_url=".../compatible-mode/v1"`; changing only
the host must be enough. `/compatible-mode/v1/embeddings`, `/compatible-mode/v1/models` and
`/compatible-mode/v1/models/{id}` become `/v1/...` before any other layer sees the request (this layer is
the outermost), so they are the /v1 routes in every respect: auth, limits, cache, the fast path, the
metrics' route label. Nothing else is rewritten: any other path under a known prefix gets a 404 that lists
the routes there (`routes_under`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from ..routes import COMPATIBLE, ROUTES_UNDER

ALIASED = ("/embeddings", "/models")


class Aliases:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if path.startswith(COMPATIBLE):
            rest = path[len(COMPATIBLE) :]
            if rest in ALIASED or rest.startswith("/models/"):
                scope["path"] = "/v1" + rest  # raw_path keeps what the client sent
        await self.app(scope, receive, send)


def routes_under(path: str) -> str:
    """For a 404: the routes under the known prefix `path` starts with ('' when none)."""
    for prefix, routes in ROUTES_UNDER:
        if path.startswith(prefix):
            return f"; the routes here are {routes}"
    return ""
