"""TickBatcher: the same keyed call made by many requests in one event-loop turn goes out as one call.

Under load, uvloop hands the gateway several requests per turn of its loop; each used to make its own Redis
round trip (a cluster's cache MGET, a team's admission or finish). A round trip costs the gateway far more
than the keys in it (the client's work per command, a write and a read on a socket, waking Redis): measured
~60 us for an MGET of two keys with redis-py against ~5 us more per extra key. This batcher collects the
keys of every call made during the current turn, makes one call with all of them at the end of the turn,
and gives each caller its own slice of the answer (or the call's exception). A lone call waits for nothing
but the end of the turn.
A single server's cache reads and lease claims need no batcher of their own: the link's Turn merges them
(redis/turn.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


class TickBatcher(Generic[K, V]):
    def __init__(self, call: Callable[[list[K]], Awaitable[list[V]]]) -> None:
        self.call = call
        self.pending: list[tuple[list[K], asyncio.Future[list[V]]]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: Sequence[K]) -> list[V]:
        if not keys:
            return []
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[V]] = loop.create_future()
        if not self.pending:
            loop.call_soon(self._flush)
        self.pending.append((list(keys), fut))
        return await fut

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, batch: list[tuple[list[K], asyncio.Future[list[V]]]]) -> None:
        values = await answered([fut for _, fut in batch], self.call([k for ks, _ in batch for k in ks]))
        if values is not None:
            hand_out(batch, values)


async def answered(futures: Sequence[asyncio.Future[Any]], call: Awaitable[list[T]]) -> list[T] | None:
    """`call`'s answer for a batch of callers waiting on `futures`; None when it raised: each caller still
    waiting then gets the exception. Cancelled (shutdown): so are the callers' waits."""
    try:
        return await call
    except Exception as exc:
        fail(futures, exc)
        return None
    except BaseException:
        for fut in futures:
            fut.cancel()
        raise


def fail(futures: Sequence[asyncio.Future[Any]], exc: BaseException) -> None:
    """Each caller still waiting on `futures` gets `exc`."""
    for fut in futures:
        if not fut.done():
            fut.set_exception(exc)


def hand_out(batch: Sequence[tuple[Sequence[Any], asyncio.Future[list[T]]]], values: list[T]) -> None:
    """Each caller of `batch` its own slice of `values`, in order (one that stopped waiting is skipped)."""
    at = 0
    for ks, fut in batch:
        if not fut.done():
            fut.set_result(values[at : at + len(ks)])
        at += len(ks)
