"""The media fetcher's SSRF rules and content checks.

Addresses that are not loopback are never connected to, not even by a broken fetcher: those cases run
on a client whose transport records requests instead of sending them (no traffic can leave). Loopback
cases run against a real server on 127.0.0.1 that records every request, so a refusal is proven by
that server having seen nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from ipaddress import ip_address
from types import SimpleNamespace

import httpx
import pytest
import pytest_asyncio

from app.errors import InvalidRequest, PayloadTooLarge
from app.inputs.media.addresses import is_public
from app.inputs.media.fetcher import Fetcher, FetchRefused, open_client, system_resolve
from app.inputs.media.inlining import image_urls, parse_fetching, substitute
from bench.imageserver import JPEG_BYTES, ImageServer, png_bytes

PNG = png_bytes(2, 2)

REFUSED_ADDRESSES = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",  # AWS/GCP/Azure metadata
    "100.100.100.200",  # Alibaba Cloud metadata, in 100.64.0.0/10
    "100.64.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "224.0.0.1",  # multicast: is_global on 3.11
    "192.0.0.8",  # IETF protocol block: is_global on 3.11
    "198.18.0.1",
    "::",
    "::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible (deprecated): is_global on 3.11
    "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1: is_global on 3.11
    "2002:a9fe:a9fe::",  # 6to4 wrapping 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 wrapping 127.0.0.1: is_global on 3.11
    "64:ff9b::6464:64c8",  # NAT64 wrapping 100.100.100.200
    "64:ff9b:1::7f00:1",  # local-use NAT64
    "fe80::1",
    "fd00::1",
    "fc00::1",
    "ff02::1",
    "2001:db8::1",
    "2001::1",  # Teredo
]
PUBLIC_ADDRESSES = [
    "8.8.8.8",
    "1.1.1.1",
    "2001:4860:4860::8888",
    "64:ff9b::808:808",
    "2002:808:808::",
    "::ffff:8.8.8.8",
]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_special_addresses_are_not_public(address: str) -> None:
    assert not is_public(ip_address(address))


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_global_unicast_addresses_are_public(address: str) -> None:
    assert is_public(ip_address(address))


class Recorder:
    """An httpx transport that never touches the network: it records requests and answers a PNG."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, headers={"content-type": "image/png"}, stream=httpx.ByteStream(PNG))


def offline_fetcher(recorder: Recorder, resolve: object = system_resolve, **kw: object) -> Fetcher:
    client = httpx.AsyncClient(transport=httpx.MockTransport(recorder), follow_redirects=False)
    limits: dict[str, object] = {"concurrency": 8, "max_urls": 64, "max_total_bytes": 64 << 20, **kw}
    return Fetcher(client, max_bytes=1 << 20, timeout_s=5, max_redirects=3, resolve=resolve, **limits)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/a.png",
        "http://172.16.0.1/a.png",
        "http://192.168.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "https://100.100.100.200/a.png",
        "http://[2002:a9fe:a9fe::]/a.png",
        "http://[64:ff9b::a00:1]/a.png",
        "http://[fd00::1]/a.png",
        "http://0xa9.0xfe.0xa9.0xfe/",  # 169.254.169.254 in hex
        "http://2852039166/",  # 169.254.169.254 as one number
    ],
)
async def test_private_and_metadata_urls_are_refused_before_any_connection(url: str) -> None:
    recorder = Recorder()
    fetcher = offline_fetcher(recorder)
    with pytest.raises(FetchRefused, match="non-public address"):
        await fetcher.fetch(url, "input[0].image")
    assert recorder.requests == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://127.0.0.1/", "data:image/png;base64,AAAA"]
)
async def test_other_schemes_are_refused(url: str) -> None:
    recorder = Recorder()
    with pytest.raises(FetchRefused, match="only http"):
        await offline_fetcher(recorder).fetch(url, "p")
    assert recorder.requests == []


async def test_urls_with_credentials_are_refused() -> None:
    recorder = Recorder()
    with pytest.raises(FetchRefused, match="credentials"):
        await offline_fetcher(recorder).fetch("http://user:pw@example.com/a.png", "p")
    assert recorder.requests == []


async def test_a_name_resolving_to_one_private_address_among_public_ones_is_refused() -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    recorder = Recorder()
    with pytest.raises(FetchRefused, match="non-public"):
        await offline_fetcher(recorder, mixed).fetch("http://images.example.com/a.png", "p")
    assert recorder.requests == []


