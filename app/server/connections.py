"""The open connections of one worker: their read deadlines, and the cap on how many may be open.

uvicorn has no deadline for receiving a request: its keep-alive timeout covers only the silence between
requests and every byte restarts it, so a client sending a head one byte at a time, or never finishing
it, holds a descriptor for ever. Here every connection carries a deadline (loop time, 0 when none) that
the protocol sets as it reads: an absolute one for the whole head, armed when the connection opens and
when the first byte of a later request arrives; one per read while a body comes in. One timer per
worker sweeps the connections and closes those past their deadline, counting each close by reason, so
a request pays for two float stores and no timer of its own.

The cap keeps the worker's descriptors for what it needs besides clients (upstream pools, Redis, files):
at the cap, a new connection evicts the oldest connection that has no request in progress (idle between
requests, or still sending its head); when every connection has a request in progress, the new one is
refused with a 503 and closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from .descriptors import connection_cap

log = logging.getLogger("embedding_gateway")


class Conn(Protocol):
    """What the registry needs of a connection (app/server/protocol.py implements it)."""

    deadline: float

    def in_request(self) -> bool: ...

    def reading_paused(self) -> bool: ...

    def expire(self) -> None: ...


class Connections:
    def __init__(
        self,
        *,
        head_timeout_s: float,
        body_timeout_s: float,
        max_open: int,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_open = max_open
        self.count = count or (lambda reason: None)
        # Ordered by opening: the first entries are the oldest, the first candidates for eviction.
        self.open: dict[Conn, None] = {}
        self.tick_s = max(0.05, min(1.0, head_timeout_s / 4, body_timeout_s / 4))
        self._sweeper: asyncio.TimerHandle | None = None

    def admit(self, conn: Conn) -> bool:
        """Register a new connection; False when it must be refused (the cap is reached and no other
        connection can be evicted)."""
        if len(self.open) >= self.max_open and not self._evict():
            self.count("refused")
            return False
        self.open[conn] = None
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.tick_s, self._sweep, loop)
        return True

    def leave(self, conn: Conn) -> None:
        self.open.pop(conn, None)

    def _evict(self) -> bool:
        for conn in self.open:
            if not conn.in_request():
                self._close(conn, "evicted")
                return True
        return False

    def _close(self, conn: Conn, reason: str) -> None:
        self.open.pop(conn, None)
        conn.deadline = 0.0
        self.count(reason)
        conn.expire()

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        late = [c for c in self.open if 0.0 < c.deadline <= now and not c.reading_paused()]
        for conn in late:
            self._close(conn, "body_timeout" if conn.in_request() else "head_timeout")
        self._sweeper = loop.call_later(self.tick_s, self._sweep, loop) if self.open else None

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


def for_worker(
    max_connections: int, reserve: int, *, head_timeout_s: float, body_timeout_s: float, counter: Any
) -> Connections:
    """The worker's client connections: deadlines, and a cap (at most `max_connections`) that leaves
    `reserve` descriptors for its own connections (each served upstream's pool, the media fetcher, Redis and
    files). Closes are counted in `counter` (a labelled prometheus Counter: gateway_connections_closed_total)."""
    cap = connection_cap(max_connections, reserve)
    if cap < max_connections:
        log.info("connections: at most %d per worker (descriptor limit minus %d reserved)", cap, reserve)
    return Connections(
        head_timeout_s=head_timeout_s,
        body_timeout_s=body_timeout_s,
        max_open=cap,
        count=lambda reason: counter.labels(reason).inc(),
    )
