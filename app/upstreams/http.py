"""HttpClient: the upstream adapters' one HTTP client, aiohttp's, with the gateway's rules around it.

- Proxies from the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY, as aiohttp's `trust_env` reads them),
  looked up once per upstream origin: with `trust_env=True` aiohttp looks them up again on every request,
  in a thread (measured here: ~200 us of CPU per call, twice the rest of the call).
- Timeouts: `connect_s` to open a connection, `read_s` between two reads of the answer (a slow but
  steady answer is fine, a stalled one is not); the whole call is bounded by the caller (the guard
  runs each attempt within the request's deadline).
- A size cap on every answer, counted twice as it is read in chunks: bytes received (compressed, as
  sent) and bytes decoded (decompressed by aiohttp in bounded steps). Past the cap the read stops and
  the connection is closed, so neither a 100 MB answer nor a small gzip that inflates to 300 MB is held.
- Keep-alive pools sized from the upstream's settings: at most `max_connections` open, idle ones closed
  after `keepalive_s` (below the 5 s that uvicorn and many servers use, so that we close first).
- A POST is sent once per call. aiohttp retries a request on a reused connection the server closed only
  for idempotent methods (`IDEMPOTENT_METHODS` in aiohttp/client.py: GET, HEAD, OPTIONS, TRACE, PUT,
  DELETE), never a POST; such a failure surfaces here as an error and the guard's retry policy, the only
  one, decides whether to try again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from ..errors import UpstreamFailed, UpstreamInvalid, UpstreamTimeout

ERROR_BODY_BYTES = 64 * 1024  # an error answer's body is read up to this much (its code and message)


class AnswerTooLarge(UpstreamInvalid):
    """The answer passed the size cap (as received or as decoded): a broken or hostile upstream."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy)
    body: bytes


class Poster(Protocol):
    """What an adapter needs of HTTP: one POST, its answer read whole (within `max_bytes`)."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, max_bytes: int) -> Answer: ...

    async def close(self) -> None: ...


class HttpClient:
    """One upstream's aiohttp session; opened on first use (aiohttp wants a running loop)."""

    def __init__(
        self,
        name: str,
        *,
        max_connections: int,
        keepalive_s: float,
        connect_s: float,
        read_s: float,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_s, sock_read=read_s)
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[URL, tuple[URL | None, aiohttp.BasicAuth | None]] = {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=0, keepalive_timeout=self.keepalive_s, ttl_dns_cache=60
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, max_bytes: int) -> Answer:
        """POST `body`; the answer's status, headers and whole body (an error answer's up to 64 KiB), within
        `max_bytes` and the client's own cap. Raises UpstreamTimeout, UpstreamFailed (unreachable, closed,
        malformed) or AnswerTooLarge."""
        max_bytes = min(max_bytes, self.max_bytes)
        proxy, proxy_auth = self._proxy(url)
        try:
            async with self.session().post(
                url, data=body, headers=headers, allow_redirects=False, proxy=proxy, proxy_auth=proxy_auth
            ) as resp:
                limit = max_bytes if resp.status == 200 else min(max_bytes, ERROR_BODY_BYTES)
                return Answer(resp.status, resp.headers, await self._read(resp, limit, truncate=resp.status != 200))
        except (TimeoutError, aiohttp.ServerTimeoutError, aiohttp.ConnectionTimeoutError):
            raise UpstreamTimeout(f"upstream {self.name} did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise UpstreamFailed(f"upstream {self.name} could not be reached ({_why(exc)})") from None

    async def _read(self, resp: aiohttp.ClientResponse, limit: int, *, truncate: bool) -> bytes:
        if resp.content_length is not None and resp.content_length > limit and not truncate:
            resp.close()
            raise self._too_large(limit)
        chunks: list[bytes] = []
        size = 0
        stream = resp.content
        async for chunk in stream.iter_any():
            size += len(chunk)
            if size > limit or stream.total_raw_bytes > limit:
                resp.close()  # the rest is never read: the connection goes, not back to the pool
                if truncate:
                    chunks.append(chunk[: max(0, limit - (size - len(chunk)))])
                    break
                raise self._too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    def _proxy(self, url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """The environment's proxy for `url`'s origin (None: direct, also for NO_PROXY hosts), looked up once."""
        target = URL(url)
        origin = target.origin()
        found = self._proxies.get(origin)
        if found is None:
            try:
                found = get_env_proxy_for_url(target)
            except LookupError:
                found = None, None
            self._proxies[origin] = found
        return found

    def _too_large(self, limit: int) -> AnswerTooLarge:
        return AnswerTooLarge(f"upstream {self.name} answered more than {limit} bytes")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _why(exc: aiohttp.ClientError) -> str:
    """A short, key-free reason for logs and messages."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed before the answer"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection refused or unreachable"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "incomplete or undecodable answer"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "malformed answer"
    return type(exc).__name__
