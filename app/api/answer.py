"""Answer: a JSON document holding one entry per vector, written at once when small, in slices when large.

A 2,048-vector answer of 1,024 floats is 26 MB of JSON. Rendered whole, it blocks the event loop for tens
of milliseconds, and a reader that stops reading pins all of it until the connection dies. Here an answer
whose estimated size passes SMALL_ANSWER_BYTES is counted in the memory budget; up to SLICE_BYTES (eight
1,024-float vectors: the benchmark's cache hit) it is written at once with its length, past that it is
rendered SLICE_BYTES at a time (about twenty 1,024-float vectors, or fifty in base64: under a millisecond
of rendering each) and each slice is handed to the server as its own body message. uvicorn awaits the
transport's drain before writing the next one (its buffer is past the high-water mark), so a stalled
reader holds one slice rendered, one in the transport's buffer and the socket's buffers, and the server's
write deadline (app/server/) ends the wait. The bytes one answer may hold (two slices, or the whole) are
taken from the memory budget (app/runtime/budget.py) before the answer starts, so a flood of large
answers waits for room, or gets a 503 with Retry-After, rather than growing the process. A last empty
message ends the answer: its send waits for the drain of the last slice, so the budget is given back
(when the request ends) only once the bytes are gone.

The document is the same, byte for byte, either way: the slices are the entries' array rendered in parts
and joined with commas, between the document's head and tail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..runtime.budget import MemoryBudget
from .asgi.exchange import lease_of
from .vectortext import VectorText

SMALL_ANSWER_BYTES = 64 * 1024  # answers up to this size: one write, not counted (the connection cap bounds them)
SLICE_BYTES = 256 * 1024
ENTRY_BYTES = 64  # an entry's JSON around its vector: {"object":"embedding","index":2047,"embedding":...}
_SPLIT = orjson.Fragment(b"\x00")  # orjson escapes NUL inside strings: this byte marks the array's place
Entry = Callable[[int], dict[str, Any]]


async def answer(
    request: Request,
    budget: MemoryBudget,
    document: Callable[[Any], dict[str, Any]],
    entry: Entry,
    vectors: Sequence[bytes],
    text: VectorText,
    headers: Mapping[str, str],
) -> Response:
    """`document(array)`: the whole answer with `array` at the entries' place; `entry(i)`: the i-th entry
    (its vector as `text.fragment(vectors[i])`)."""
    per_vector = ENTRY_BYTES + int(len(vectors[0]) * text.ratio) if vectors else ENTRY_BYTES
    size = per_vector * len(vectors)
    if size <= SMALL_ANSWER_BYTES:
        return JSONAnswer(orjson.dumps(document([entry(i) for i in range(len(vectors))])), headers)
    lease = lease_of(request.scope, budget)
    if size <= SLICE_BYTES:  # one slice: its length is known
        await lease.take(size, "input")  # 503 + Retry-After when there is no room
        body = orjson.dumps(document([entry(i) for i in range(len(vectors))]))
        return SlicedAnswer(iter((body,)), headers, len(body))
    per_slice = max(1, SLICE_BYTES // per_vector)
    await lease.take(2 * per_vector * per_slice, "input")
    head, tail = orjson.dumps(document(_SPLIT)).split(b"\x00")
    return SlicedAnswer(_slices(head, tail, entry, len(vectors), per_slice), headers)


def _slices(head: bytes, tail: bytes, entry: Entry, count: int, per_slice: int) -> Iterator[bytes]:
    for start in range(0, count, per_slice):
        part = orjson.dumps([entry(i) for i in range(start, min(count, start + per_slice))])
        yield head + part[:-1] if start == 0 else b"," + part[1:-1]
    yield b"]" + tail


def raw_headers(headers: Mapping[str, str], length: int | None) -> list[tuple[bytes, bytes]]:
    """The head of a 200 JSON answer, as Starlette's Response makes it (the route's headers, lower-cased;
    then content-length when known, content-type), without its per-request checks."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if length is not None:
        raw.append((b"content-length", b"%d" % length))
    raw.append((b"content-type", b"application/json"))
    return raw


class JSONAnswer(Response):
    """A whole 200 JSON answer: Starlette's Response with its head made by `raw_headers`."""

    def __init__(self, body: bytes, headers: Mapping[str, str]) -> None:
        self.status_code = 200
        self.background = None
        self.body = body
        self.raw_headers = raw_headers(headers, len(body))


class SlicedAnswer(Response):
    """A 200 answer written as the slices come (chunked transfer encoding unless `length` is known), each
    send awaiting the transport's drain (uvicorn's flow control)."""

    def __init__(self, slices: Iterator[bytes], headers: Mapping[str, str], length: int | None = None) -> None:
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = raw_headers(headers, None)
        if length is not None:
            self.raw_headers.append((b"content-length", b"%d" % length))
        self.slices = slices

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        for n, part in enumerate(self.slices):
            if n:
                await asyncio.sleep(0)  # one slice per loop turn, however fast the reader
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
