"""A pure ASGI middleware that refuses requests whose headers are too large or too many (431, in the
caller's wire format), before any route reads them.

uvicorn with httptools accepts request heads of any size, so this is the gateway's own cap; an ingress in
front should cap them too (the head is already in memory when this runs).
"""

from __future__ import annotations

from itertools import chain

from starlette.types import ASGIApp, Receive, Scope, Send

from ...errors import HeadersTooLarge
from ..rendering import render, wire_of
from .exchange import exchange_of


class HeaderLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_count: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_count = max_count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            if len(headers) > self.max_count or sum(map(len, chain.from_iterable(headers))) > self.max_bytes:
                err = HeadersTooLarge(f"request headers: more than {self.max_count} headers or {self.max_bytes} bytes")
                await render(err, wire_of(scope["path"]), exchange_of(scope).request_id)(scope, receive, send)
                return
        await self.app(scope, receive, send)
