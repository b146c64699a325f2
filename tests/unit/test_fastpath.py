"""The embedding routes' fast path: which routes take it, and that it answers as FastAPI's routing would."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from app.api import dashscope, openai
from app.api.asgi import fastpath
from app.api.routes import FAST_PATHS
from app.config.settings import Settings
from app.main import create_app


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    monkeypatch.setenv("GATEWAY_AUTH", "off")
    # No local model: its load (importing torch in a thread) is waited for at the app's stop, 40-64 s of this
    # test under CI's load, and nothing here is about it (tests/unit/test_local_model.py is).
    settings = Settings(dashscope_api_key="sk-test", dashscope_base_url="http://127.0.0.1:9", local_model=False)
    return create_app(settings)


def test_the_embedding_routes_take_the_fast_path(app: FastAPI) -> None:
    assert sorted(fastpath.routes_of(app, FAST_PATHS)) == sorted(FAST_PATHS)


def test_a_route_with_a_dependency_stays_with_fastapi() -> None:
    async def who() -> str:
        return "someone"

    guarded = FastAPI()
    guarded.include_router(openai.router, dependencies=[Depends(who)])
    guarded.include_router(dashscope.router)
    assert sorted(fastpath.routes_of(guarded, FAST_PATHS)) == sorted(FAST_PATHS[1:])


def test_errors_on_the_fast_path_keep_the_wire_format(app: FastAPI) -> None:
    with TestClient(app) as client:
        r = client.post("/v1/embeddings", json={"model": "no-such-model", "input": "x"})
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"
        assert r.headers["x-request-id"]
        r = client.post(FAST_PATHS[2], json={"model": "text-embedding-v4", "input": {"texts": []}})
        assert r.status_code == 400 and r.json()["code"] == "InvalidParameter" and r.json()["request_id"]
        r = client.get("/v1/embeddings")  # other methods: FastAPI's routing, as before
        assert r.status_code == 405
        assert "/v1/embeddings" in client.get("/openapi.json").json()["paths"]
