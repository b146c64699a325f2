"""The compatible-mode aliases (issue 23, item 1): rewritten first by the front layer, so the fast path, the
metrics and the inner layers see the /v1 route; other paths untouched."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from starlette.datastructures import State
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.asgi.aliases import routes_under
from app.api.asgi.front import Front
from app.api.asgi.headerlimit import HeaderLimit
from app.metrics import Metrics


async def endpoint(request: Request) -> Response:
    return PlainTextResponse(f"fast {request.url.path}")


async def elsewhere(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse(f"router {scope['path']}")(scope, receive, send)


@pytest.mark.parametrize(
    ("method", "sent", "answer"),
    [
        ("POST", "/compatible-mode/v1/embeddings", "fast /v1/embeddings"),
        ("GET", "/compatible-mode/v1/models", "router /v1/models"),
        ("GET", "/compatible-mode/v1/models/text-embedding-v4", "router /v1/models/text-embedding-v4"),
        ("POST", "/compatible-mode/v1/embeddingsX", "router /compatible-mode/v1/embeddingsX"),
        ("POST", "/compatible-mode/v1/chat/completions", "router /compatible-mode/v1/chat/completions"),
        ("POST", "/v1/embeddings", "fast /v1/embeddings"),
    ],
)
def test_compatible_mode_paths_become_v1_ahead_of_the_fast_path(method: str, sent: str, answer: str) -> None:
    metrics = Metrics(CollectorRegistry())
    app = Front(elsewhere, metrics, {"/v1/embeddings": endpoint}, {}, HeaderLimit(8192, 100), State())
    assert TestClient(app).request(method, sent).text == answer


def test_the_metrics_and_the_inner_layers_see_the_v1_route() -> None:
    seen: list[str] = []

    class Inner:
        def __init__(self, app: ASGIApp) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            seen.append(scope["path"])
            await self.app(scope, receive, send)

    metrics = Metrics(CollectorRegistry())
    limit = HeaderLimit(8192, 100)
    app = Front(elsewhere, metrics, {"/v1/embeddings": endpoint}, {}, limit, State(), [Middleware(Inner)])
    assert TestClient(app).post("/compatible-mode/v1/embeddings").text == "fast /v1/embeddings"
    assert seen == ["/v1/embeddings"]
    metrics.tally.flush()  # what the loop's next turn would have applied
    text = generate_latest(metrics.registry).decode()
    assert 'gateway_requests_total{route="openai",status_class="2xx",team="anonymous"} 1.0' in text


def test_routes_under_a_known_prefix() -> None:
    assert "POST /compatible-mode/v1/embeddings" in routes_under("/compatible-mode/v1/chat/completions")
    assert "POST /v1/embeddings" in routes_under("/v1/chat/completions")
    assert routes_under("/favicon.ico") == ""
