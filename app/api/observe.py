"""A pure ASGI middleware around every request: request id, in-flight gauge, duration and count
metrics, and one JSON log line (never inputs, vectors or keys)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import Metrics

log = logging.getLogger("embedding_gateway.access")

ROUTES = {
    "/v1/embeddings": "openai",
    "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding": "dashscope_multimodal",
    "/api/v1/services/embeddings/text-embedding/text-embedding": "dashscope_text",
    "/v1/models": "models",
}
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Observe:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _SAFE_ID.match(candidate) else ""
                break
        rid = rid or uuid.uuid4().hex
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid
        route = ROUTES.get(scope["path"])
        status = 500
        raw_rid = rid.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Routes (and the errors they raise) may leave response headers in request.state.
                extra = [(k.encode(), v.encode()) for k, v in (state.get("response_headers") or {}).items()]
                message["headers"] = [*message.get("headers", []), *extra, (b"x-request-id", raw_rid)]
            await send(message)

        if route is None:
            await self.app(scope, receive, send_with_id)
            return
        m = self.metrics
        m.in_flight.inc()
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - t0
            m.in_flight.dec()
            info: dict[str, Any] = state.get("log") or {}
            team = m.team(info.get("team"))
            m.requests.labels(route, f"{status // 100}xx", team).inc()
            m.request_duration.labels(route).observe(elapsed)
            m.overhead.labels(route).observe(max(0.0, elapsed - info.get("upstream_s", 0.0)))
            if log.isEnabledFor(logging.INFO):
                line = {"request_id": rid, "route": route, "status": status, "duration_s": round(elapsed, 6), **info}
                log.info(orjson.dumps(line).decode())
