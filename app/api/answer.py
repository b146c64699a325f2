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

orjson renders everything but the vectors: each entry holds the VECTOR marker (a NUL byte, which orjson
writes nowhere else: it escapes NUL inside strings) where its vector goes, and the rendered JSON, cut at
the markers, is joined with the vectors' prepared text (vectortext.py). A route gives its document as a
function of the entries' array and the answer's `facts` (for the OpenAI route its model and billed tokens),
and its entries as a function of their index: the rendering then depends on nothing else than the document,
the entry, the facts and the number of entries, and a route that passes its `Skeletons` gets the cut JSON of
a shape seen recently without building the entries and the document again (a cache hit of 8 vectors: ~10 ->
~5 us).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..runtime.budget import MemoryBudget
from ..runtime.memo import Memo, MemoGauges
from .asgi.exchange import lease_of
from .vectortext import VectorText

SMALL_ANSWER_BYTES = 64 * 1024  # answers up to this size: one write, not counted (the connection cap bounds them)
SLICE_BYTES = 256 * 1024
ENTRY_BYTES = 64  # an entry's JSON around its vector: {"object":"embedding","index":2047,"embedding":...}
VECTOR = orjson.Fragment(b"\x00")  # orjson escapes NUL inside strings: this byte marks where a vector goes (or,
# in a document rendered in slices, where the entries' array goes)
MAX_SKELETONS = 1024  # answer shapes whose rendered JSON Skeletons keeps (then it starts again empty)
MAX_SKELETONS_BYTES = 4 << 20  # what they hold in all, at most (docs/operations.md: memory per worker)
MAX_SKELETON_BYTES = 16 << 10  # the most one shape holds (128 entries: ~12.8 KB), else rendered every time
PIECE_BYTES = 48  # a piece's bytes object (33) rounded up by the allocator (7) and its slot in the list (8)
SKELETON_BYTES = 320  # a shape's list (with split's spare slots), tuple, billed int, dict slots (~135 measured)
Entry = Callable[[int], dict[str, Any]]  # the i-th entry, with VECTOR where its vector goes
Document = Callable[[Any, Any], dict[str, Any]]  # the whole answer from the entries' array and the answer's facts


class Skeletons(Memo[Hashable, list[bytes]]):
    """The JSON of recent answers' shapes, cut where their vectors go: an answer of a shape seen before costs
    one dict lookup instead of its entries, its document and their rendering. Correct without invalidation:
    a shape is everything its JSON depends on besides the vectors, as long as the document reads nothing but
    its arguments and the entry nothing but the index (module functions, no closures: tests/unit/test_answer.py
    checks the OpenAI route's), with facts that are hashable and never changed. Bounded
    (runtime/memo.py): MAX_SKELETONS shapes, MAX_SKELETONS_BYTES in all (`skeleton_bytes`), none over
    MAX_SKELETON_BYTES (about 160 entries)."""

    __slots__ = ()

    def __init__(self, gauges: MemoGauges | None = None) -> None:
        super().__init__(
            max_entries=MAX_SKELETONS, max_bytes=MAX_SKELETONS_BYTES, max_entry_bytes=MAX_SKELETON_BYTES, gauges=gauges
        )

    def cut(self, document: Document, facts: Hashable, entry: Entry, count: int) -> list[bytes]:
        shape = (document, entry, facts, count)
        pieces = self.recent.get(shape)
        if pieces is None:
            pieces = _cut(document, facts, entry, count)
            self.put(shape, pieces, skeleton_bytes(pieces))
        return pieces


def skeleton_bytes(pieces: list[bytes]) -> int:
    """What a Skeletons entry holds: its pieces (each a bytes object and its slot in the list) and the list,
    the shape's tuple and their slots in the memo's dicts (SKELETON_BYTES). tests/unit/test_answer.py checks it
    against tracemalloc."""
    return sum(map(len, pieces)) + PIECE_BYTES * len(pieces) + SKELETON_BYTES


async def answer(
    request: Request,
    budget: MemoryBudget,
    document: Document,
    facts: Any,
    entry: Entry,
    vectors: Sequence[bytes],
    text: VectorText,
    headers: Mapping[str, str],
    skeletons: Skeletons | None = None,
) -> Response:
    """`document(array, facts)`: the whole answer with `array` at the entries' place; `entry(i)`: the i-th
    entry, with VECTOR where its vector goes; `skeletons`: the route's memo of their JSON (None: rendered every
    time; else `facts` must be hashable)."""
    per_vector, per_slice = slice_of(vectors, text)
    size = per_vector * len(vectors)
    if size <= SLICE_BYTES:  # one write: its length is known
        if size > SMALL_ANSWER_BYTES:  # 503 + Retry-After when there is no room
            await lease_of(request.scope, budget).take(size, "input")
        count = len(vectors)
        if skeletons is None:
            pieces = _cut(document, facts, entry, count)
        else:
            pieces = skeletons.cut(document, facts, entry, count)
        body = _filled(pieces, vectors, text)
        if size <= SMALL_ANSWER_BYTES:
            return JSONAnswer(body, headers)
        return SlicedAnswer(iter((body,)), headers, len(body))
    await lease_of(request.scope, budget).take(2 * per_vector * per_slice, "input")
    return SlicedAnswer(sliced(document, facts, entry, vectors, text, per_slice), headers)


def slice_of(vectors: Sequence[bytes], text: VectorText) -> tuple[int, int]:
    """An entry's bytes at most (its JSON around the vector, and the vector's text), and the entries of a
    slice of an answer rendered in slices (SLICE_BYTES of them)."""
    per_vector = ENTRY_BYTES + int(len(vectors[0]) * text.ratio) if vectors else ENTRY_BYTES
    return per_vector, max(1, SLICE_BYTES // per_vector)


def sliced(
    document: Document, facts: Any, entry: Entry, vectors: Sequence[bytes], text: VectorText, per_slice: int
) -> Iterator[bytes]:
    """The whole document of one or more entries, `per_slice` entries a piece (their JSON joined is the
    document rendered at once, byte for byte)."""
    head, tail = orjson.dumps(document(VECTOR, facts)).split(b"\x00")
    return _slices(head, tail, entry, vectors, text, per_slice)


def _cut(document: Document, facts: Any, entry: Entry, count: int) -> list[bytes]:
    """The document's JSON with `count` entries, cut where their vectors go (count + 1 pieces)."""
    return orjson.dumps(document([entry(i) for i in range(count)], facts)).split(b"\x00")


def _filled(pieces: list[bytes], vectors: Sequence[bytes], text: VectorText) -> bytes:
    """The pieces joined with the vectors' JSON text between them."""
    json = text.json
    parts = [pieces[0]]
    for i, vector in enumerate(vectors, 1):
        parts += (json(vector), pieces[i])
    return b"".join(parts)


def _slices(
    head: bytes, tail: bytes, entry: Entry, vectors: Sequence[bytes], text: VectorText, per_slice: int
) -> Iterator[bytes]:
    count = len(vectors)
    for start in range(0, count, per_slice):
        end = min(count, start + per_slice)
        part = _filled(orjson.dumps([entry(i) for i in range(start, end)]).split(b"\x00"), vectors[start:end], text)
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
