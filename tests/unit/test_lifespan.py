"""The lifespan: everything create_app opens is closed at shutdown, in reverse order, even when one close
raises, and what a failed start already opened is closed too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.api.asgi.drain import Drain
from app.cache.lru import MemoryCache
from app.config.settings import Settings
from app.inputs.media.fetcher import Fetcher
from app.limits.decider import LimitDecider
from app.main import create_app
from app.service import EmbeddingService
from app.upstreams.dashscope import DashScopeUpstream


def settings() -> Settings:
    """A DashScope upstream (never called here), the in-process cache and limits, media fetching on."""
    return Settings(
        dashscope_api_key="sk-test",
        dashscope_base_url="http://127.0.0.1:9/api/v1",
        media_fetch=True,
        local_model=False,
        gateway_auth="off",
    )


def record(monkeypatch: pytest.MonkeyPatch, closed: list[str], cls: type, name: str, raises: bool = False) -> None:
    """Every call of cls.close is written down in `closed` (then the real close runs, or it raises)."""
    original: Callable[[Any], Awaitable[None]] = cls.close  # type: ignore[attr-defined]

    async def close(self: Any) -> None:
        closed.append(name)
        await original(self)
        if raises:
            raise RuntimeError(f"{name} failed to close")

    monkeypatch.setattr(cls, "close", close)


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    out: list[str] = []
    for cls, name in (
        (DashScopeUpstream, "upstream"),
        (LimitDecider, "limits"),
        (EmbeddingService, "service"),
        (Fetcher, "fetcher"),
    ):
        record(monkeypatch, out, cls, name)
    uninstall = Drain.uninstall
    monkeypatch.setattr(Drain, "uninstall", lambda self: (out.append("drain"), uninstall(self))[1])
    return out


async def test_everything_closes_in_reverse_order_even_when_one_close_raises(
    monkeypatch: pytest.MonkeyPatch, closed: list[str]
) -> None:
    record(monkeypatch, closed, MemoryCache, "cache", raises=True)
    app = create_app(settings())
    with pytest.raises(RuntimeError, match="cache failed to close"):
        async with app.router.lifespan_context(app):
            gw = app.state.gateway
            assert closed == []
    assert closed == ["drain", "fetcher", "service", "limits", "cache", "upstream"]
    assert gw.fetcher is not None and gw.fetcher.client.is_closed


async def test_a_failed_start_closes_what_it_had_opened(monkeypatch: pytest.MonkeyPatch, closed: list[str]) -> None:
    record(monkeypatch, closed, MemoryCache, "cache")

    async def unreachable(self: LimitDecider) -> None:
        raise ConnectionError("limits store unreachable at start")

    monkeypatch.setattr(LimitDecider, "start", unreachable)
    app = create_app(settings())
    with pytest.raises(ConnectionError):
        async with app.router.lifespan_context(app):
            pytest.fail("the app must not start")
    assert closed == ["limits", "cache", "upstream"]
