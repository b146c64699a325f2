"""tests/support/polling.py: eventually() returns the first truthy value, takes a failed assert as "not yet"
and fails at its deadline naming what it saw last."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.polling import eventually, eventually_async


def test_returns_the_first_truthy_value() -> None:
    values = iter([0, None, [], 7, 8])
    assert eventually(lambda: next(values), interval=0) == 7


def test_a_failed_assert_is_not_yet() -> None:
    calls = []

    def check() -> bool:
        calls.append(1)
        assert len(calls) >= 3, "three calls"
        return True

    assert eventually(check, interval=0) is True and len(calls) == 3


def test_fails_at_the_deadline_with_the_last_value_or_assertion() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"counter not true within 0.2 s \(last value: 0\)"):
        eventually(lambda: 0, within=0.2, what="counter")
    assert 0.2 <= time.monotonic() - started < 2

    def still_three() -> bool:
        raise AssertionError("still 3")

    with pytest.raises(AssertionError, match=r"still_three not true within 0\.1 s: still 3"):
        eventually(still_three, within=0.1)


async def test_the_async_form_polls_a_coroutine() -> None:
    seen = []

    async def check() -> int:
        seen.append(1)
        return len(seen) if len(seen) > 2 else 0

    assert await eventually_async(check, interval=0) == 3
    state: list[int] = []
    filler = asyncio.get_running_loop().call_later(0.05, state.append, 1)  # another part of the loop
    assert await eventually_async(lambda: state, interval=0.01) == [1]  # a plain condition
    filler.cancel()
    with pytest.raises(AssertionError, match=r"not true within 0\.1 s"):
        await eventually_async(never, within=0.1)


async def never() -> bool:
    return False
