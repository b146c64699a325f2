"""Bypass.call, the one guarded Redis call: a Redis error or a command's own Failing stands Redis aside
(naming the cause) for `retry_after`, a late Failing only answers the fallback, a success closes it."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError

from app.redis.bypass import Bypass, Failing
from tests.support.faketime import FakeTime


class Late(Failing):
    late = True


async def test_failures_stand_redis_aside_until_a_success() -> None:
    t = FakeTime()
    bypass = Bypass("redis limits", 1.0, None, clock=t.clock)
    counted: list[str] = []
    calls: list[str] = []

    async def failing() -> str:
        calls.append("failing")
        raise Failing("no reply in 0.2 s")

    async def answering() -> str:
        calls.append("answering")
        return "answer"

    assert await bypass.call(failing, "fallback", timeout_s=None, failed=lambda: counted.append("x")) == "fallback"
    assert bypass.is_open and bypass.last_cause == "no reply in 0.2 s" and counted == ["x"]
    assert await bypass.call(answering, "fallback", timeout_s=None) == "fallback"  # stood aside: not asked
    assert calls == ["failing"]
    t.now += 1.0
    assert await bypass.call(answering, "fallback", timeout_s=None) == "answer"
    assert not bypass.is_open and bypass.last_cause is None

    async def refused() -> str:
        raise RedisConnectionError("Connection refused")

    assert await bypass.call(refused, "fallback", timeout_s=1.0) == "fallback"
    assert bypass.is_open and bypass.last_cause is not None


async def test_a_late_answer_takes_the_fallback_and_keeps_redis_in_use() -> None:
    bypass = Bypass("redis limits", 1.0, None, clock=FakeTime().clock)
    counted: list[str] = []

    async def late() -> str:
        raise Late("late")

    assert await bypass.call(late, "fallback", timeout_s=None, failed=lambda: counted.append("x")) == "fallback"
    assert not bypass.is_open and bypass.allows and counted == []
