"""The media fetcher: downloads an image URL so that the gateway can key it by its bytes, safely.

Server-side request forgery is the danger: a client names a URL and the gateway, inside the operator's
network, fetches it. So for every hop (the first URL and each redirect):
- only http and https, no credentials in the URL;
- the gateway resolves the host name itself and refuses the URL when ANY address it resolves to is not
  globally routable (addresses.py: private, loopback, link-local, shared 100.64/10, multicast,
  and IPv6 forms wrapping such an IPv4 address);
- it then connects to the very address it checked (the request goes to the IP; the Host header and the
  TLS server name, SNI and certificate check, carry the host name), so DNS cannot answer differently
  between the check and the connection (no rebinding window);
- redirects are followed by hand, at most `max_redirects`, each one checked like the first URL.
The whole fetch runs under one deadline; the body is read as a stream and cut at `max_bytes`; the
response must be 200 with an image/* Content-Type that agrees with the bytes' magic number.

`allow_hosts` lists host or host:port entries whose addresses are NOT checked (tests; an operator's own
image store on a private network). Everything else still applies to them, and a redirect away from an
allowed host is checked again.
"""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from ...errors import InvalidRequest, PayloadTooLarge
from ...runtime.budget import FETCH_WEIGHT, Lease
from .addresses import parse_public
from .formats import MIME_FORMATS, sniff_format

Resolver = Callable[[str, int], Awaitable[list[str]]]
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "embedding-gateway-media-fetcher"


class FetchRefused(InvalidRequest):
    """The URL, its address, or what it answered is not acceptable. Rendered as a 400 naming the field."""


@dataclass(frozen=True, slots=True)
class FetchedImage:
    data: bytes
    format: str  # "png", "jpeg", ... as formats.py names them

    def data_uri(self) -> str:
        return f"data:image/{self.format};base64,{base64.b64encode(self.data).decode()}"


@dataclass(frozen=True, slots=True)
class Target:
    url: httpx.URL
    host: str  # as written in the URL, for the Host header and SNI
    addresses: list[str]  # checked addresses to connect to, in resolver order


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (it also parses 2130706433, 0x7f.1, ...)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def open_client(concurrency: int) -> httpx.AsyncClient:
    """No proxies from the environment (they would connect for us, unchecked), no redirects followed by
    httpx, and no kept-alive connections: a pooled connection to an IP verified for one host name must
    never serve a request for another name. The pool is the process's: a fetch waits for a connection
    within its own deadline (Fetcher.fetch), not httpx's 5 s pool timeout."""
    return httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
        timeout=httpx.Timeout(5.0, pool=None),
    )


