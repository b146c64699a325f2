"""Aliases: the paths of DashScope's OpenAI-compatible mode served as the gateway's own /v1 routes.

A team that used DashScope through the openai SDK has `base_url=".../compatible-mode/v1"`; changing only
the host must be enough. `/compatible-mode/v1/embeddings`, `/compatible-mode/v1/models` and
`/compatible-mode/v1/models/{id}` become `/v1/...` before anything else sees the request (the first step
of the front layer, front.py; raw_path keeps what the client sent), so they are the /v1 routes in every
respect: auth, limits, cache, the fast path, the metrics' route label. Nothing else is rewritten: any
other path under a known prefix gets a 404 that lists the routes there (`routes_under`).
"""

from __future__ import annotations

from ..routes import COMPATIBLE, ROUTES_UNDER

ALIASED = ("/embeddings", "/models")


def aliased(path: str) -> str:
    """`path`, or its /v1 route when it is one of the compatible mode's aliases."""
    rest = path[len(COMPATIBLE) :]
    if path.startswith(COMPATIBLE) and (rest in ALIASED or rest.startswith("/models/")):
        return "/v1" + rest
    return path


def routes_under(path: str) -> str:
    """For a 404: the routes under the known prefix `path` starts with ('' when none)."""
    for prefix, routes in ROUTES_UNDER:
        if path.startswith(prefix):
            return f"; the routes here are {routes}"
    return ""
