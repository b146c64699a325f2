"""Prices in the catalog: built-in ones where a provider's page gives them, none elsewhere (tokens without
money, never a guess), overridable and removable in the config file, lost when a model leaves its
built-in upstream."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from app.config.catalog import build_catalog
from app.config.settings import Settings

AVAILABLE = {"dashscope": None, "openai": None, "local": "off", "vllm": None}


def catalog(models: dict[str, Any] | None = None, **settings: Any) -> Any:
    s = Settings(models=models or {}, **settings)
    return build_catalog(s.models, s.upstream_configs(), AVAILABLE)


def test_built_in_prices_cite_known_amounts_and_other_models_have_none() -> None:
    c = catalog()
    v4, small, large = c.get("text-embedding-v4"), c.get("text-embedding-3-small"), c.get("text-embedding-3-large")
    assert (v4.price.currency, v4.price.per_1k_tokens) == ("CNY", Decimal("0.0005"))
    assert (small.price.currency, small.price.per_1k_tokens) == ("USD", Decimal("0.00002"))
    assert large.price.per_1k_tokens == Decimal("0.00013")
    assert c.get("tongyi-embedding-vision-plus").price is None  # no price known: tokens only
    assert c.get("multimodal-embedding-v1").price is None


def test_prices_are_overridden_removed_and_lost_off_their_upstream() -> None:
    c = catalog(
        {
            "text-embedding-v4": {"price": {"currency": "USD", "per_1k_tokens": "0.00007"}},
            "text-embedding-3-small": {"price": None},
            "tongyi-embedding-vision-plus": {"price": {"currency": "CNY", "per_1k_tokens": 0.0005, "per_image": 0.001}},
            "text-embedding-v3": {"upstream": "vllm"},
        },
        upstreams={"vllm": {"kind": "openai", "base_url": "http://vllm:8000/v1"}},
    )
    assert c.get("text-embedding-v4").price.currency == "USD"
    assert c.get("text-embedding-3-small").price is None
    assert c.get("tongyi-embedding-vision-plus").price.nanos(1000, images=2) == 500_000 + 2_000_000
    assert c.get("text-embedding-v3").price is None  # served by another upstream: the built-in price is not its


@pytest.mark.parametrize(
    "price",
    [{"currency": "yuan"}, {"currency": "CNY", "per_1k_tokens": -1}, {"currency": "CNY", "per_token": 1}],
)
def test_a_wrong_price_is_refused_naming_the_model(price: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"models\.text-embedding-v4\.price"):
        catalog({"text-embedding-v4": {"price": price}})