class Fetcher:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        max_bytes: int,
        timeout_s: float,
        max_redirects: int,
        allow_hosts: frozenset[str] = frozenset(),
        concurrency: int,
        max_urls: int,
        max_total_bytes: int,
        resolve: Resolver = system_resolve,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.concurrency = concurrency
        self.max_urls = max_urls
        self.max_total_bytes = max_total_bytes
        self.count = count or (lambda outcome: None)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self.allow_hosts = frozenset(h.lower() for h in allow_hosts)
        self.resolve = resolve

    async def close(self) -> None:
        await self.client.aclose()

    async def fetch(
        self, url: str, param: str, max_bytes: int | None = None, lease: Lease | None = None
    ) -> FetchedImage:
        """The image at url, or FetchRefused/PayloadTooLarge naming `param`. Outcomes are counted.

        With a lease, room for the largest image allowed is taken from the memory budget before any
        connection is made (so a fetch waiting for memory holds no connection), and what the image did not
        use is given back once it is read (app/runtime/budget.py)."""
        cap = min(self.max_bytes, max_bytes or self.max_bytes)
        outcome = "aborted"  # cancelled with its request
        if lease is not None:
            await lease.take(cap * FETCH_WEIGHT, param)
        try:
            async with asyncio.timeout(self.timeout_s):
                fetched = await self._follow(url, param, cap)
            outcome = "ok"
            if lease is not None:
                lease.give_back((cap - len(fetched.data)) * FETCH_WEIGHT)
            return fetched
        except TimeoutError:
            outcome = "timeout"
            raise FetchRefused(f"{param}: image URL did not answer within {self.timeout_s:g}s", param=param) from None
        except httpx.HTTPError:
            outcome = "unreachable"
            raise FetchRefused(f"{param}: image URL could not be fetched", param=param) from None
        except ValueError:  # whatever else a URL or an answer can hold that a library refuses to parse
            outcome = "refused"
            raise FetchRefused(f"{param}: image URL or its answer could not be parsed", param=param) from None
        except PayloadTooLarge:
            outcome = "too_large"
            raise
        except FetchRefused:
            outcome = "refused"
            raise
        finally:
            self.count(outcome)

    async def open(self, url: str, param: str) -> httpx.Response:
        """The final answer for `url`, redirects followed with every hop checked as fetch() checks them, not
        read yet: the caller streams it (a batch task's text file, app/jobs/) and closes it."""
        for _ in range(self.max_redirects + 1):
            target = await self.check(url, param)
            response = await self._send(target, param)
            if response.status_code not in REDIRECTS:
                return response
            try:
                url = self._location(response, target, param)
            finally:
                await response.aclose()
        raise FetchRefused(f"{param}: URL redirected more than {self.max_redirects} times", param=param)

    async def _follow(self, url: str, param: str, cap: int) -> FetchedImage:
        for _ in range(self.max_redirects + 1):
            target = await self.check(url, param)
            response = await self._send(target, param)
            try:
                if response.status_code in REDIRECTS:
                    url = self._location(response, target, param)
                    continue
                return await self._read(response, param, cap)
            finally:
                await response.aclose()
        raise FetchRefused(f"{param}: image URL redirected more than {self.max_redirects} times", param=param)

    async def check(self, url: str, param: str) -> Target:
        """Parse the URL, resolve its host and check every address: the checked addresses are returned."""
        try:
            parsed = httpx.URL(url)
            host, port = parsed.host, parsed.port  # the host's IDNA form is decoded here: xn-- can fail
        except (httpx.InvalidURL, ValueError):  # IDNAError is a UnicodeError, a ValueError
            raise FetchRefused(f"{param}: not a valid URL", param=param) from None
        if parsed.scheme not in ("http", "https") or not host:
            raise FetchRefused(f"{param}: only http(s) URLs are fetched", param=param)
        if parsed.userinfo:
            raise FetchRefused(f"{param}: URLs with credentials are not fetched", param=param)
        port = port or (443 if parsed.scheme == "https" else 80)
        try:
            resolved = await self.resolve(host, port)
        except (OSError, UnicodeError):
            raise FetchRefused(f"{param}: host name of the image URL does not resolve", param=param) from None
        if not resolved:
            raise FetchRefused(f"{param}: host name of the image URL does not resolve", param=param)
        if not self._allowed(host, port):
            public = [parse_public(a) for a in resolved]
            if not all(public):
                raise FetchRefused(f"{param}: image URL points to a non-public address", param=param)
            resolved = [str(a) for a in public]
        return Target(parsed, host, resolved)

    def _allowed(self, host: str, port: int) -> bool:
        host = host.lower()
        return not self.allow_hosts.isdisjoint((host, f"{host}:{port}", f"[{host}]:{port}"))

    async def _send(self, target: Target, param: str) -> httpx.Response:
        headers = {
            "Host": target.url.netloc.decode("ascii"),
            "Accept": "image/*",
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }
        extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
        last: httpx.HTTPError | None = None
        for address in target.addresses:
            try:
                url = target.url.copy_with(host=address)
            except (httpx.InvalidURL, ValueError):  # e.g. a scoped IPv6 address of an allowed host
                raise FetchRefused(f"{param}: image URL host has an unusable address", param=param) from None
            request = self.client.build_request("GET", url, headers=headers, extensions=extensions)
            try:
                return await self.client.send(request, stream=True)
            except httpx.ConnectError as exc:  # the next checked address may answer
                last = exc
        assert last is not None
        raise last

    def _location(self, response: httpx.Response, target: Target, param: str) -> str:
        location = response.headers.get("location")
        if not location:
            raise FetchRefused(f"{param}: image URL redirected without a Location", param=param)
        try:
            return str(target.url.join(location))
        except (httpx.InvalidURL, ValueError):
            raise FetchRefused(f"{param}: image URL redirected to an invalid URL", param=param) from None

    async def _read(self, response: httpx.Response, param: str, cap: int) -> FetchedImage:
        if response.status_code != 200:
            raise FetchRefused(f"{param}: image URL answered HTTP {response.status_code}", param=param)
        mime = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not mime.startswith("image/"):
            raise FetchRefused(f"{param}: image URL answered a non-image Content-Type", param=param)
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise FetchRefused(f"{param}: image URL answered a compressed body", param=param)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise PayloadTooLarge(f"{param}: image larger than {cap} bytes", param=param)
        data = bytearray()
        async for chunk in response.aiter_raw():
            data += chunk
            if len(data) > cap:
                raise PayloadTooLarge(f"{param}: image larger than {cap} bytes", param=param)
        raw = bytes(data)
        del data
        real = sniff_format(raw)
        if real is None:
            raise FetchRefused(f"{param}: image URL answered bytes of no known image format", param=param)
        claimed = MIME_FORMATS.get(mime[6:])
        if claimed is not None and claimed != real:
            raise FetchRefused(f"{param}: image URL answered {mime} but the bytes are {real}", param=param)
        return FetchedImage(raw, real)
