"""The benchmark's scenarios, what each is measured against, and the measuring itself (every load from a
separate bench/loadgen.py process)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from typing import Any

import httpx

from .stack import AUTH, AUTH_FREE, KEY, ROOT, Proc

MODEL, IMAGE_MODEL = "text-embedding-v4", "tongyi-embedding-vision-plus"
TEXT_ROUTE = "/api/v1/services/embeddings/text-embedding/text-embedding"
MM_ROUTE = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"
MISS_CONNECTIONS = 16  # issue 24: the miss path is measured at 16 connections (hits at the run's 32)
MISS_TEXTS = ["miss a @@N@@", "miss b @@N@@"]  # every request 2 new texts (the load generator numbers them)


def png_data_uri(approx_bytes: int) -> str:
    """A real PNG of random pixels (incompressible) of about `approx_bytes`, as a data URI."""
    side = max(8, int((approx_bytes / 3) ** 0.5))
    raw = b"".join(b"\0" + os.urandom(side * 3) for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    head = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


def load(
    url: str,
    path: str,
    bodies: list[str],
    connections: int,
    duration: float,
    unique: bool = False,
    headers: dict[str, str] | None = None,
    warmup: float | None = None,
    want: int = 200,
) -> dict[str, Any]:
    """One load-generator run in its own process; returns its JSON result (every answer `want`)."""
    host, port = url.removeprefix("http://").split(":")
    job = {
        "host": host,
        "port": int(port),
        "path": path,
        "bodies": bodies,
        "connections": connections,
        "duration_s": duration,
        "warmup_s": min(0.5, duration / 3) if warmup is None else warmup,
        "unique": unique,
        "headers": headers or {},
    }
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen"],
        input=json.dumps(job).encode(),
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=duration + 60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    good = result["statuses"].get(str(want), 0)
    if result["requests"] and good < result["requests"]:
        raise RuntimeError(f"non-200 answers from {url}{path}: {result['statuses']} errors={result['errors']}")
    return result


def openai_body(inputs: list[Any], encoding: str = "float", model: str = MODEL) -> str:
    return json.dumps({"model": model, "input": inputs, "encoding_format": encoding})


def native_text_body(texts: list[str]) -> str:
    return json.dumps({"model": MODEL, "input": {"texts": texts}, "parameters": {}})


def native_mm_body(contents: list[Any]) -> str:
    return json.dumps({"model": IMAGE_MODEL, "input": {"contents": contents}, "parameters": {}})


def response_size(url: str, body: str, path: str = "/v1/embeddings") -> int:
    r = httpx.post(url + path, content=body, headers={"content-type": "application/json", **AUTH}, timeout=60)
    r.raise_for_status()
    return len(r.content)


@dataclass
class Scenario:
    name: str
    path: str
    bodies: list[str]
    unique: bool
    baseline: str  # "asgi" or "upstream"
    upstream_path: str
    upstream_bodies: list[str]
    warm: list[str]  # bodies sent once before measuring (to fill the cache)
    connections: int = 0  # the many-connection load's connections; 0: the run's --connections
    auth: dict[str, str] = field(default_factory=lambda: AUTH)  # the team with limits, unless said otherwise


def hit(name: str, bodies: list[str], warm: list[str], auth: dict[str, str] = AUTH) -> Scenario:
    """A cache-hit scenario on /v1/embeddings, against the ASGI floor answering a body of the same size."""
    return Scenario(name, "/v1/embeddings", bodies, False, "asgi", "", [], warm, auth=auth)


def scenarios(run: str, quick: bool) -> list[Scenario]:
    hit_texts = [f"cached text {i} of the benchmark {run}" for i in range(8)]
    half_cached = [f"half-hit cached {i} {run}" for i in range(4)]
    half = [*half_cached, *[f"half-hit new {i} @@N@@" for i in range(4)]]
    new2 = [f"{t} {run}" for t in MISS_TEXTS]
    out = [
        hit("cache hit, 8 texts, float", [openai_body(hit_texts)], [openai_body(hit_texts)]),
        hit("cache hit, 8 texts, base64", [openai_body(hit_texts, "base64")], [openai_body(hit_texts)]),
        Scenario(
            "miss, 2 new texts",
            "/v1/embeddings",
            [openai_body(new2, "base64")],
            True,
            "upstream",
            TEXT_ROUTE,
            [native_text_body(new2)],
            [],
            MISS_CONNECTIONS,
        ),
    ]
    if quick:
        return out
    images = [png_data_uri(150_000) for _ in range(8)]  # ~200 KB as base64
    image_bodies = [openai_body([{"image": im}], "base64", IMAGE_MODEL) for im in images]
    out += [
        hit(
            "cache hit, 8 texts, float, team without limits",
            [openai_body(hit_texts)],
            [openai_body(hit_texts)],
            AUTH_FREE,
        ),
        hit(
            "cache hit, 8 texts, base64, team without limits",
            [openai_body(hit_texts, "base64")],
            [openai_body(hit_texts)],
            AUTH_FREE,
        ),
        Scenario(
            "half hit, 4 of 8 cached",
            "/v1/embeddings",
            [openai_body(half, "base64")],
            True,
            "upstream",
            TEXT_ROUTE,
            [native_text_body(half)],
            [openai_body(half_cached)],
        ),
        hit("cache hit, 1 image of 200 KB", image_bodies, image_bodies),
        Scenario(
            "1 image of 200 KB, cached, vs upstream direct",
            "/v1/embeddings",
            [openai_body([{"image": im}], "base64", IMAGE_MODEL) for im in images],
            False,
            "upstream",
            MM_ROUTE,
            [native_mm_body([{"image": im}]) for im in images],
            [openai_body([{"image": im}], "base64", IMAGE_MODEL) for im in images],
        ),
    ]
    return out


def measure(
    sc: Scenario, gw: Proc, baseline: Proc, standin: Proc, conns: int, duration: float, rounds: int = 1
) -> dict[str, Any]:
    """The gateway and its baseline, one load each in turn, `rounds` times (which goes first alternates): the
    machine is shared, and a baseline measured in a quiet second against a gateway in a busy one moved the ratio
    by 1.5x. The figures shown are the median round's (by ratio, by p50 overhead); every round's is kept."""
    conns = sc.connections or conns
    for body in sc.warm:
        response_size(gw.url, body)
    if sc.baseline == "asgi":
        size = response_size(gw.url, sc.bodies[0])
        base_path, base_url, base_bodies, base_unique = f"/?size={size}", baseline.url, sc.bodies, False
        headers = sc.auth  # the same request, head included
    else:
        base_path, base_url, base_bodies, base_unique = sc.upstream_path, standin.url, sc.upstream_bodies, sc.unique
        headers = {"Authorization": f"Bearer {KEY}"}

    def pair(n: int, gateway_first: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        def ours() -> dict[str, Any]:
            return load(gw.url, sc.path, sc.bodies, n, duration, sc.unique, sc.auth)

        def theirs() -> dict[str, Any]:
            return load(base_url, base_path, base_bodies, n, duration, base_unique, headers)

        if gateway_first:
            mine = ours()
            return mine, theirs()
        other = theirs()
        return ours(), other

    ones = [pair(1, r % 2 == 0) for r in range(rounds)]
    manys = [pair(conns, r % 2 == 0) for r in range(rounds)]
    ratios = [m["requests_per_s"] / b["requests_per_s"] if b["requests_per_s"] else 0.0 for m, b in manys]
    overheads = [o["p50_ms"] - b["p50_ms"] for o, b in ones]
    one, b_one = ones[median_index(overheads)]
    many, b_many = manys[median_index(ratios)]
    return {
        "scenario": sc.name,
        "baseline": sc.baseline,
        "connections": conns,
        "one": one,
        "many": many,
        "base_one": b_one,
        "base_many": b_many,
        "ratios": [round(r, 3) for r in ratios],
        "overheads_ms": [round(o, 3) for o in overheads],
    }


def median_index(values: list[float]) -> int:
    """The index of the median value (the lower one of an even count)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    return order[(len(order) - 1) // 2]


def upstream_items(standin: Proc) -> int:
    return int(httpx.get(standin.url + "/_stats", timeout=10).json()["items_total"])


def reset(standin: Proc) -> None:
    httpx.post(standin.url + "/_reset", timeout=10).raise_for_status()


def calls_per_item(gw: Proc, standin: Proc, run: str, clients: int) -> dict[str, Any]:
    """`clients` concurrent identical single-item requests; then 8 clients sending the same 200 distinct
    items in different orders. Upstream items per distinct item, as the stand-in counted them."""

    async def identical() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)  # httpcore#1110
        async with httpx.AsyncClient(timeout=60, limits=limits, headers=AUTH) as c:
            body = openai_body([f"identical {run}"])
            rs = await asyncio.gather(*(c.post(gw.url + "/v1/embeddings", content=body) for _ in range(clients)))
            assert all(r.status_code == 200 for r in rs)

    async def reindex() -> None:
        texts = [f"reindex {i} {run}" for i in range(200)]
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=60, limits=limits, headers=AUTH) as c:

            async def worker(w: int) -> None:
                order = texts[w * 25 :] + texts[: w * 25]
                for i in range(0, 200, 8):
                    r = await c.post(gw.url + "/v1/embeddings", content=openai_body(order[i : i + 8]))
                    assert r.status_code == 200

            await asyncio.gather(*(worker(w) for w in range(8)))

    reset(standin)
    asyncio.run(identical())
    first = upstream_items(standin)
    reset(standin)
    asyncio.run(reindex())
    return {
        "identical_clients": clients,
        "identical_items": first,
        "reindex_items": upstream_items(standin),
        "reindex_distinct": 200,
    }
