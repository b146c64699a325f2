"""The async step between parsing and the service when media is fetched by content (`media_fetch`).

Items are parsed (and so fully validated: model, modalities, counts, sizes) first, so a request that
would be refused costs no fetch. Then every image URL in the contents is fetched once (duplicates
share one fetch), replaced by a data URI of its bytes, and the contents are parsed again: the fetched
bytes meet exactly the checks an inline image meets (format, size for the model), the cache key hashes
the bytes (two URLs of one image share one vector, and so does the same image sent inline), and the
upstream receives the data URI. Video URLs are left as URLs (the upstream fetches them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from ...config.catalog import ModelSpec
from ...errors import GatewayError, InvalidRequest, PayloadTooLarge
from ...runtime.budget import Lease
from ...runtime.slices import Pause, collect, loop_turn
from ..items import Item
from .fetcher import Fetcher

Parse = Callable[[object], Iterable[Item]]  # items.each_*: parsed in slices (runtime/slices.py)


def _is_url(value: object) -> bool:
    return isinstance(value, str) and value[:8].lower().startswith(("http://", "https://"))


def image_urls(contents: object, where: str) -> dict[str, str]:
    """Every image URL in a list of contents -> the field that names it first (for error messages)."""
    found: dict[str, str] = {}
    if not isinstance(contents, list):
        return found
    for i, value in enumerate(contents):
        if not isinstance(value, dict):
            continue
        if _is_url(value.get("image")):
            found.setdefault(value["image"], f"{where}[{i}].image")
        images = value.get("multi_images")
        if isinstance(images, list):
            for j, image in enumerate(images):
                if _is_url(image):
                    found.setdefault(image, f"{where}[{i}].multi_images[{j}]")
    return found


def substitute(contents: list[Any], inline: dict[str, str]) -> list[Any]:
    """A copy of the contents with each fetched image URL replaced by its data URI."""
    out = []
    for value in contents:
        if isinstance(value, dict) and ("image" in value or "multi_images" in value):
            value = dict(value)
            if isinstance(value.get("image"), str):
                value["image"] = inline.get(value["image"], value["image"])
            if isinstance(value.get("multi_images"), list):
                value["multi_images"] = [inline.get(v, v) if isinstance(v, str) else v for v in value["multi_images"]]
        out.append(value)
    return out


async def fetch_all(
    fetcher: Fetcher, urls: dict[str, str], max_bytes: int, lease: Lease | None = None
) -> dict[str, str]:
    """URL -> data URI, fetched concurrently (bounded), within a per-request total of bytes and the
    process's memory budget (the lease); the first failure cancels the rest and is raised."""
    gate = asyncio.Semaphore(fetcher.concurrency)
    total = 0

    async def one(url: str, param: str) -> str:
        nonlocal total
        async with gate:
            fetched = await fetcher.fetch(url, param, max_bytes, lease)
        total += len(fetched.data)
        if total > fetcher.max_total_bytes:
            raise PayloadTooLarge(
                f"{param}: images fetched for this request exceed {fetcher.max_total_bytes} bytes", param=param
            )
        return fetched.data_uri()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = {url: group.create_task(one(url, param)) for url, param in urls.items()}
    except* GatewayError as failed:
        raise failed.exceptions[0] from None
    return {url: task.result() for url, task in tasks.items()}


async def parse_fetching(
    fetcher: Fetcher | None,
    spec: ModelSpec,
    contents: object,
    where: str,
    parse: Parse,
    lease: Lease | None = None,
    pause: Pause = loop_turn,
) -> list[Item]:
    """parse(contents), with image URLs fetched and inlined first when the gateway fetches media; the
    fetched bytes are taken from the request's memory lease. A large request is parsed in slices, `pause`
    awaited between them."""
    items = await collect(parse(contents), pause)
    if fetcher is None:
        return items
    urls = image_urls(contents, where)
    if not urls:
        return items
    if len(urls) > fetcher.max_urls:
        raise InvalidRequest(
            f"{where}: {len(urls)} image URLs to fetch is more than the {fetcher.max_urls} allowed per request",
            param=where,
        )
    assert isinstance(contents, list)
    inline = await fetch_all(fetcher, urls, spec.max_image_bytes, lease)
    return await collect(parse(substitute(contents, inline)), pause)
