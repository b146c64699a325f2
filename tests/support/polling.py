"""Waiting for something to become true, with a deadline: the tests' only way to wait for another process.

A bare sleep is either too short on a loaded machine (a flaky test) or too long everywhere (a slow one);
`eventually` polls until the condition holds and fails with what it saw last when the deadline passes.

    eventually(lambda: gw.metrics()["x"] == 3)                 # a condition
    calls = eventually(lambda: standin.calls() or None)        # a value, once it is there
    eventually(check_counts, within=30)                       # a function whose asserts must pass
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _timed_out(what: str, within: float, last: object) -> AssertionError:
    if isinstance(last, AssertionError):
        return AssertionError(f"{what} not true within {within} s: {last}")
    return AssertionError(f"{what} not true within {within} s (last value: {last!r})")


def eventually(check: Callable[[], T], within: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """The first truthy value `check()` returns, polling every `interval` s; an AssertionError raised by
    `check` counts as "not yet". Fails after `within` s with the last value or assertion message."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            value = check()
            if value:
                return value
            last = value
        except AssertionError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise _timed_out(what or getattr(check, "__name__", "condition"), within, last)
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[T]] | Callable[[], T], within: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """`eventually` in the running loop (which keeps serving meanwhile): `check` a coroutine function, or a
    plain one (a condition on what the loop's other tasks change)."""
    deadline = time.monotonic() + within
    last: object = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = value
        except AssertionError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise _timed_out(what or getattr(check, "__name__", "condition"), within, last)
        await asyncio.sleep(interval)
