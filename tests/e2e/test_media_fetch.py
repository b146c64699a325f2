"""End to end: a gateway process with media_fetch on, an image origin on loopback (allowed by the
allowlist setting), the stand-in upstream."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from bench.imageserver import ImageServer, png_bytes
from bench.standin import canonical_digest, expected_vector
from tests.support.processes import Gateway, GatewayFactory, StandIn

MODEL = "tongyi-embedding-vision-plus"
PNG = png_bytes(3, 2, seed=7)
DATA_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.fixture(scope="module")
def origin() -> Iterator[ImageServer]:
    with ImageServer() as server:
        server.add("/a.png", PNG)
        server.add("/copies/b?v=2", PNG)
        server.add("/other.png", png_bytes(3, 2, seed=8))
        yield server


@pytest.fixture(scope="module")
def internal() -> Iterator[ImageServer]:
    """A loopback server standing for an internal service: nothing may reach it through the gateway."""
    with ImageServer() as server:
        server.add("/admin.png", PNG)
        yield server


@pytest.fixture(scope="module")
def gw(gateways: GatewayFactory, origin: ImageServer, internal: ImageServer) -> Iterator[Gateway]:
    origin.redirect("/to-internal", internal.url("/admin.png"))
    origin.redirect("/to-metadata", "http://100.100.100.200/latest/meta-data/")
    env = {
        "MEDIA_FETCH": "true",
        "MEDIA_FETCH_ALLOW_HOSTS": json.dumps([origin.netloc]),
        "MEDIA_FETCH_TIMEOUT_S": "5",
    }
    yield gateways.start(env=env)


def embed(gw: Gateway, images: list[str], **extra: object) -> httpx.Response:
    body = {"model": MODEL, "input": [{"image": u} for u in images], "encoding_format": "float", **extra}
    return gw.post("/v1/embeddings", json=body, timeout=30)


def test_two_urls_of_one_image_give_one_upstream_item_and_equal_vectors(
    gw: Gateway, standin: StandIn, origin: ImageServer
) -> None:
    a, b = origin.url("/a.png"), origin.url("/copies/b?v=2")
    r = embed(gw, [a, b])
    assert r.status_code == 200, r.text
    v0, v1 = (np.array(d["embedding"], dtype=np.float32) for d in r.json()["data"])
    assert np.array_equal(v0, v1)
    # The upstream saw the bytes (as a data URI), once.
    assert standin.digests() == [canonical_digest(MODEL, 1152, {"image": DATA_URI})]
    assert np.array_equal(v0, expected_vector(MODEL, 1152, {"image": DATA_URI}))

    # Later: the second URL alone, and the same bytes inline, are cache hits; another image is not.
    r2 = embed(gw, [b])
    assert r2.headers["x-cache-hits"] == "1"
    r3 = embed(gw, [DATA_URI])
    assert r3.headers["x-cache-hits"] == "1"
    r4 = embed(gw, [origin.url("/other.png"), a])
    assert r4.headers["x-cache-hits"] == "1" and r4.headers["x-cache-misses"] == "1"
    assert len(standin.digests()) == 2


def test_dashscope_route_fetches_multi_images_too(gw: Gateway, standin: StandIn, origin: ImageServer) -> None:
    model = "tongyi-embedding-vision-plus-2026-03-06"
    contents = [{"multi_images": [origin.url("/a.png"), origin.url("/copies/b?v=2")]}]
    body = {"model": model, "input": {"contents": contents}, "parameters": {"dimension": 64}}
    r = gw.post("/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding", json=body)
    assert r.status_code == 200, r.text
    want = expected_vector(model, 64, {"multi_images": [DATA_URI, DATA_URI]})
    assert np.allclose(r.json()["output"]["embeddings"][0]["embedding"], want, atol=1e-6)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[64:ff9b::7f00:1]/x.png",
        "http://2130706433/x.png",
        "http://localhost/x.png",
    ],
)
def test_refused_urls_answer_400_in_the_callers_wire_and_reach_nothing(url: str, gw: Gateway, standin: StandIn) -> None:
    r = embed(gw, [url])
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "input[0].image" and "non-public address" in err["message"]
    body = {"model": MODEL, "input": {"contents": [{"text": "a"}, {"image": url}]}, "parameters": {}}
    r = gw.post("/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding", json=body)
    assert r.status_code == 400
    assert r.json()["code"] == "InvalidParameter" and r.json()["param"] == "input.contents[1].image"
    assert standin.calls() == []


@pytest.mark.parametrize("path", ["/to-internal", "/to-metadata"])
def test_a_redirect_from_the_allowed_origin_to_an_internal_address_is_refused(
    path: str, gw: Gateway, standin: StandIn, origin: ImageServer, internal: ImageServer
) -> None:
    r = embed(gw, [origin.url(path)])
    assert r.status_code == 400 and "non-public address" in r.json()["error"]["message"]
    assert internal.hits == [] and standin.calls() == []


def test_invalid_requests_fetch_nothing(gw: Gateway, standin: StandIn, origin: ImageServer) -> None:
    before = len(origin.hits)
    r = embed(gw, [origin.url("/a.png")], dimensions=7)  # a dimension the model does not allow
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"
    r = gw.post("/v1/embeddings", json={"model": "text-embedding-v4", "input": [{"image": origin.url("/a.png")}]})
    assert r.status_code == 400
    assert len(origin.hits) == before and standin.calls() == []


def test_fetch_outcomes_are_counted(gw: Gateway, standin: StandIn, origin: ImageServer) -> None:
    assert embed(gw, [origin.url("/a.png")]).status_code == 200
    assert embed(gw, ["http://10.0.0.1/a.png"]).status_code == 400
    text = httpx.get(gw.url + "/metrics").text
    assert 'gateway_media_fetches_total{outcome="ok"}' in text
    assert 'gateway_media_fetches_total{outcome="refused"}' in text
