"""Prices of the models, and the money of a request, in integer nano-units of the price's currency.

A price is per 1,000 tokens (what the upstreams bill text by), plus, where an upstream bills media per
item, per image and per video. Built-in prices come from the providers' public price pages (cited beside
each); a model without a known price has none: the ledger then reports its tokens and no money, never a
guessed amount. The config file's `models.NAME.price` sets or replaces one (`price: null` removes it).

Money is counted in nanos (1e-9 of the currency), integers from end to end (the ledger adds them in Redis
with HINCRBY): CNY 0.0005 per 1,000 tokens is 500 nanos a token, so sums are exact whatever the traffic.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

NANO = Decimal(1_000_000_000)


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code: CNY, USD, ...")
    per_1k_tokens: Decimal = Field(default=Decimal(0), ge=0, description="per 1,000 billed tokens")
    per_image: Decimal = Field(default=Decimal(0), ge=0, description="per image sent upstream (item-billed media)")
    per_video: Decimal = Field(default=Decimal(0), ge=0, description="per video sent upstream (item-billed media)")

    # Nanos per token, image and video when each is a whole number (every price with at most 6 decimals per
    # 1,000 tokens and 9 per item): then a request's money is integer arithmetic, exactly what the Decimal
    # formula gives, without its cost on every request.
    @cached_property
    def _whole(self) -> tuple[int, int, int] | None:
        rates = (self.per_1k_tokens * NANO / 1000, self.per_image * NANO, self.per_video * NANO)
        if all(r == r.to_integral_value() for r in rates):
            return int(rates[0]), int(rates[1]), int(rates[2])
        return None

    def nanos(self, tokens: int, images: int = 0, videos: int = 0) -> int:
        """The money of these tokens and media items, rounded once to a nano."""
        whole = self._whole
        if whole is not None:
            per_token, per_image, per_video = whole
            return tokens * per_token + images * per_image + videos * per_video
        exact = self.per_1k_tokens * tokens / 1000 + self.per_image * images + self.per_video * videos
        return int((exact * NANO).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def amount(nanos: int) -> float:
    """Nanos as the number the usage and costs APIs show (OpenAI's `amount.value` is a JSON number): the
    nearest float to nanos / 1e9 (Python's integer division is correctly rounded, as Decimal's was)."""
    return nanos / 1_000_000_000


# Alibaba Cloud Model Studio, China (Beijing) region, which the default DashScope base URL names:
# https://help.aliyun.com/en/model-studio/embedding-interfaces-compatible-with-openai ("Price (per 1K input
# tokens)": text-embedding-v4 and v3 share the cell "CNY 0.0005"; batch calls are half, not served here).
# The Singapore region bills USD 0.07 per million tokens: set `price` in the config file for it.
_DASHSCOPE_TEXT: dict[str, Any] = {"currency": "CNY", "per_1k_tokens": "0.0005"}
# OpenAI: https://developers.openai.com/api/docs/models/text-embedding-3-small and .../text-embedding-3-large
# (USD 0.02 and 0.13 per 1M tokens, i.e. 0.00002 and 0.00013 per 1K).
BUILT_IN_PRICES: dict[str, dict[str, Any]] = {
    "text-embedding-v4": _DASHSCOPE_TEXT,
    "text-embedding-v3": _DASHSCOPE_TEXT,
    "text-embedding-3-small": {"currency": "USD", "per_1k_tokens": "0.00002"},
    "text-embedding-3-large": {"currency": "USD", "per_1k_tokens": "0.00013"},
}
