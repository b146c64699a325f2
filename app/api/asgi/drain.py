"""Graceful shutdown, the gateway's part of it.

uvicorn, on SIGTERM, stops accepting connections, lets the requests in flight finish (up to
`--graceful-timeout`), closes idle keep-alive connections, then runs the lifespan shutdown (where the
service finishes its shared upstream calls). With `--workers N` the supervisor passes SIGTERM to every
worker, and each does the same. What uvicorn does not do is tell a load balancer first: `Drain` marks
the gateway not ready (/readyz answers 503) the moment SIGTERM arrives and, when `shutdown_drain_s` > 0,
keeps serving that long (so that the balancer sees the 503 and stops sending) before handing the signal
to uvicorn. A second SIGTERM hands it over at once. While draining, every response says
`Connection: close` (the front layer adds it, front.py), so that clients open their next connection elsewhere instead of
reusing one the server is about to close (a request written into a keep-alive connection just as the
server closes it is lost without an answer: HTTP/1.1 cannot tell the client it was never read).

With `--workers N`, uvicorn's supervisor keeps the listening socket open until every worker has exited, so
connections made after the workers stopped accepting wait in the kernel's queue and are reset when it
exits (never read: a client may retry them). A load balancer that follows /readyz sends none by then.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any, Protocol

log = logging.getLogger("embedding_gateway.drain")


class Readiness(Protocol):
    ready: bool


class Drain:
    def __init__(self, target: Readiness, delay_s: float) -> None:
        self.target = target
        self.delay_s = delay_s
        self.previous: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.handed_over = False

    def install(self) -> None:
        """Called from the lifespan startup, inside uvicorn's own signal capture: chain to its handler.
        Outside a server (no Python handler for SIGTERM in place), there is nothing to chain to."""
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return
        self.previous = previous
        self.loop = asyncio.get_running_loop()
        signal.signal(signal.SIGTERM, self._on_term)

    def uninstall(self) -> None:
        if self.previous is not None and signal.getsignal(signal.SIGTERM) == self._on_term:
            signal.signal(signal.SIGTERM, self.previous)

    def _on_term(self, sig: int, frame: FrameType | None) -> None:
        first = self.target.ready
        self.target.ready = False
        if not first or self.delay_s <= 0 or self.loop is None:
            self._hand_over(sig)
            return
        log.warning("SIGTERM: not ready; serving %.1fs more before shutting down", self.delay_s)
        loop = self.loop
        loop.call_soon_threadsafe(lambda: loop.call_later(self.delay_s, self._hand_over, sig))

    def _hand_over(self, sig: int) -> None:
        if self.handed_over:
            return
        self.handed_over = True
        log.info("shutting down: finishing requests in flight")
        self.previous(sig, None)
