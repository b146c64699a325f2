"""Issue 23, item 4: compressed request bodies inflated with zlib within the body cap (a bomb refused at the
cap, having held no more than it), their inflated size counted in the memory budget; other encodings 415
naming them; a key header sent twice is 400."""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator

import pytest
from starlette.requests import Request

from app.api.asgi.exchange import SCOPE_KEY, Exchange
from app.api.body import read_body
from app.api.encodings import STEP_BYTES, Inflater, coding_of
from app.errors import InvalidRequest, PayloadTooLarge, UnsupportedEncoding
from app.runtime.budget import MemoryBudget
from app.teams.keys import one_key_header_each

BODY = b'{"model": "text-embedding-v4", "input": ["' + b"compressed text " * 2000 + b'"]}'
MB = 1 << 20


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def bomb(mb: int) -> bytes:
    """One gzip member that inflates to `mb` MiB of zeros, made without compressing them all: each MiB
    compressed once and repeated (a full flush makes every block start alike), then the gzip trailer."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(MB)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mb):
        crc = zlib.crc32(zeros, crc)
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return head + block * mb + c.flush() + struct.pack("<II", crc, (mb * MB) & 0xFFFFFFFF)


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize(
    ("coding", "packed"),
    [
        ("gzip", gzip.compress(BODY)),
        ("deflate", zlib.compress(BODY)),  # the zlib format (RFC 9110's deflate)
        ("deflate", raw_deflate(BODY)),  # raw deflate, as some clients send it
        ("gzip", gzip.compress(BODY[:1000]) + gzip.compress(BODY[1000:])),  # two gzip members
    ],
)
@pytest.mark.parametrize("piece", [1, 7, 65536])
def test_bodies_inflate_whatever_the_pieces_they_arrive_in(coding: str, packed: bytes, piece: int) -> None:
    inflater = Inflater(coding, len(BODY))
    out = b"".join(b"".join(inflater.feed(p)) for p in pieces(packed, piece))
    inflater.finish()
    assert out == BODY


def test_a_bomb_is_refused_at_the_cap_having_inflated_no_more_than_it() -> None:
    limit = 32 * MB
    inflater = Inflater("gzip", limit)
    held = 0
    with pytest.raises(PayloadTooLarge, match="larger than 33554432 bytes once inflated"):
        for p in pieces(bomb(1024), 64 * 1024):
            held += sum(len(x) for x in inflater.feed(p))
    assert held <= limit and inflater.size <= limit + STEP_BYTES


@pytest.mark.parametrize(
    ("packed", "why"),
    [(gzip.compress(BODY)[:-20], "ends early"), (b"\x1f\x8b not gzip at all", "not valid compressed data")],
)
def test_broken_streams_are_400_naming_the_body(packed: bytes, why: str) -> None:
    inflater = Inflater("gzip", MB)
    with pytest.raises(InvalidRequest) as err:
        inflater.feed(packed)
        inflater.finish()
    assert err.value.status == 400 and err.value.param == "body" and why in err.value.message


def test_deflate_then_more_data_is_400() -> None:
    with pytest.raises(InvalidRequest, match="after the end"):
        Inflater("deflate", MB).feed(zlib.compress(BODY) + b"trailing")


@pytest.mark.parametrize(
    ("values", "coding"),
    [([], None), ([b"identity"], None), ([b"GZIP"], "gzip"), ([b"x-gzip"], "gzip"), ([b"deflate"], "deflate")],
)
def test_codings_taken(values: list[bytes], coding: str | None) -> None:
    assert coding_of(values) == coding


@pytest.mark.parametrize("values", [[b"br"], [b"zstd"], [b"gzip, br"], [b"gzip", b"gzip"], [b"compress"]])
def test_other_codings_are_415_naming_them(values: list[bytes]) -> None:
    with pytest.raises(UnsupportedEncoding) as err:
        coding_of(values)
    assert err.value.status == 415 and err.value.param == "content-encoding"
    assert b", ".join(values).decode() in err.value.message


def request(body_pieces: list[bytes], headers: list[tuple[bytes, bytes]]) -> Request:
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(body_pieces) - 1} for i, p in enumerate(body_pieces)
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": headers, SCOPE_KEY: Exchange("r")}
    return Request(scope, receive)  # type: ignore[arg-type]


async def test_the_inflated_size_counts_in_the_memory_budget_and_the_cap() -> None:
    packed = gzip.compress(BODY * 40)  # 1.3 MB inflated from a few KB
    budget = MemoryBudget(64 * MB, wait_s=0)
    headers = [(b"content-encoding", b"gzip"), (b"content-length", str(len(packed)).encode())]
    assert await read_body(request(list(pieces(packed, 1000)), headers), 8 * MB, budget) == BODY * 40
    assert budget.peak_held >= 2 * len(BODY * 40) - 2 * 64 * 1024  # all but the first SMALL_BODY_BYTES
    with pytest.raises(PayloadTooLarge, match="once inflated"):
        await read_body(request([packed], headers), MB, MemoryBudget(64 * MB, wait_s=0))


@pytest.mark.parametrize("name", [b"authorization", b"x-dashscope-apikey"])
def test_a_key_header_sent_twice_is_400_naming_it(name: str) -> None:
    one_key_header_each([(name, b"Bearer a"), (b"x-other", b"1")])
    with pytest.raises(InvalidRequest) as err:
        one_key_header_each([(name, b"Bearer a"), (b"accept", b"*/*"), (name, b"Bearer b")])
    assert err.value.status == 400 and err.value.param == name.decode() and "more than once" in err.value.message
