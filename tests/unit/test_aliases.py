"""The compatible-mode aliases (issue 23, item 1): rewritten before every other layer, so the fast path serves
them; other paths untouched."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from app.api.asgi.aliases import Aliases, routes_under
from app.api.asgi.fastpath import FastPath
from app.config.settings import Settings
from app.main import create_app


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
    app = Aliases(FastPath(elsewhere, {"/v1/embeddings": endpoint}, {}))
    assert TestClient(app).request(method, sent).text == answer


def test_the_aliases_are_the_outermost_front_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_AUTH", "off")
    app = create_app(Settings(dashscope_api_key="sk-test", dashscope_base_url="http://127.0.0.1:9"))
    assert app.front[0].cls is Aliases


def test_routes_under_a_known_prefix() -> None:
    assert "POST /compatible-mode/v1/embeddings" in routes_under("/compatible-mode/v1/chat/completions")
    assert "POST /v1/embeddings" in routes_under("/v1/chat/completions")
    assert routes_under("/favicon.ico") == ""
