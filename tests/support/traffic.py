"""A known traffic mix for the metrics tests: every request it sends is written down with what the
gateway's counters must show for it (requests by route and status class, items by cache result, tokens
billed by the upstream and saved by the cache)."""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.inputs.items import TOKENS_PER_IMAGE
from bench.standin import IMAGE_TOKENS, text_tokens

OPENAI = "/v1/embeddings"
DS_TEXT = "/api/v1/services/embeddings/text-embedding/text-embedding"
DS_MM = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"
ROUTE_LABELS = {OPENAI: "openai", DS_TEXT: "dashscope_text", DS_MM: "dashscope_multimodal"}


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    status: int
    model: str = ""
    texts: list[str] = field(default_factory=list)
    images: int = 0


def text_est(text: str) -> int:
    """The gateway's own token estimate of a text item (what a cache hit saves)."""
    return max(1, len(text) // 3)


def openai(model: str, texts: list[str], status: int = 200) -> Call:
    return Call(OPENAI, {"model": model, "input": texts}, status, model, texts)


def ds_text(model: str, texts: list[str], status: int = 200) -> Call:
    return Call(DS_TEXT, {"model": model, "input": {"texts": texts}}, status, model, texts)


def png() -> str:
    """A data URI of an image the cache has not seen (the gateway checks the format by its magic bytes)."""
    data = b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes
    return "data:image/png;base64," + base64.b64encode(data).decode()


def ds_image_and_text(model: str, text: str, status: int = 200) -> Call:
    contents = [{"image": png()}, {"text": text}]
    return Call(DS_MM, {"model": model, "input": {"contents": contents}}, status, model, [text], images=1)


def unique(tag: str, n: int) -> list[str]:
    return [f"{tag} {i} {uuid.uuid4().hex[: 4 + i % 7]}" for i in range(n)]


@dataclass
class Mix:
    """Sends calls and keeps what the counters must be."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)  # what lets the traffic in (Gateway.headers)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    items: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (model, modality, cache)
    billed: Counter[str] = field(default_factory=Counter)  # model -> tokens
    saved: Counter[str] = field(default_factory=Counter)

    def send(self, calls: list[Call], *, cache: str = "miss", concurrency: int = 8) -> None:
        """Send concurrently, over new connections each time (so that every worker process gets some)."""
        limits = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=self.url, headers=self.headers, timeout=30, limits=limits) as client:

            def one(call: Call) -> None:
                resp = client.post(call.path, json=call.body)
                assert resp.status_code == call.status, (call.path, call.body, resp.status_code, resp.text[:300])
                self.record(call, cache)

            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(one, calls))

    def record(self, call: Call, cache: str) -> None:
        route = ROUTE_LABELS.get(call.path, "other")
        self.requests[(route, f"{call.status // 100}xx")] += 1
        if call.status != 200:
            return  # items and tokens count only answered requests
        self.items[(call.model, "text", cache)] += len(call.texts)
        self.items[(call.model, "image", cache)] += call.images
        if cache == "miss":
            self.billed[call.model] += sum(text_tokens(t) for t in call.texts) + IMAGE_TOKENS * call.images
        else:
            self.saved[call.model] += sum(text_est(t) for t in call.texts) + TOKENS_PER_IMAGE * call.images

    def other(self, client: httpx.Client, path: str) -> None:
        resp = client.get(path)
        assert resp.status_code == 404
        self.requests[("other", "4xx")] += 1
