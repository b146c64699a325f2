"""The server edge's rules on one worker's connections (app/server/connections.py), with connections that
are plain records: the rate rule, the write deadline, what is evicted at the cap and in which order, the
cap per address, and when answers start saying Connection: close."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from app.server.connections import Connections, Rules


@dataclass(eq=False)
class FakeConn:
    deadline: float = 0.0
    write_deadline: float = 0.0
    body_started: float = 0.0
    body_bytes: int = 0
    head_started: float = 0.0
    idle_since: float = 0.0
    address: str | None = "10.0.0.1"
    paused: bool = False
    expired: bool = False

    def reading_paused(self) -> bool:
        return self.paused

    def expire(self) -> None:
        self.expired = True


def registry(**rules: float) -> tuple[Connections, list[str]]:
    closes: list[str] = []
    return Connections(Rules(**rules), count=closes.append), closes  # type: ignore[arg-type]


def now() -> float:
    return asyncio.get_running_loop().time()


async def test_a_body_below_the_minimum_rate_is_closed_once_past_the_grace() -> None:
    conns, _ = registry(min_body_rate=240, body_grace_s=5)
    t = now()
    dripping = FakeConn(body_started=t - 6, body_bytes=3)  # a byte every two seconds
    steady = FakeConn(body_started=t - 6, body_bytes=6 * 300)
    young = FakeConn(body_started=t - 4, body_bytes=1)  # still in its grace
    assert conns._verdict(dripping, t) == "slow_body"
    assert conns._verdict(steady, t) is None
    assert conns._verdict(young, t) is None
    dripping.paused = True  # the app is not reading: the client is not the slow one
    assert conns._verdict(dripping, t) is None


async def test_an_answer_not_taken_by_the_write_deadline_is_aborted() -> None:
    conns, closes = registry(write_timeout_s=3)
    stalled = FakeConn(write_deadline=now() - 0.01, paused=True)
    assert conns._verdict(stalled, now()) == "write_timeout"
    assert conns.admit(stalled)
    conns._sweep(asyncio.get_running_loop())
    assert stalled.expired and closes == ["write_timeout"] and stalled not in conns.open


async def test_at_the_cap_a_slow_request_goes_first_then_the_longest_idle() -> None:
    conns, closes = registry(max_open=4)
    t = now()
    idle_long = FakeConn(idle_since=t - 30)
    idle_short = FakeConn(idle_since=t - 1)
    healthy_body = FakeConn(body_started=t - 0.5, body_bytes=10_000)
    slow_head = FakeConn(head_started=t - 2)  # a partial head, two seconds old
    for c in (idle_long, idle_short, healthy_body, slow_head):
        assert conns.admit(c)
    assert conns.admit(FakeConn(head_started=t))
    assert slow_head.expired and closes == ["evicted_slow"]
    assert conns.admit(FakeConn(head_started=t))
    assert idle_long.expired and not idle_short.expired and closes[-1] == "evicted"
    assert not healthy_body.expired


async def test_at_the_cap_with_nothing_evictable_the_new_connection_is_refused() -> None:
    conns, closes = registry(max_open=3)
    t = now()
    answering = FakeConn(write_deadline=t + 10)  # an answer waiting for its reader's drain
    arriving = FakeConn(body_started=t - 0.2, body_bytes=5_000)
    fresh_head = FakeConn(head_started=t)  # opened now: its head is on its way
    for c in (answering, arriving, fresh_head):
        assert conns.admit(c)
    assert not conns.admit(FakeConn())
    assert closes == ["refused"] and not any(c.expired for c in (answering, arriving, fresh_head))


async def test_the_cap_per_address_is_off_by_default_and_counts_when_on() -> None:
    conns, _ = registry()
    assert all(conns.admit(FakeConn()) for _ in range(50))
    conns, closes = registry(max_per_address=2)
    a, b = FakeConn(), FakeConn()
    assert conns.admit(a) and conns.admit(b)
    assert not conns.admit(FakeConn()) and closes == ["refused"]
    assert conns.admit(FakeConn(address="10.0.0.2"))
    conns.leave(a)
    assert conns.admit(FakeConn())


async def test_answers_say_connection_close_past_seven_eighths_of_the_cap() -> None:
    conns, _ = registry(max_open=16)
    for _ in range(13):
        conns.admit(FakeConn())
    assert not conns.crowded()
    conns.admit(FakeConn())
    assert conns.crowded()
