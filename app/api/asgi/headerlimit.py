"""The cap on request headers: a request whose headers are too large or too many is refused (431, in the
caller's wire format) by the front layer (front.py), before any route reads them.

uvicorn with httptools accepts request heads of any size, so this is the gateway's own cap; an ingress in
front should cap them too (the head is already in memory when this runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

from ...errors import HeadersTooLarge


@dataclass(frozen=True, slots=True)
class HeaderLimit:
    max_bytes: int
    max_count: int

    def refusal(self, headers: list[tuple[bytes, bytes]]) -> HeadersTooLarge | None:
        """The error for `headers` (the ASGI scope's) when they are over the cap, else None."""
        if len(headers) > self.max_count or sum(map(len, chain.from_iterable(headers))) > self.max_bytes:
            return HeadersTooLarge(f"request headers: more than {self.max_count} headers or {self.max_bytes} bytes")
        return None
