"""Compressed request bodies: `Content-Encoding: gzip` (or `x-gzip`) and `deflate`, inflated as they arrive.

zlib (the standard library) does the inflating; this module only bounds it. Each received chunk is inflated
with `max_length` set to what the body cap still allows (plus one byte, to see it passed), so a small
compressed body that would inflate to gigabytes (a "gzip bomb") is refused with 413 as soon as its inflated
size passes MAX_BODY_BYTES, having held at most the cap and one chunk. `deflate` is the zlib format
(RFC 9110), and raw deflate as some clients send it (told apart by the zlib header). Several gzip members
one after another are one body (RFC 1952). Any other coding is refused with 415 naming it, before any work.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from ..errors import InvalidRequest, PayloadTooLarge, UnsupportedEncoding

GZIP_WBITS = 16 + zlib.MAX_WBITS
SUPPORTED = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
STEP_BYTES = 1 << 20  # inflated per call at most: no single call holds the event loop for long


def coding_of(values: Iterable[bytes]) -> str | None:
    """The body's coding from its Content-Encoding header values: None (identity), "gzip" or "deflate"."""
    codings = [c.strip().lower() for v in values for c in v.decode("latin-1").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in SUPPORTED:
        return SUPPORTED[codings[0]]
    named = ", ".join(codings)[:100]
    raise UnsupportedEncoding(
        f"Content-Encoding: {named} is not supported: send the body as it is, or compressed with gzip or deflate",
        param="content-encoding",
    )


class Inflater:
    """One body's inflating: `feed` each received chunk, `finish` at the end; the output never passes `limit`
    bytes in all (PayloadTooLarge as soon as it would)."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.size = 0
        self.inflater: zlib._Decompress | None = None
        self.head = b""

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        if self.inflater is None and self.coding == "deflate" and len(self.head + data) < 2:
            self.head += data  # its first two bytes tell the zlib format from raw deflate
            return out
        data, self.head = self.head + data, b""
        while data:
            d = self.inflater
            if d is None or d.eof:
                if d is not None and self.coding != "gzip":
                    raise self._invalid("data after the end of the compressed stream")
                d = self.inflater = self._start(data)  # the body's stream, or its next gzip member
            self._inflate(d, data, out)
            data = d.unused_data if d.eof else b""
        return out

    def finish(self) -> None:
        if self.head or (self.inflater is not None and not self.inflater.eof):
            raise self._invalid("the compressed stream ends early")

    def _start(self, first: bytes) -> zlib._Decompress:
        """deflate: the zlib format when the first two bytes are a zlib header, else raw deflate."""
        if self.coding == "gzip":
            return zlib.decompressobj(GZIP_WBITS)
        zlib_header = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)

    def _inflate(self, d: zlib._Decompress, data: bytes, out: list[bytes]) -> None:
        """Inflates `data` into `out` within the cap, in steps of at most STEP_BYTES."""
        while not d.eof:
            step = min(self.limit - self.size + 1, STEP_BYTES)
            try:
                chunk = d.decompress(data, step)
            except zlib.error:
                raise self._invalid("not valid compressed data") from None
            self.size += len(chunk)
            if self.size > self.limit:
                raise PayloadTooLarge(f"body: larger than {self.limit} bytes once inflated", param="body")
            out.append(chunk)
            data = d.unconsumed_tail
            if not data and len(chunk) < step:  # all input used, and no output held back for want of room
                break

    def _invalid(self, why: str) -> InvalidRequest:
        return InvalidRequest(f"body: {why} (Content-Encoding: {self.coding})", param="body")
