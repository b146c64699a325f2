"""No input makes a 500: every field that takes a URL (`image`, `video`, `multi_images`, on both wire
formats) answers a 4xx naming the field for a URL that does not parse, and with media fetching on, for
one whose host is not a valid IDNA name, directly or as a redirect's Location. Property: over random URL
strings and random bodies of both wire formats, never a 5xx, and no upstream call for an item the
gateway refused. Against real gateway processes and the stand-in upstream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.imageserver import ImageServer, png_bytes
from tests.support.processes import Gateway, GatewayFactory, StandIn

OPENAI = "/v1/embeddings"
MM = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"
MODEL = "tongyi-embedding-vision-plus"
BAD_URLS = [
    "http://[::1",
    "http://[x/",
    "http://]/a.png",
    "http://[x]/a.png",
    "http://a:99999/x.png",
    "http://:80/a.png",
]
BAD_NAMES = ["http://xn--/a.png", "http://xn--ls8h.la/a.png"]
# As a redirect's Location: those with a host (httpx resolves "http://:80/a.png" against the origin's URL).
BAD_LOCATIONS = BAD_NAMES + BAD_URLS[:5]


def body_for(route: str, item: dict[str, Any]) -> dict[str, Any]:
    if route == OPENAI:
        return {"model": MODEL, "input": [item], "encoding_format": "float"}
    return {"model": MODEL, "input": {"contents": [item]}}


def calls_for_model(standin: StandIn) -> list[dict[str, Any]]:
    """The stand-in's calls for this module's model (a late call of an earlier module's gateway is not ours)."""
    return [c for c in standin.calls() if c["model"] == MODEL]


def field_of(route: str, item: dict[str, Any]) -> str:
    name = next(iter(item))
    where = "input[0]" if route == OPENAI else "input.contents[0]"
    return f"{where}.{name}" + ("[0]" if name == "multi_images" else "")


def message_of(route: str, resp: httpx.Response) -> tuple[str, str | None]:
    data = resp.json()
    if route == OPENAI:
        return data["error"]["message"], data["error"]["param"]
    return data["message"], data.get("param")


def items_of(url: str) -> list[dict[str, Any]]:
    return [{"image": url}, {"video": url}, {"multi_images": [url]}]


@pytest.fixture(scope="module")
def origin() -> Iterator[ImageServer]:
    with ImageServer() as server:
        server.add("/a.png", png_bytes(2, 2))
        for i, url in enumerate(BAD_LOCATIONS):
            server.redirect(f"/r{i}", url)
        yield server


@pytest.fixture(scope="module")
def fetching(gateways: GatewayFactory, origin: ImageServer) -> Gateway:
    env = {"MEDIA_FETCH": "true", "MEDIA_FETCH_ALLOW_HOSTS": json.dumps([origin.netloc]), "MEDIA_FETCH_TIMEOUT_S": "5"}
    return gateways.start(env=env)


@pytest.mark.parametrize("route", [OPENAI, MM])
@pytest.mark.parametrize("url", BAD_URLS)
def test_a_url_that_does_not_parse_is_a_4xx_naming_the_field(
    gateway_memory: Gateway, standin: StandIn, route: str, url: str
) -> None:
    for item in items_of(url):
        resp = gateway_memory.post(route, json=body_for(route, item), timeout=30)
        assert resp.status_code == 400, (item, resp.text)
        message, param = message_of(route, resp)
        assert param == field_of(route, item) and message.startswith(param), resp.text
    assert calls_for_model(standin) == []


@pytest.mark.parametrize("route", [OPENAI, MM])
def test_with_fetching_on_a_bad_host_name_is_a_4xx_also_as_a_redirect(
    fetching: Gateway, origin: ImageServer, standin: StandIn, route: str
) -> None:
    redirects = [origin.url(f"/r{i}") for i in range(len(BAD_LOCATIONS))]
    for url in BAD_NAMES + BAD_URLS + redirects:
        for item in ({"image": url}, {"multi_images": [url]}):
            resp = fetching.post(route, json=body_for(route, item), timeout=30)
            assert resp.status_code == 400, (item, resp.text)
            assert message_of(route, resp)[1] == field_of(route, item), resp.text
    assert calls_for_model(standin) == []


HOSTISH = st.sampled_from(["[", "]", ":", "@", "%", ".", "xn--", "::1", "[::1]", "a", "0", "-", "/", "?", "#", "\\"])
URLS = st.one_of(
    st.text(max_size=40),
    st.builds(
        "".join,
        st.tuples(
            st.sampled_from(["http://", "https://", "HTTP://", "http:/", "ftp://", "data:", ""]),
            st.lists(st.one_of(HOSTISH, st.text(max_size=3)), max_size=8).map("".join),
            st.sampled_from(["", "/a.png", ":80/a.png", ":99999/", "/%zz", "?q=[x]"]),
        ),
    ),
)
ITEM = st.one_of(
    URLS.map(lambda u: {"image": u}),
    URLS.map(lambda u: {"video": u}),
    st.lists(URLS, min_size=1, max_size=3).map(lambda us: {"multi_images": us}),
    st.dictionaries(
        st.sampled_from(["image", "video", "text", "multi_images", "fps"]), st.one_of(URLS, st.integers()), max_size=3
    ),
)


def check_one(gw: Gateway, standin: StandIn, client: httpx.Client, route: str, items: list[Any]) -> None:
    before = len(standin.calls())
    body = {"model": MODEL, "input": items} if route == OPENAI else {"model": MODEL, "input": {"contents": items}}
    resp = client.post(route, json=body)
    assert resp.status_code < 500, (items, resp.status_code, resp.text)
    called = len(standin.calls()) > before
    if resp.status_code >= 400:
        message, param = message_of(route, resp)
        if message.startswith("upstream "):  # the upstream's own refusal of what the gateway let through
            assert called, resp.text
        else:  # the gateway's refusal: the field is named, and nothing went upstream
            assert param and message.startswith(param) and not called, (items, resp.text)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from([OPENAI, MM]), items=st.lists(ITEM, min_size=1, max_size=3))
def test_property_never_a_5xx_and_no_upstream_call_for_a_refused_item(
    gateway_memory: Gateway, standin: StandIn, route: str, items: list[Any]
) -> None:
    with gateway_memory.client() as client:
        check_one(gateway_memory, standin, client, route, items)


# Hosts that fail to parse, or IP literals (refused as not public): none of them needs a DNS answer.
FETCH_HOSTS = ["[::1", "[x", "]", "[x]", "xn--", "xn--ls8h.la", "127.0.0.1", "[::1]", "10.0.0.1", "[fe80::1]",
               "u:p@127.0.0.1", "", "127.0.0.1:99999", "[::ffff:127.0.0.1]"]  # fmt: skip
FETCH_URLS = st.builds(
    "".join,
    st.tuples(
        st.sampled_from(["http://", "https://"]),
        st.sampled_from(FETCH_HOSTS),
        st.sampled_from(["/", "/a.png", ":80/a.png", ":99999/", "/%zz"]),
        st.text(alphabet="/[]:@%?#.-x", max_size=6),
    ),
)


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from([OPENAI, MM]), urls=st.lists(FETCH_URLS, min_size=1, max_size=3))
def test_property_with_fetching_on(fetching: Gateway, standin: StandIn, route: str, urls: list[str]) -> None:
    """Hosts here never need a DNS answer: IP literals (refused as not public) or names that fail to parse."""
    with fetching.client() as client:
        check_one(fetching, standin, client, route, [{"image": u} for u in urls])
