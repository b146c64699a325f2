"""What create_app wires in front of and below the routes, checked by what it does: the fast path serves
the embedding routes (and refuses what it would skip), the hot cache answers repeat hits without Redis,
the access log writes a line per request. Each test fails if its part is taken out of the wiring."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest
import redis
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.asgi.accesslog import LOGGER
from app.api.routes import FAST_PATHS
from app.config.settings import Settings
from app.errors import NotFound
from app.main import create_app
from tests.support.processes import UPSTREAM_KEY, RedisServer, StandIn

Sent = list[dict[str, Any]]


def settings(standin: StandIn | None = None, **extra: Any) -> Settings:
    base = standin.dashscope_base if standin else "http://127.0.0.1:9/api/v1"
    return Settings(
        dashscope_api_key=UPSTREAM_KEY, dashscope_base_url=base, local_model=False, gateway_auth="off", **extra
    )


async def call(app: ASGIApp, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[Scope, Sent]:
    """One request straight into the ASGI app; returns the scope as the app left it, and what it sent."""
    raw = orjson.dumps(body) if body is not None else b""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: Sent = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return scope, sent


class Noop:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def test_the_embedding_routes_are_served_past_fastapis_router() -> None:
    app = create_app(settings())
    async with app.router.lifespan_context(app):
        for path in FAST_PATHS:
            scope, sent = await call(app, "POST", path, {"model": "no-such-model", "input": "x"})
            assert sent[0]["status"] in (400, 404)  # refused by the route itself
            assert "endpoint" not in scope, f"{path} went through FastAPI's router"
        scope, sent = await call(app, "GET", "/v1/models")
        assert sent[0]["status"] == 200 and scope["endpoint"].__name__ == "list_models"  # the router's mark


def test_middleware_the_fast_path_would_skip_is_refused_with_the_way_to_add_it() -> None:
    app = create_app(settings())
    with pytest.raises(RuntimeError, match=r"Noop would never run for POST /api/v1/.*app\.add_front"):
        app.add_middleware(Noop)
    assert app.user_middleware == []

    with pytest.raises(RuntimeError, match="never run"):

        @app.middleware("http")
        async def stamp(request: Request, call_next: Any) -> Any:
            return await call_next(request)


async def test_an_app_holding_such_middleware_fails_at_start() -> None:
    app = create_app(settings())
    app.user_middleware.insert(0, Middleware(Noop))  # past add_middleware's check
    sent: Sent = []
    messages = iter([{"type": "lifespan.startup"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent[0]["type"] == "lifespan.startup.failed" and "app.add_front" in sent[0]["message"]


async def test_fast_path_errors_go_through_the_apps_handler_table() -> None:
    app = create_app(settings())

    async def teapot(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"handled": type(exc).__name__}, status_code=418)

    app.add_exception_handler(NotFound, teapot)
    async with app.router.lifespan_context(app):
        scope, sent = await call(app, "POST", "/v1/embeddings", {"model": "no-such-model", "input": "x"})
    assert "endpoint" not in scope and sent[0]["status"] == 418
    assert orjson.loads(sent[1]["body"]) == {"handled": "NotFound"}


def mgets(server: RedisServer) -> int:
    stats = redis.Redis(port=server.port).info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


async def test_the_hot_cache_answers_repeat_hits_without_a_redis_round_trip(
    own_redis: RedisServer, standin: StandIn
) -> None:
    app = create_app(settings(standin, redis_url=own_redis.url, cache_namespace="wiring-hot"))
    body = {"model": "text-embedding-v4", "input": ["hot one", "hot two"]}
    async with app.router.lifespan_context(app):
        _, sent = await call(app, "POST", "/v1/embeddings", body)  # misses: upstream, then Redis and hot
        assert dict(sent[0]["headers"]).get(b"x-cache-misses") == b"2", sent[1]["body"]
        before = mgets(own_redis)
        _, sent = await call(app, "POST", "/v1/embeddings", body)
        assert dict(sent[0]["headers"])[b"x-cache-hits"] == b"2"
        assert mgets(own_redis) == before, "a repeat hit read Redis: no hot cache in front of it"
    assert len(standin.calls()) == 1


async def test_the_access_log_writes_one_line_per_request(capfd: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger(LOGGER)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        app = create_app(settings())
        async with app.router.lifespan_context(app):
            capfd.readouterr()
            scope, _ = await call(app, "POST", "/v1/embeddings", {"model": "no-such-model", "input": "x"})
            await asyncio.sleep(0)  # the log is flushed at the end of the loop's turn
    finally:
        logger.setLevel(level)
    lines = [orjson.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    assert [(x["route"], x["status"], x["request_id"]) for x in lines] == [
        ("openai", 404, scope["gateway.exchange"].request_id)
    ]
