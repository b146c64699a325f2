"""bench.inproc --via server: the transport resolves at the end of each answer, whatever its length, and the raw-ASGI
floor answers through uvicorn's protocol with a body of the size asked for."""

from __future__ import annotations

import asyncio

from bench.inproc import Sink, declared_length, floor_rounds
from bench.stack import AUTH


def test_a_whole_answer_resolves_only_once_its_body_is_in() -> None:
    async def run() -> tuple[bool, bool, bytes]:
        sink = Sink()
        done = sink.expect(keep=True)
        sink.writelines((b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n", b"\r\nab"))
        early = done.done()
        sink.write(b"cde")
        return early, done.done(), bytes(sink.kept or b"")

    early, late, kept = asyncio.run(run())
    assert not early and late
    assert kept.endswith(b"\r\n\r\nabcde")
    assert declared_length(b"HTTP/1.1 200 OK\r\ncontent-length: 5") == -1  # the head is not complete yet


def test_answers_of_different_lengths_each_resolve_at_their_end() -> None:
    """The rate-limit headers' digits change an answer's length: each answer ends where its head says."""

    async def run() -> list[bool]:
        sink = Sink()
        seen = []
        for head, body in (
            (b"x-remaining: 1000\r\ncontent-length: 4", b"abcd"),
            (b"x-remaining: 999\r\ncontent-length: 6", b"abcdef"),
        ):
            done = sink.expect()
            sink.write(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n\r\n" + body[:2])
            seen.append(done.done())
            sink.write(body[2:])
            seen.append(done.done())
            sink.write(b"")
        return seen

    assert asyncio.run(run()) == [False, True, False, True]


def test_the_floor_answers_the_size_asked_through_uvicorns_protocol() -> None:
    rounds = asyncio.run(floor_rounds(4321, calls=20, rounds=2, auth=AUTH))
    assert len(rounds) == 2
    assert all(wall > 0 and cpu >= 0 and 0 < to_write <= wall * 20 for wall, cpu, to_write in rounds)
