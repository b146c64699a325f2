"""Turns: large requests take the event loop one at a time, one loop turn each, so small ones are not stuck
behind them.

A request of 2,048 items costs tens of milliseconds of plain Python between two awaits (its items parsed,
2,048 keys hashed and looked up). When 200 of them arrive together, the event loop runs all their steps
in one of its turns, and a small request that arrived meanwhile waits for all of them: seconds. A large
request (over LARGE_ITEMS items) therefore takes a turn before each of its long steps: it waits until no
other large request holds one, and for one loop turn, in which the loop reads the sockets again and
serves what is ready. Small requests never wait here.
"""

from __future__ import annotations

import asyncio

LARGE_ITEMS = 256


def is_large(contents: object) -> bool:
    return isinstance(contents, list) and len(contents) > LARGE_ITEMS


class Turns:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def take(self) -> None:
        """Return at the start of a loop turn in which no other large request's step has run."""
        async with self._lock:
            await asyncio.sleep(0)
