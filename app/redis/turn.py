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

The turn's batching is cache/tickbatch.py's; the commands are packed and the replies read by the pooled
connection itself (redis-py's `pack_commands`, `send_packed_command`, `read_response`: what its pipeline
does underneath), not queued on a redis-py pipeline object: that spends ~15 us of client CPU per command
(its command objects, response callbacks), more than the command costs Redis; this way a claim of 8 keys
measured ~105 us against ~205 us (client CPU, one round trip each, against a local redis-server).
Replies are Redis's own: `b"OK"` or None for a SET, a list for an MGET. Single server or Sentinel master
only: a cluster's commands go per node through redis-py's cluster pipeline (link.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from ..cache.tickbatch import TickBatcher

Arg = str | bytes | int
Command = Sequence[Arg]


class Turn:
    def __init__(self, client: aioredis.Redis, using: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self.pool = client.connection_pool
        self.using = using
        self.batch: TickBatcher[Command, Any] = TickBatcher(self._round_trip)

    async def __call__(self, commands: Sequence[Command]) -> list[Any]:
        """The replies to `commands`, sent with the other callers' commands of this loop turn."""
        replies = await self.batch(commands)
        refused = next((r for r in replies if isinstance(r, ResponseError)), None)
        if refused is not None:
            raise refused
        return replies

    async def _round_trip(self, commands: list[Command]) -> list[Any]:
        async with self.using():
            return await self._send(commands)

    async def _send(self, commands: list[Command]) -> list[Any]:
        """One round trip on one of the pool's connections; a connection left mid-reply is closed."""
        conn = await self.pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
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