async def test_connects_to_the_checked_address_with_host_and_sni_of_the_name() -> None:
    """DNS answers a public address once, then loopback (a rebinding attack): the fetcher resolves once
    per hop and sends the request to the address it checked, naming the host in Host and SNI."""
    answers = [["93.184.216.34"], ["127.0.0.1"]]
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked) - 1, 1)]

    recorder = Recorder()
    fetched = await offline_fetcher(recorder, rebinding).fetch("https://images.example.com:8443/a.png?x=1", "p")
    assert fetched.format == "png" and fetched.data == PNG
    assert asked == ["images.example.com"]
    (request,) = recorder.requests
    assert request.url.host == "93.184.216.34" and request.url.port == 8443
    assert request.url.raw_path == b"/a.png?x=1"
    assert request.headers["host"] == "images.example.com:8443"
    assert request.extensions["sni_hostname"] == "images.example.com"


@pytest.fixture
def origin() -> Iterator[ImageServer]:
    with ImageServer() as server:
        yield server


@pytest.fixture
def target() -> Iterator[ImageServer]:
    """A second loopback server that a refused fetch must never reach."""
    with ImageServer() as server:
        server.add("/secret.png", PNG)
        yield server


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    c = open_client(4)
    yield c
    await c.aclose()


def real_fetcher(client: httpx.AsyncClient, *allow: str, **kw: object) -> Fetcher:
    settings: dict[str, object] = {
        "max_bytes": 1 << 20,
        "timeout_s": 5.0,
        "max_redirects": 3,
        "concurrency": 8,
        "max_urls": 64,
        "max_total_bytes": 64 << 20,
        **kw,
    }
    return Fetcher(client, allow_hosts=frozenset(allow), **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/secret.png",
        "http://127.9.9.9:{port}/secret.png",
        "http://localhost:{port}/secret.png",  # a host name resolving to 127.0.0.1
        "http://[::1]:{port}/secret.png",
        "http://[::ffff:127.0.0.1]:{port}/secret.png",
        "http://[2002:7f00:1::]:{port}/secret.png",
        "http://[64:ff9b::7f00:1]:{port}/secret.png",
        "http://2130706433:{port}/secret.png",
        "http://0x7f.1:{port}/secret.png",
        "http://017700000001:{port}/secret.png",
        "http://127.1:{port}/secret.png",
        "HTTP://LOCALHOST:{port}/secret.png",
    ],
)
async def test_loopback_in_every_spelling_is_refused(
    template: str, target: ImageServer, client: httpx.AsyncClient
) -> None:
    with pytest.raises(FetchRefused, match=r"non-public|does not resolve"):
        await real_fetcher(client).fetch(template.format(port=target.port), "input[0].image")
    assert target.hits == []


async def test_an_allowed_host_is_fetched(origin: ImageServer, client: httpx.AsyncClient) -> None:
    url = origin.add("/a.png", PNG)
    fetched = await real_fetcher(client, origin.netloc).fetch(url, "p")
    assert fetched.data == PNG and fetched.data_uri().startswith("data:image/png;base64,")
    assert origin.hosts == [origin.netloc]


@pytest.mark.parametrize("where", ["loopback", "metadata", "localhost", "mapped"])
async def test_a_redirect_from_an_allowed_host_to_a_refused_address_is_refused(
    where: str, origin: ImageServer, target: ImageServer, client: httpx.AsyncClient
) -> None:
    location = {
        "loopback": target.url("/secret.png"),
        "metadata": "http://169.254.169.254/latest/meta-data/iam/",
        "localhost": f"http://localhost:{target.port}/secret.png",
        "mapped": f"http://[::ffff:7f00:1]:{target.port}/secret.png",
    }[where]
    url = origin.redirect("/r", location)
    with pytest.raises(FetchRefused, match="non-public"):
        await real_fetcher(client, origin.netloc).fetch(url, "input[0].image")
    assert origin.hits == ["/r"] and target.hits == []


async def test_a_public_looking_name_that_redirects_to_loopback_is_refused(
    origin: ImageServer, target: ImageServer
) -> None:
    """cdn.example.com is allowed (the test's stand-in for a public origin, served on loopback); its
    redirect to a loopback address is checked again and refused."""

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "cdn.example.com" else await system_resolve(host, port)

    origin.redirect("/img.png", f"http://127.0.0.1:{target.port}/secret.png", status=301)
    async with open_client(2) as client:
        fetcher = real_fetcher(client, f"cdn.example.com:{origin.port}", resolve=resolve)
        with pytest.raises(FetchRefused, match="non-public"):
            await fetcher.fetch(f"http://cdn.example.com:{origin.port}/img.png", "p")
    assert origin.hits == ["/img.png"] and origin.hosts == [f"cdn.example.com:{origin.port}"]
    assert target.hits == []


