"""waits.Waits: a request's wait for its keys' futures ends when all are done or at its deadline, never
cancels them (they are shared), and leaves them clean when its caller is cancelled; one timer serves every
wait in flight. And the flights' failures are marked seen (batcher.fail)."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from app.flights.batcher import Pending, fail
from app.flights.waits import Waits


def later(fut: asyncio.Future[Any], after: float, value: object = "v") -> None:
    asyncio.get_running_loop().call_later(after, fut.set_result, value)


async def test_the_wait_ends_when_every_future_is_done() -> None:
    loop = asyncio.get_running_loop()
    a, b = loop.create_future(), loop.create_future()
    later(a, 0.01)
    later(b, 0.05)
    t0 = time.monotonic()
    await Waits().all_done([a, b], time.monotonic() + 5)
    assert a.done() and b.done()
    assert time.monotonic() - t0 < 1


async def test_done_futures_or_a_past_deadline_do_not_wait() -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    done.set_result(1)
    waits = Waits()
    await waits.all_done([done], time.monotonic() + 5)
    pending = loop.create_future()
    await waits.all_done([pending], time.monotonic() - 1)
    assert not pending.done() and waits.timer is None and not waits.waiting


async def test_the_wait_ends_at_its_deadline_and_leaves_the_futures_pending() -> None:
    loop = asyncio.get_running_loop()
    a, b = loop.create_future(), loop.create_future()
    later(a, 0.01)
    t0 = time.monotonic()
    await Waits().all_done([a, b], time.monotonic() + 0.1)
    assert 0.09 <= time.monotonic() - t0 < 1
    assert a.done() and not b.done() and not b.cancelled()
    b.set_result("still answered for the others")  # no callback of the ended wait is left on it
    assert not b._callbacks  # type: ignore[attr-defined]


async def test_a_later_wait_with_an_earlier_deadline_ends_at_its_own() -> None:
    loop = asyncio.get_running_loop()
    waits = Waits()
    slow, fast = loop.create_future(), loop.create_future()
    first = asyncio.create_task(waits.all_done([slow], time.monotonic() + 0.6))
    await asyncio.sleep(0)
    t0 = time.monotonic()
    await waits.all_done([fast], time.monotonic() + 0.05)
    assert time.monotonic() - t0 < 0.3
    assert not first.done()  # its own deadline still ahead: the timer moved on to it
    await first
    assert time.monotonic() - t0 >= 0.5
    assert not waits.waiting


async def test_many_waits_end_each_at_its_deadline() -> None:
    loop = asyncio.get_running_loop()
    waits = Waits()
    futures = [loop.create_future() for _ in range(5)]
    ends: dict[int, float] = {}
    t0 = time.monotonic()

    async def wait(i: int) -> None:
        await waits.all_done([futures[i]], t0 + 0.05 * (i + 1))
        ends[i] = time.monotonic() - t0

    await asyncio.gather(*(wait(i) for i in (4, 2, 0, 3, 1)))
    for i in range(5):
        assert 0.05 * (i + 1) - 0.005 <= ends[i] < 0.05 * (i + 1) + 0.2
    assert not any(f.done() for f in futures)


async def test_a_cancelled_caller_leaves_the_futures_as_they_are() -> None:
    loop = asyncio.get_running_loop()
    waits = Waits()
    shared = loop.create_future()
    gone = asyncio.create_task(waits.all_done([shared], time.monotonic() + 5))
    staying = asyncio.create_task(waits.all_done([shared], time.monotonic() + 5))
    await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert gone.cancelled() and not shared.done()
    shared.set_result("answer")
    await asyncio.wait_for(staying, 1)  # the other request's wait still ends with the answer
    assert not waits.waiting


async def test_a_failure_is_delivered_and_marked_seen() -> None:
    loop = asyncio.get_running_loop()
    logged: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: logged.append(context))
    try:
        done = loop.create_future()
        done.set_result((b"v", 1))
        keys = (("a", loop.create_future()), ("b", done), ("c", loop.create_future()))
        pendings = [Pending(k, None, f, 0.0, True) for k, f in keys]  # type: ignore[arg-type]
        failed = fail(pendings, RuntimeError("upstream down"))
        assert [p.key for p in failed] == ["a", "c"]
        assert isinstance(pendings[0].future.exception(), RuntimeError)  # c's is never read, as a request's
        # that gave up at its deadline
        del pendings, failed, done, keys
        gc.collect()  # a future whose exception nobody read logs it when collected: this one was marked seen
        assert not [c for c in logged if "never retrieved" in str(c.get("message"))]
    finally:
        loop.set_exception_handler(None)
