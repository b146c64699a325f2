"""Turn: the cache's and the leases' Redis commands of one event-loop turn, sent as one round trip.

A miss makes three kinds of round trips: its cache read, its lease claim (a `SET NX PX` per key, the
coalescer's one claim per loop turn, flights/leases.py) and, per upstream call, the write of the new
vectors (a `SET EX` per key, flights/inflight.py). Under load the three come from different requests in the
same turn. `Turn` queues the commands its callers give during the current turn and, at the end of it,
writes them all on one pooled connection and reads the replies: one round trip, the same single commands
in the callers' order (a pipeline without a transaction), then one MGET of every key read in the turn
(`read`: one command for all readers, as Redis's work per read is mostly the command, not its keys); each
caller gets its own replies. A command that Redis refuses (an error reply) raises for its caller only; a
failure of the round trip itself (connection, timeout) raises for every caller in it. A caller that stops
waiting (its own timeout, a cancel) does not stop the round trip the others share: a task per turn makes it.

The commands are packed by hiredis (`pack_command`, what redis-py's own synchronous client packs with) and
the replies read by a pooled connection itself (redis-py's `send_packed_command`, `read_response`: what its
pipeline does underneath), not queued on a redis-py pipeline object: that spends ~15 us of client CPU per
command (its command objects, response callbacks). Per round trip, what redis-py's pool and connection add
is avoided too: the turn keeps up to KEEP of a blocking pool's connections between its round trips (the
pool's checkout and release, ~25 us), and a connection the turn holds has no socket timeout of its own:
the round trip, waiting for a connection included, runs within one deadline (the pool's `socket_timeout`),
instead of redis-py's `asyncio.wait_for` per send (a task each) and a timeout per reply read. A kept
connection that Redis closed meanwhile is connected again before its use. Replies are Redis's own: `b"OK"`
or None for a SET, a list for an MGET. Single server or Sentinel master only: a cluster's commands go per
node through redis-py's cluster pipeline (link.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ..cache.tickbatch import answered, fail, hand_out

Arg = str | bytes | int | float
Command = Sequence[Arg]
KEEP = 8  # connections the turn keeps between its round trips (at most half of the pool)


class Turn:
    def __init__(self, client: aioredis.Redis, using: Callable[[], AbstractAsyncContextManager[Any]] | None) -> None:
        """`using`: held around each round trip (a cap on the link's commands in flight); None: nothing to hold."""
        self.pool = client.connection_pool
        self.using = using
        self.queued: list[tuple[list[Command], asyncio.Future[list[Any]]]] = []  # this loop turn's commands
        self.reads: list[tuple[Sequence[str], asyncio.Future[list[Any]]]] = []  # and its reads: one MGET
        self.tasks: set[asyncio.Task[None]] = set()
        self.deadline: float | None = self.pool.connection_kwargs.get("socket_timeout")
        # Connections kept between round trips: only a blocking pool's (the others' callers wait for room), at
        # most half of them.
        blocking = isinstance(self.pool, aioredis.BlockingConnectionPool)
        self.keep = min(KEEP, self.pool.max_connections // 2) if blocking else 0
        self.idle: list[Connection] = []

    async def __call__(self, commands: Sequence[Command]) -> list[Any]:
        """The replies to `commands`, sent with the other callers' commands of this loop turn."""
        fut = self._queue()
        self.queued.append((list(commands), fut))
        replies = await fut
        refused = next((r for r in replies if isinstance(r, ResponseError)), None)
        if refused is not None:
            raise refused
        return replies

    async def read(self, keys: Sequence[str]) -> list[Any]:
        """The values of `keys` (None where absent), read with every other caller's keys of this loop turn in
        one MGET, sent after the turn's commands: Redis's work per read is mostly the command, not its keys."""
        fut = self._queue()
        self.reads.append((keys, fut))
        return await fut

    def _queue(self) -> asyncio.Future[list[Any]]:
        loop = asyncio.get_running_loop()
        if not self.queued and not self.reads:
            loop.call_soon(self._flush)
        return loop.create_future()

    def _flush(self) -> None:
        """The end of the loop turn: its commands and reads go in one round trip, made by a task of its own
        (a caller that stops waiting does not stop it)."""
        queued, self.queued = self.queued, []
        reads, self.reads = self.reads, []
        task = asyncio.get_running_loop().create_task(self._run(queued, reads))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(
        self,
        queued: list[tuple[list[Command], asyncio.Future[list[Any]]]],
        reads: list[tuple[Sequence[str], asyncio.Future[list[Any]]]],
    ) -> None:
        commands = [c for cs, _ in queued for c in cs]
        keys = [k for ks, _ in reads for k in ks]
        if keys:
            commands.append(("MGET", *keys))
        replies = await answered([fut for _, fut in (*queued, *reads)], self._round_trip(commands))
        if replies is None:
            return
        hand_out(queued, replies)
        if reads:
            values = replies[-1]
            if isinstance(values, ResponseError):
                fail([fut for _, fut in reads], values)
            else:
                hand_out(reads, values)

    async def alone(self, command: Command) -> Any:
        """One command's reply (an error reply raised), sent at once in a round trip of its own, on a kept
        connection or one of the pool's, within the deadline: not with the loop turn's other commands, so a
        caller that stops waiting ends its own round trip only (the connection is closed and goes back)."""
        if self.using is None:
            [reply] = await self._send([command], timed=True)
        else:
            async with self.using():
                [reply] = await self._send([command], timed=True)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def _round_trip(self, commands: list[Command]) -> list[Any]:
        """The turn's round trip, waiting for room or a connection included, within the deadline: its readers
        wait for nothing else (the cache's reads have no timeout of their own, redis.py)."""
        async with asyncio.timeout(self.deadline):
            if self.using is None:
                return await self._send(commands, timed=False)
            async with self.using():
                return await self._send(commands, timed=False)

    async def _send(self, commands: list[Command], *, timed: bool) -> list[Any]:
        """One round trip on a kept connection or one of the pool's, its exchange within the deadline (`timed`;
        else the caller's deadline covers it); a connection left mid-reply is closed and goes back to the pool."""
        conn = await self._take()
        try:
            if timed:
                async with asyncio.timeout(self.deadline):
                    replies = await _exchange(conn, commands)
            else:
                replies = await _exchange(conn, commands)
        except BaseException:
            try:
                await conn.disconnect()
            finally:  # a second cancel during the disconnect still gives the connection back
                await self._give_back(conn)
            raise
        if len(self.idle) < self.keep:
            self.idle.append(conn)
        else:
            await self._give_back(conn)
        return replies

    async def _take(self) -> Connection:
        """A kept connection (reconnected if Redis closed it meanwhile), else one of the pool's; either
        without its own socket timeout while the turn has it."""
        if self.idle:
            kept = self.idle.pop()
            try:
                if kept.is_connected and await self._dirty(kept):
                    await kept.disconnect()  # the send connects it again
            except BaseException:  # a caller that gives up here: the connection is neither kept nor lost
                await self._give_back(kept)
                raise
            return kept
        conn: Connection = await self.pool.get_connection()  # type: ignore[no-untyped-call]
        conn.socket_timeout = None
        return conn

    @staticmethod
    async def _dirty(conn: Connection) -> bool:
        try:
            return await conn.can_read()
        except (RedisConnectionError, OSError):
            return True

    async def _give_back(self, conn: Connection) -> None:
        conn.socket_timeout = self.deadline
        await self.pool.release(conn)


async def _exchange(conn: Connection, commands: list[Command]) -> list[Any]:
    """`commands` written on `conn` at once, then their replies read (an error reply in its command's place)."""
    packed = [hiredis.pack_command(tuple(c)) for c in commands]  # type: ignore[arg-type]  # stub: 1-tuple
    await conn.send_packed_command(packed, check_health=False)
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:  # this command's error reply: the next replies follow it
            replies.append(exc)
    return replies