async def test_redirects_within_allowed_hosts_are_followed_up_to_the_limit(
    origin: ImageServer, client: httpx.AsyncClient
) -> None:
    origin.add("/a.png", PNG)
    origin.redirect("/one", "/a.png", status=307)
    origin.redirect("/loop", "/loop")
    fetcher = real_fetcher(client, origin.netloc, max_redirects=2)
    assert (await fetcher.fetch(origin.url("/one"), "p")).data == PNG
    with pytest.raises(FetchRefused, match="more than 2"):
        await fetcher.fetch(origin.url("/loop"), "p")
    assert origin.hits.count("/loop") == 3


@pytest.mark.parametrize(
    ("route", "error", "match"),
    [
        ({"body": JPEG_BYTES, "content_type": "image/png"}, FetchRefused, "image/png but the bytes are jpeg"),
        ({"body": b"<html>hi</html>", "content_type": "text/html"}, FetchRefused, "non-image Content-Type"),
        ({"body": b"not an image at all", "content_type": "image/png"}, FetchRefused, "no known image format"),
        ({"body": PNG, "status": 404}, FetchRefused, "HTTP 404"),
        ({"body": PNG, "headers": {"Content-Encoding": "gzip"}}, FetchRefused, "compressed"),
        ({"body": b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000}, PayloadTooLarge, "larger than"),
        ({"body": b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000, "chunked": True}, PayloadTooLarge, "larger than"),
    ],
)
async def test_content_checks(
    route: dict[str, object], error: type[Exception], match: str, origin: ImageServer, client: httpx.AsyncClient
) -> None:
    url = origin.add("/x", **route)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        await real_fetcher(client, origin.netloc).fetch(url, "input[2].image", max_bytes=100_000)


async def test_a_slow_origin_hits_the_deadline(origin: ImageServer, client: httpx.AsyncClient) -> None:
    url = origin.add("/slow.png", PNG, delay_s=3)
    with pytest.raises(FetchRefused, match=r"within 0\.5s"):
        await real_fetcher(client, origin.netloc, timeout_s=0.5).fetch(url, "p")


def test_image_urls_are_found_in_both_item_shapes_and_replaced_by_data_uris() -> None:
    contents = [
        "text",
        {"image": "https://a.example/1.png"},
        {"multi_images": ["data:image/png;base64,AAAA", "HTTP://b.example/2.png", "https://a.example/1.png"]},
        {"video": "https://a.example/v.mp4"},
        [1, 2, 3],
    ]
    urls = image_urls(contents, "input")
    assert urls == {"https://a.example/1.png": "input[1].image", "HTTP://b.example/2.png": "input[2].multi_images[1]"}
    inline = {u: f"data:{i}" for i, u in enumerate(urls)}
    out = substitute(contents, inline)
    assert out[1] == {"image": "data:0"}
    assert out[2] == {"multi_images": ["data:image/png;base64,AAAA", "data:1", "data:0"]}
    assert out[3] == contents[3] and out[0] == "text"
    assert contents[1] == {"image": "https://a.example/1.png"}  # the caller's body is not modified


async def test_a_request_may_fetch_at_most_max_urls_and_max_total_bytes(
    origin: ImageServer, client: httpx.AsyncClient
) -> None:
    urls = [origin.add(f"/{i}.png", png_bytes(40, 40, seed=i)) for i in range(4)]
    spec = SimpleNamespace(max_image_bytes=1 << 20)
    contents = [{"image": u} for u in urls]
    parse = list  # stands for the item parser: what matters here is what it is given

    fetcher = real_fetcher(client, origin.netloc, max_urls=3)
    with pytest.raises(InvalidRequest, match="4 image URLs to fetch is more than the 3"):
        await parse_fetching(fetcher, spec, contents, "input", parse)  # type: ignore[arg-type]
    assert origin.hits == []

    size = len(png_bytes(40, 40))
    fetcher = real_fetcher(client, origin.netloc, max_total_bytes=3 * size, concurrency=1)
    with pytest.raises(PayloadTooLarge, match="exceed"):
        await parse_fetching(fetcher, spec, contents, "input", parse)  # type: ignore[arg-type]

    fetcher = real_fetcher(client, origin.netloc)
    inlined = await parse_fetching(fetcher, spec, contents, "input", parse)  # type: ignore[arg-type]
    assert [c["image"][:22] for c in inlined] == ["data:image/png;base64,"] * 4
