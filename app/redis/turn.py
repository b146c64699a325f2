"""Turn: the cache's and the leases' Redis commands of one event-loop turn, sent as one round trip.

A miss makes three kinds of round trips: its cache read (one MGET per loop turn, cache/tickbatch.py), its
lease claim (a `SET NX PX` per key, per loop turn, flights/leases.py) and, per upstream call, the write of
the new vectors (a `SET EX` per key, flights/inflight.py). Under load the three come from different
requests in the same turn. `Turn` queues the commands its callers give during the current turn and, at
the end of it, writes them all on one pooled connection and reads the replies: one round trip, the same
single commands in the callers' order (a pipeline without a transaction); each caller gets its own
replies. A command that Redis refuses (an error reply) raises for its caller only; a failure of the round
trip itself (connection, timeout) raises for every caller in it. A caller that stops waiting (its own
timeout) does not stop the round trip the others share.

The commands are packed here (RESP, a few lines) and the replies read with the connection's own parser,
not queued on a redis-py pipeline: redis-py's pipeline spends ~15 us of client CPU per command (its
command objects, encoder, response callbacks), more than the command costs Redis; packed here, a claim of
8 keys measured ~105 us against ~205 us (client CPU, one round trip each, against a local redis-server).
Replies are Redis's own: `b"OK"` or None for a SET, a list for an MGET. Single server or Sentinel master
only: a cluster's commands go per node through redis-py's cluster pipeline (link.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

Arg = str | bytes | int
Command = Sequence[Arg]


def pack(commands: Sequence[Command]) -> bytes:
    """The commands in RESP, as redis-py writes them (str as UTF-8, int in decimal)."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            b = arg if isinstance(arg, bytes) else (arg.encode() if isinstance(arg, str) else b"%d" % arg)
            out.append(b"$%d\r\n" % len(b))
            out.append(b)
            out.append(b"\r\n")
    return b"".join(out)


class Turn:
    def __init__(self, client: aioredis.Redis, using: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self.pool = client.connection_pool
        self.using = using
        self.pending: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, commands: Sequence[Command]) -> list[Any]:
        """The replies to `commands`, sent with the other callers' commands of this loop turn."""
        if not commands:
            return []
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        if not self.pending:
            loop.call_soon(self._flush)
        self.pending.append((commands, fut))
        return await fut

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]) -> None:
        try:
            async with self.using():
                replies = await self._send([c for commands, _ in batch for c in commands])
        except Exception as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        except BaseException:  # cancelled (shutdown): so are the callers' waits
            for _, fut in batch:
                fut.cancel()
            raise
        at = 0
        for commands, fut in batch:
            mine, at = replies[at : at + len(commands)], at + len(commands)
            if fut.done():
                continue
            refused = next((r for r in mine if isinstance(r, ResponseError)), None)
            if refused is not None:
                fut.set_exception(refused)
            else:
                fut.set_result(mine)

    async def _send(self, commands: list[Command]) -> list[Any]:
        """One round trip on one of the pool's connections; a connection left mid-reply is closed."""
        conn = await self.pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(pack(commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # this command's error reply: the next replies follow it
                    replies.append(exc)
            return replies
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await self.pool.release(conn)
