"""The open connections of one worker: their deadlines, the rate rule, and the cap on how many may be open.

uvicorn has no deadline for receiving a request, nor for sending an answer: its keep-alive timeout covers
only the silence between requests, and an answer waits for a reader that never reads for ever. Here every
connection carries (in loop time, 0 when none):

- `deadline`, set by the protocol as it reads: an absolute one for the whole head, armed when the
  connection opens and when the first byte of a later request arrives; one per read while a body comes in;
- `write_deadline`, armed when the transport's buffer passes its high-water mark (or when a connection
  is closed with bytes still unsent): the reader must take them by then;
- the start of its body and the bytes of it received: past `body_grace_s`, a body must have come at
  `min_body_rate` bytes a second on average (a byte every 8 s stays under any per-read deadline).

One timer per worker sweeps the connections and closes those past a deadline or below the rate,
counting each close by reason, so a request pays for a few float stores and no timer of its own.

The cap keeps the worker's descriptors for what it needs besides clients (upstream pools, Redis, files).
Past seven eighths of it, the registry is `crowded`: the protocol then ends each answer with
`Connection: close`, so clients reconnect and the cap is rarely reached by kept-alive connections. At the
cap a new connection evicts, in this order: a connection whose request is too slow (a head still coming
after `head_grace_s`, a body below the rate), then the one idle longest between requests. A connection
whose request bytes are arriving at a healthy rate, or which is being answered, is never evicted: when
no connection can go, the new one is refused with a 503 and `Retry-After`. An optional cap per client
address (off by default: internal clients often share one address behind a NAT) refuses the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .descriptors import connection_cap

log = logging.getLogger("embedding_gateway")
CROWDED = 7 / 8  # of the cap: past it, answers say Connection: close


class Conn(Protocol):
    """What the registry needs of a connection (app/server/protocol.py implements it)."""

    deadline: float
    write_deadline: float
    body_started: float  # loop time the current body began; 0 when no body is being read
    body_bytes: int
    head_started: float  # loop time the current head began (its first byte, or the connection); 0 when none
    idle_since: float  # loop time the last answer ended; 0 while a request is in progress
    address: str | None

    def reading_paused(self) -> bool: ...

    def expire(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Rules:
    head_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    write_timeout_s: float = 20.0
    min_body_rate: float = 240.0  # bytes/s on average, once past body_grace_s
    body_grace_s: float = 5.0
    # A head still incomplete this long after the connection opened (or its first byte came) is a candidate for
    # eviction at the cap: clients write a head at once, and it arrives in one flight of packets.
    head_grace_s: float = 0.1
    max_open: int = 4096
    max_per_address: int = 0  # 0: no cap per client address
    max_head_bytes: int = 72 * 1024  # a head still incomplete past this gets 431 (max_header_bytes + the line)
    # The whole 431 answer for such a head, from the request line's target (the caller's wire format: the
    # wiring passes app.api.rendering.head_too_large); None: a fixed OpenAI-shaped answer.
    head_refusal: Callable[[bytes], bytes] | None = None


class Connections:
    def __init__(self, rules: Rules, count: Callable[[str], None] | None = None) -> None:
        self.rules = rules
        self.max_open = rules.max_open
        self.crowded_at = max(1, int(rules.max_open * CROWDED))
        self.count = count or (lambda reason: None)
        self.open: dict[Conn, None] = {}  # ordered by opening
        self.per_address: dict[str, int] = {}
        shortest = min(rules.head_timeout_s, rules.body_timeout_s, rules.write_timeout_s, rules.body_grace_s)
        self.tick_s = max(0.05, min(1.0, shortest / 4))
        self._sweeper: asyncio.TimerHandle | None = None

    def admit(self, conn: Conn) -> bool:
        """Register a new connection; False when it must be refused (the cap is reached and no other
        connection can be evicted, or its address holds its share)."""
        cap = self.rules.max_per_address
        if cap and conn.address is not None and self.per_address.get(conn.address, 0) >= cap:
            self.count("refused")
            return False
        if len(self.open) >= self.max_open and not self._evict(asyncio.get_running_loop().time()):
            self.count("refused")
            return False
        self.open[conn] = None
        if cap and conn.address is not None:
            self.per_address[conn.address] = self.per_address.get(conn.address, 0) + 1
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self.tick_s, self._sweep, loop)
        return True

    def crowded(self) -> bool:
        return len(self.open) >= self.crowded_at

    def leave(self, conn: Conn) -> None:
        if conn not in self.open:
            return
        del self.open[conn]
        if self.rules.max_per_address and conn.address is not None:
            left = self.per_address.get(conn.address, 1) - 1
            if left > 0:
                self.per_address[conn.address] = left
            else:
                self.per_address.pop(conn.address, None)

    def slow(self, conn: Conn, now: float) -> bool:
        """Whether the request arriving on `conn` is below the rate rule (a body past its grace and below
        the minimum average rate) or is a head still coming after head_grace_s."""
        if conn.body_started:
            elapsed = now - conn.body_started
            return elapsed > self.rules.body_grace_s and conn.body_bytes < self.rules.min_body_rate * elapsed
        return bool(conn.head_started) and now - conn.head_started > self.rules.head_grace_s

    def _evict(self, now: float) -> bool:
        idle: Conn | None = None
        for conn in self.open:
            if conn.write_deadline:
                continue  # being answered, or handing over its last bytes
            if self.slow(conn, now):
                self._close(conn, "evicted_slow")
                return True
            if conn.idle_since and not conn.head_started and (idle is None or conn.idle_since < idle.idle_since):
                idle = conn
        if idle is None:
            return False
        self._close(idle, "evicted")
        return True

    def _close(self, conn: Conn, reason: str) -> None:
        self.leave(conn)
        conn.deadline = conn.write_deadline = 0.0
        self.count(reason)
        conn.expire()

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn, reason in [(c, r) for c in self.open if (r := self._verdict(c, now))]:
            self._close(conn, reason)
        self._sweeper = loop.call_later(self.tick_s, self._sweep, loop) if self.open else None

    def _verdict(self, conn: Conn, now: float) -> str | None:
        if 0.0 < conn.write_deadline <= now:
            return "write_timeout"
        if conn.reading_paused():
            return None  # the app is not reading yet: the client is not the slow one
        if 0.0 < conn.deadline <= now:
            return "body_timeout" if conn.body_started else "head_timeout"
        if conn.body_started and self.slow(conn, now):
            return "slow_body"
        return None

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None


def for_worker(max_connections: int, reserve: int, rules: Rules, counter: Any) -> Connections:
    """The worker's client connections under `rules`, with a cap (at most `max_connections`) that leaves
    `reserve` descriptors for its own connections (each served upstream's pool, the media fetcher, Redis and
    files). Closes are counted in `counter` (a labelled prometheus Counter: gateway_connections_closed_total)."""
    cap = connection_cap(max_connections, reserve)
    log.info("connections: at most %d per worker (descriptor limit minus %d reserved)", cap, reserve)
    return Connections(replace(rules, max_open=cap), count=lambda reason: counter.labels(reason).inc())
