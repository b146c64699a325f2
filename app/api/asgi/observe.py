"""A pure ASGI middleware around every request: request id, in-flight gauge, duration and count
metrics, and one JSON log line (never inputs, vectors or keys).

Routes and dependencies add fields to the log line (and the team label) with `annotate(request, ...)`:
model, items, hits, misses, tokens, upstream_s (the time spent waiting on the upstream, which the
overhead histogram subtracts), team.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...memory import release_of
from ...metrics import ANONYMOUS, Metrics
from .accesslog import AccessLog

ROUTES = {
    "/v1/embeddings": "openai",
    "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding": "dashscope_multimodal",
    "/api/v1/services/embeddings/text-embedding/text-embedding": "dashscope_text",
    "/v1/models": "models",
}
# Probes and scrapes: neither counted nor logged. Any other path is counted and logged as route "other".
QUIET = frozenset({"/healthz", "/readyz", "/metrics"})
OTHER_ROUTE = "other"
STATUS_CLASS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx"}  # anything else counts as 5xx
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def annotate(request: Request, **fields: Any) -> None:
    """Add fields to this request's log line (merged, so that auth and the route can both add theirs).
    Kept in the scope's state (`request.state.log`), read from the scope directly: a hot path."""
    state = request.scope.setdefault("state", {})
    info = state.get("log")
    if info is None:
        state["log"] = fields
    else:
        info.update(fields)


def team_of(request: Request) -> str | None:
    """The team that auth annotated on this request (None: no auth, the `anonymous` label)."""
    info = request.scope.get("state", {}).get("log")
    team = info.get("team") if isinstance(info, dict) else None
    return team if isinstance(team, str) else None


class RequestIds:
    """New request ids: 32 hex digits, a random prefix per process then a counter (unique without asking
    the OS for randomness on every request, as uuid4 does)."""

    def __init__(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.counter = itertools.count()

    def __call__(self, scope: Scope) -> str:
        """The caller's x-request-id when it is a safe token (letters, digits, `._:-`, up to 128), else a new
        one."""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate: str = value.decode("latin-1")
                if _SAFE_ID.match(candidate):
                    return candidate
                break
        return f"{self.prefix}{next(self.counter):016x}"


class Observe:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.request_id = RequestIds()
        self.access_log = AccessLog()
        metrics.init_routes(route for route in ROUTES.values() if route != "models")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = self.request_id(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid
        status = 500
        raw_rid = rid.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Routes (and the errors they raise) may leave response headers in request.state.
                extra = [(k.encode(), v.encode()) for k, v in (state.get("response_headers") or {}).items()]
                headers = [*message.get("headers", []), *extra]
                if not any(name.lower() == b"x-request-id" for name, _ in headers):
                    headers.append((b"x-request-id", raw_rid))
                message["headers"] = headers
            await send(message)

        path = scope["path"]
        if path in QUIET:
            await self.app(scope, receive, send_with_id)
            return
        route = ROUTES.get(path, OTHER_ROUTE)
        m = self.metrics
        m.in_flight.inc()
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - t0
            m.in_flight.dec()
            release_of(state)  # the bytes the request held from the memory budget (app/memory.py)
            info: dict[str, Any] = state.get("log") or {}
            team = info.get("team")
            m.child(m.requests, route, STATUS_CLASS.get(status // 100, "5xx"), m.team(team)).inc()
            m.child(m.request_duration, route).observe(elapsed)
            m.child(m.overhead, route).observe(max(0.0, elapsed - info.get("upstream_s", 0.0)))
            if self.access_log.enabled:
                line = {
                    "request_id": rid,
                    "route": route,
                    "status": status,
                    "duration_s": round(elapsed, 6),
                    **info,
                    "team": team or ANONYMOUS,
                }
                self.access_log.write(line)
