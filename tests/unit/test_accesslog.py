"""The access log writer: lines of one loop turn written together, in pipe-atomic writes cut at line ends."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterator

import orjson
import pytest

from app.api.asgi.accesslog import CHUNK, LOGGER, AccessLog


@pytest.fixture
def pipe() -> Iterator[tuple[socket.socket, int]]:
    """A stand-in for stderr that keeps the boundaries of writes: each os.write is one packet."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    reader.setblocking(False)
    yield reader, writer.fileno()
    reader.close()
    writer.close()


def reads(reader: socket.socket) -> list[bytes]:
    """The writes made so far, one bytes each."""
    out = []
    while True:
        try:
            out.append(reader.recv(1 << 20))
        except BlockingIOError:
            return out


def test_lines_of_one_turn_go_out_together_at_its_end(pipe: tuple[socket.socket, int]) -> None:
    r, w = pipe
    log = AccessLog(w)

    async def turn() -> list[bytes]:
        for i in range(3):
            log.write({"request_id": str(i), "status": 200})
        before = reads(r)
        await asyncio.sleep(0)  # the loop's turn ends
        return before

    assert asyncio.run(turn()) == []
    data = b"".join(reads(r))
    assert [orjson.loads(line) for line in data.splitlines()] == [
        {"request_id": str(i), "status": 200} for i in range(3)
    ]


def test_writes_are_cut_at_line_ends_and_never_exceed_pipe_buf(pipe: tuple[socket.socket, int]) -> None:
    r, w = pipe
    log = AccessLog(w)
    lines = [{"request_id": f"r{i}", "pad": "x" * (50 + 37 * (i % 7))} for i in range(200)]

    async def burst() -> None:
        for line in lines:
            log.write(line)
        await asyncio.sleep(0)

    asyncio.run(burst())
    writes = reads(r)
    assert len(writes) > 1
    for chunk in writes:
        assert len(chunk) <= CHUNK and chunk.endswith(b"\n")
    assert [orjson.loads(x) for x in b"".join(writes).splitlines()] == lines


def test_without_a_running_loop_a_line_is_written_at_once(pipe: tuple[socket.socket, int]) -> None:
    r, w = pipe
    AccessLog(w).write({"status": 404})
    assert reads(r) == [b'{"status":404}\n']


def test_off_unless_the_access_logger_logs_info() -> None:
    logger = logging.getLogger(LOGGER)
    old = logger.level
    try:
        logger.setLevel(logging.WARNING)
        assert not AccessLog().enabled
        logger.setLevel(logging.INFO)
        assert AccessLog().enabled
    finally:
        logger.setLevel(old)


def test_a_closed_stderr_loses_lines_not_requests() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    AccessLog(w).write({"status": 200})  # EBADF: dropped silently
