"""A large request's long steps (items parsed, keys made) run in slices with a loop turn between them, so
other tasks run meanwhile; a small request never pauses; results and errors are those of the one-go path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

import pytest

from app.cache.keys import KeyMaker
from app.cache.lru import MemoryCache
from app.errors import InvalidRequest
from app.inputs.items import Item, each_dashscope_text, each_openai_item, openai_items
from app.inputs.media.inlining import parse_fetching
from app.inputs.params import Params
from app.runtime.slices import SLICE, collect
from tests.unit.test_service import DIM, SPEC, FakeUpstream, service

N = 2048
TEXTS = [f"document {i}: a sentence or two of text" for i in range(N)]


async def ticks_during(step: Callable[[], Awaitable[object]]) -> tuple[int, object]:
    """How many times a concurrent task got the event loop while `step` ran, and what the step returned."""
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is waiting for its next turn
    start = ticks
    try:
        result = await step()
        during = ticks - start
    finally:
        done = True
        await task
    return during, result


def parse(raw: object) -> Callable[[], Awaitable[list[Item]]]:
    return partial(parse_fetching, None, SPEC, raw, "input", partial(each_openai_item, spec=SPEC, limit=N))


async def test_a_large_parse_gives_the_loop_a_turn_every_slice_and_parses_the_same_items() -> None:
    ticks, items = await ticks_during(parse(TEXTS))
    assert ticks >= N // SLICE - 1  # one turn between every two slices: other clients are served meanwhile
    assert items == openai_items(TEXTS, SPEC, N)


async def test_a_small_request_never_pauses() -> None:
    ticks, items = await ticks_during(parse(TEXTS[:SLICE]))
    assert ticks == 0
    assert items == openai_items(TEXTS[:SLICE], SPEC, N)


@pytest.mark.parametrize("bad", [5, SLICE, SLICE + 1, N - 1])
async def test_an_error_names_its_item_as_the_one_go_path_does(bad: int) -> None:
    raw: list[object] = list(TEXTS)
    raw[bad] = 7
    with pytest.raises(InvalidRequest) as one_go:
        openai_items(raw, SPEC, N)
    with pytest.raises(InvalidRequest) as sliced:
        await parse(raw)()
    assert one_go.value.param == sliced.value.param == f"input[{bad}]"
    with pytest.raises(InvalidRequest) as texts:
        await collect(each_dashscope_text(raw, SPEC, N))
    assert texts.value.param == f"input.texts[{bad}]"


async def test_collect_keeps_order_and_pauses_between_slices_only() -> None:
    pauses = 0

    async def pause() -> None:
        nonlocal pauses
        pauses += 1

    assert await collect(range(1000), pause, size=100) == list(range(1000))
    assert pauses == 9
    pauses = 0
    assert await collect(range(100), pause, size=100) == list(range(100))
    assert pauses == 0


async def test_the_service_makes_a_large_requests_keys_in_slices_with_the_same_keys_and_vectors() -> None:
    from app.service import EmbedRequest

    # room for its vectors, keys and their overhead
    svc = service(FakeUpstream(delay=0), cache=MemoryCache(4 * N * (4 * DIM + 256)))
    items = openai_items(TEXTS, SPEC, N)
    first = await svc.embed(None, EmbedRequest(SPEC, Params(DIM, False), items))
    pauses = 0

    async def pause() -> None:
        nonlocal pauses
        pauses += 1
        await asyncio.sleep(0)

    svc.pause = pause
    again = await svc.embed(None, EmbedRequest(SPEC, Params(DIM, False), items))
    assert pauses == N // SLICE - 1
    assert again.hits == N and again.vectors == first.vectors
    looked = await svc._lookup(EmbedRequest(SPEC, Params(DIM, False), items), None)
    maker = KeyMaker(svc.namespace, svc.route(SPEC), SPEC.upstream_model, Params(DIM, False))
    assert looked.keys == maker.keys(items)
