"""Slices: a long synchronous step over a request's items, done a slice at a time with a loop turn between
slices, so that one request never holds the event loop for more than a few milliseconds.

Parsing 2,048 items costs about 33 ms of plain Python, their keys and cache lookups about 25 ms more; done in
one go, every other client waits that long. `collect` runs such a step as an iterator and pauses after each
SLICE items (about 2 ms of work). A request of SLICE items or fewer never pauses: small requests pay nothing.
The pause is one loop turn (`loop_turn`), or the gateway's turns (api/turns.py: one large request's slice per
loop turn). The order of the results, and where an error is raised (it names its item), do not change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
SLICE = 128

Pause = Callable[[], Awaitable[None]]


async def loop_turn() -> None:
    await asyncio.sleep(0)


async def collect(values: Iterable[T], pause: Pause = loop_turn, size: int = SLICE) -> list[T]:
    """list(values), with `pause` awaited before each slice of `size` after the first."""
    rest = iter(values)
    out = list(islice(rest, size))  # the first slice at C speed: all of a small request
    if len(out) < size:
        return out
    for value in rest:
        if len(out) % size == 0:
            await pause()
        out.append(value)
    return out
