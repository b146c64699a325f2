"""The pure parts of batch jobs: input lines cut from a stream at any chunk boundary (blank lines skipped,
a line over the cap reported as None and its bytes dropped, a last line without its newline kept), and a
streamed multipart upload counted against its caps; an output line rendered a slice per loop turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import orjson
import pytest

from app.api.vectortext import FLOAT_RATIO, VectorText, float_json
from app.errors import InvalidRequest, PayloadTooLarge
from app.jobs.lines import render, split_lines
from app.jobs.upload import MultipartFile
from app.service import EmbedResult


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def lines_of(data: bytes, size: int, cap: int) -> list[bytes | None]:
    async def collect() -> list[bytes | None]:
        return [x async for x in split_lines(pieces(data, size), cap)]

    return asyncio.run(collect())


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_lines_are_the_same_whatever_the_chunks(size: int) -> None:
    data = b"alpha\n\nbeta\r\n  \n" + b"x" * 30 + b"\ngamma\n" + b"y" * 12 + b"\nlast"
    assert lines_of(data, size, 20) == [b"alpha", b"beta\r", None, b"gamma", b"y" * 12, b"last"]


def test_a_long_last_line_without_newline_is_reported() -> None:
    assert lines_of(b"ok\n" + b"z" * 50, 4, 20) == [b"ok", None]


def multipart(body: bytes, boundary: str = "b0undary") -> tuple[str, bytes]:
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
            "Content-Type: application/jsonl\r\n\r\n").encode()  # fmt: skip
    return f"multipart/form-data; boundary={boundary}", head + body + f"\r\n--{boundary}--\r\n".encode()


def upload(content_type: str, body: bytes, *, max_bytes: int = 1000, max_lines: int = 5) -> MultipartFile:
    form = MultipartFile(content_type, max_bytes=max_bytes, max_lines=max_lines)

    async def drain() -> bytes:
        return b"".join([x async for x in form.file_chunks(pieces(body, 7))])

    got = asyncio.run(drain())
    assert got == body[body.index(b"\r\n\r\n", body.index(b"filename")) + 4 : body.rindex(b"\r\n--")]
    return form


def test_an_upload_is_streamed_and_counted() -> None:
    form = upload(*multipart(b"a\nb\nc"))
    assert form.fields == {"purpose": "batch"} and form.filename == "in.jsonl"
    assert form.size == 5 and form.lines == 3


@pytest.mark.parametrize(
    ("body", "error"),
    [(b"a\nb\nc\nd\ne\nf", InvalidRequest), (b"a\nb\nc\nd\ne\nf\n", InvalidRequest), (b"x" * 1001, PayloadTooLarge)],
)
def test_an_upload_over_its_caps_is_refused(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        upload(*multipart(body))


def test_a_body_that_is_not_multipart_is_a_400() -> None:
    with pytest.raises(InvalidRequest):
        MultipartFile("application/json", max_bytes=10, max_lines=1)
    with pytest.raises(InvalidRequest):
        upload("multipart/form-data; boundary=zz", b"--zz\r\nnot a part at all")


async def test_a_wide_line_is_rendered_a_slice_per_loop_turn_and_byte_for_byte_as_at_once() -> None:
    vectors = [np.random.default_rng(i).random(1536, dtype=np.float32).tobytes() for i in range(300)]
    result = EmbedResult(vectors=vectors, hits=0, misses=300, billed_tokens=42)
    text = VectorText(64 << 20, float_json, FLOAT_RATIO)
    turns = 0

    async def count() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    counter = asyncio.create_task(count())
    got = await render(result, "m", text)
    counter.cancel()
    data = [{"object": "embedding", "index": i, "embedding": text.fragment(v)} for i, v in enumerate(vectors)]
    usage = {"prompt_tokens": 42, "total_tokens": 42}
    assert got == orjson.dumps({"object": "list", "data": data, "model": "m", "usage": usage})
    assert turns >= 300 // 20  # ~13 vectors of 1,536 floats a slice
    empty = EmbedResult(vectors=[], hits=0, misses=0, billed_tokens=0)
    assert orjson.loads(await render(empty, "m", text)) == {
        "object": "list",
        "data": [],
        "model": "m",
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
