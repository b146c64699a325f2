"""Micro-batching: misses from concurrent requests for the same model and vector-changing parameters are
combined into one upstream call of up to the model's batch limit, and of at most FLOAT_CALL_VALUES vector
values (BASE64_CALL_VALUES for upstreams answering base64: an answer is parsed on the event loop in one go).

When no call of the group is in flight, queued items go at the end of the current event-loop turn (a lone
request waits for nobody); otherwise the first item to arrive opens a window of `window_s`, and the group
is sent when the window ends or as soon as it holds a full batch.

Each item carries its own future, resolved with its vector and its share of the call's billed tokens:
the upstream bills a call, not an item, so a call's tokens are apportioned to its items by their share
of the estimated tokens (`Item.est_tokens`), in whole tokens (largest remainder). A request's `usage` is
the sum of its items' shares, so the usage of the requests that shared a call adds up exactly to what
the upstream billed for it.

Every call runs in its own task: a client that goes away cancels its own wait, never a call that other
requests share. When the upstream refuses a shared call as invalid (4xx: one request's text too long for
it, say), each request's items are sent again on their own, so that only that request gets the error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import orjson

from ..config.catalog import ModelSpec
from ..config.upstream import UpstreamConfig
from ..errors import UpstreamRejected
from ..inputs.items import Item
from ..inputs.params import Params
from ..runtime.budget import SMALL_BODY_BYTES, MemoryBudget
from ..upstreams.adapter import Batch, Result
from ..upstreams.caller import UpstreamCaller

log = logging.getLogger("embedding_gateway.batcher")

# (vector bytes, share of the billed tokens)
Answer = tuple[bytes, int]


@dataclass(slots=True)
class Pending:
    key: str
    item: Item
    future: asyncio.Future[Answer]
    deadline: float
    write: bool
    owner: int = 0  # the request that asked for it (an upstream 4xx is only that request's error)


class Landing(Protocol):
    """Where a call's pendings go once their futures hold its answers (`ok`) or its error: the in-flight
    table (inflight.py), which writes the new vectors to the cache, releases the leases and drops them."""

    async def land(self, pendings: list[Pending], ok: bool) -> None: ...


@dataclass(slots=True)
class _Group:
    spec: ModelSpec
    params: Params
    size: int
    items: list[Pending]
    timer: asyncio.Handle | None = None


def fail(pendings: list[Pending], exc: BaseException) -> list[Pending]:
    """`exc` for each of `pendings` still waiting (returned), marked as seen: a request that gave up at its
    deadline never reads it, and asyncio would log it as never retrieved."""
    failed = [p for p in pendings if not p.future.done()]
    for p in failed:
        p.future.set_exception(exc)
        p.future.exception()
    return failed


def apportion(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights`, in whole numbers that add up to `total` exactly
    (largest remainders get the leftover units)."""
    weight = sum(weights)
    if weight <= 0:
        weights, weight = [1] * len(weights), len(weights)
    exact = [total * w / weight for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


GroupKey = tuple[str, str, int, bool, bytes, bool]


def group_key(spec: ModelSpec, params: Params) -> GroupKey:
    """Background (batch job) misses are batched among themselves: their calls wait for idle quota."""
    options = orjson.dumps(params.options, option=orjson.OPT_SORT_KEYS)
    return spec.name, params.identity, params.dimension, params.send_dimension, options, params.background


# The most vector values one upstream call asks for. Its answer is parsed on the event loop in one go
# (orjson holds the GIL: a thread would not free the loop), ~105 ns a value as JSON floats with the rows made
# after, ~20 ns as base64: one call of 2,048 vectors of 1,536 floats held every request of the process for
# ~330 ms. At these many values, ~27 ms either way; it only cuts the calls of OpenAI-compatible models (2,048
# items a call) of more than 128 dimensions (512 as base64).
FLOAT_CALL_VALUES = 256 * 1024
BASE64_CALL_VALUES = 1024 * 1024
# While a call's answer is received it is held whole (then parsed at once): a call takes room in the memory
# budget for it before it is sent, in proportion to its values, a full call this much: 24 bytes a value as
# JSON floats (FLOAT_CALL_VALUES), 6 as base64. Under SMALL_BODY_BYTES, the upstream's connection cap bounds
# them (the miss path's small calls take nothing).
CALL_ANSWER_BYTES = 6 * 1024 * 1024


def call_values_of(configs: Mapping[str, UpstreamConfig]) -> dict[str, int]:
    """The most vector values per call, by upstream: more for those that answer base64."""
    return {name: BASE64_CALL_VALUES if c.encoding_format == "base64" else FLOAT_CALL_VALUES
            for name, c in configs.items()}  # fmt: skip


class Batcher:
    """`submit()` queues items; `caller` makes one upstream call per chunk; `landing.land(pendings, ok)`
    runs after the chunk's answers (or its error) were delivered to the waiting requests."""

    def __init__(
        self,
        caller: UpstreamCaller,
        landing: Landing,
        *,
        window_s: float,
        call_values: Mapping[str, int] | None = None,
        memory: MemoryBudget | None = None,
    ) -> None:
        """`call_values`: the most vector values one call asks for, by upstream (FLOAT_CALL_VALUES if absent);
        `memory`: the calls' own budget (wiring/parts.py), which a call's answer takes room from while it is
        received (None: not counted)."""
        self.caller = caller
        self.landing = landing
        self.window_s = window_s
        self.call_values = call_values or {}
        self.memory = memory
        self.groups: dict[GroupKey, _Group] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.busy: dict[GroupKey, int] = {}  # calls in flight per group

    def submit(self, spec: ModelSpec, params: Params, pendings: list[Pending]) -> None:
        gk = group_key(spec, params)
        group = self.groups.get(gk)
        if group is None:
            size = 1 if params.fusion else max(1, min(spec.max_batch, self._values(spec) // max(1, params.dimension)))
            group = self.groups[gk] = _Group(spec, params, size, [])
        group.items.extend(pendings)
        while len(group.items) >= group.size:
            chunk, group.items = group.items[: group.size], group.items[group.size :]
            self._start(group, chunk)
        if not group.items:
            self._cancel_timer(gk, group)
        elif group.timer is None:
            loop = asyncio.get_running_loop()
            if self.window_s > 0 and self.busy.get(gk, 0) > 0:
                group.timer = loop.call_later(self.window_s, self._flush, gk)
            else:  # nothing of this group in flight: no one to wait for but this loop turn's requests
                group.timer = loop.call_soon(self._flush, gk)

    def _cancel_timer(self, gk: GroupKey, group: _Group) -> None:
        if group.timer is not None:
            group.timer.cancel()
        del self.groups[gk]

    def _flush(self, gk: GroupKey) -> None:
        group = self.groups.pop(gk, None)
        if group is not None and group.items:
            self._start(group, group.items)

    def _start(self, group: _Group, chunk: list[Pending]) -> None:
        gk = group_key(group.spec, group.params)
        self.busy[gk] = self.busy.get(gk, 0) + 1
        task = asyncio.get_running_loop().create_task(self._call(group.spec, group.params, chunk))
        self.tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            left = self.busy.pop(gk, 1) - 1
            if left > 0:
                self.busy[gk] = left

        task.add_done_callback(finished)

    def _values(self, spec: ModelSpec) -> int:
        """The most vector values one call of `spec`'s upstream asks for."""
        return self.call_values.get(spec.upstream, FLOAT_CALL_VALUES)

    async def _send(self, spec: ModelSpec, params: Params, chunk: list[Pending]) -> Result:
        """One upstream call, with room in the memory budget for its answer (CALL_ANSWER_BYTES): a burst of
        wide misses waits for room, then its requests get 503, rather than growing the process."""
        batch = Batch(spec, params, [p.item for p in chunk], chunk[0].owner)
        deadline = max(p.deadline for p in chunk)
        size = CALL_ANSWER_BYTES * len(chunk) * params.dimension // self._values(spec)
        if self.memory is None or size <= SMALL_BODY_BYTES:
            return await self.caller.call(batch, deadline)
        async with self.memory.lease() as lease:
            await lease.take(min(size, self.memory.max_bytes), "input")  # a call larger than the room: it alone
            return await self.caller.call(batch, deadline)

    async def _call(self, spec: ModelSpec, params: Params, chunk: list[Pending]) -> None:
        try:
            result = await self._send(spec, params, chunk)
        except UpstreamRejected as exc:
            owners: dict[int, list[Pending]] = {}
            for p in chunk:
                owners.setdefault(p.owner, []).append(p)
            if len(owners) > 1:  # one request's item was refused: each request's items again on their own
                await asyncio.gather(*(self._call(spec, params, mine) for mine in owners.values()))
            else:
                await self._fail(chunk, exc)
            return
        except Exception as exc:  # delivered to every waiting request, each raises it on its own
            await self._fail(chunk, exc)
            return
        except BaseException:
            await self._fail(chunk, asyncio.CancelledError())
            raise
        if result.identity != params.identity:  # another deployment's vectors (a failover): served, not cached
            for p in chunk:
                p.write = False
        rows = result.vectors.astype("<f4", copy=False)
        shares = apportion(result.billed_tokens, [p.item.est_tokens for p in chunk])
        for i, p in enumerate(chunk):
            if not p.future.done():
                p.future.set_result((rows[i].tobytes(), shares[i]))
        await self.landing.land(chunk, True)

    async def _fail(self, chunk: list[Pending], exc: BaseException) -> None:
        fail(chunk, exc)
        await self.landing.land(chunk, False)

    async def close(self) -> None:
        """Send what is queued and wait for every call in flight (graceful shutdown)."""
        for gk in list(self.groups):
            group = self.groups[gk]
            if group.timer is not None:
                group.timer.cancel()
            self._flush(gk)
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
