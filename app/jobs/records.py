"""Records: the state of job files and batches in Redis, shared by every replica.

Keys (under the cache namespace): `jobs:file:<id>` (a file's record, JSON), `jobs:batch:<id>` (a batch's
fields, a hash: counters move with HINCRBY-free HSETs from the one worker running it), per team a sorted
set of its files and of its batches by creation time (listing, pagination), per team its stored bytes,
and one sorted set of every file by expiry time (the sweep). Status changes go through one script that
changes the status only from the states it names, so a cancel and the end of a run never both win.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

TRANSITION = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
for i = 1, tonumber(ARGV[1]) do
  if ARGV[1 + i] == status then
    redis.call('HSET', KEYS[1], unpack(ARGV, 2 + tonumber(ARGV[1])))
    return 1
  end
end
return 0
"""

RESERVE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return -1 end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""

# A batch's output part counted in its team's stored bytes before it is written (KEYS: the team's bytes, the
# batch; ARGV: size, cap, part). A part written again (a run resumed from its checkpoint) replaces its own
# count (the batch's held_part, held_bytes); refused, it holds nothing.
RESERVE_PART = """
local held = 0
if redis.call('HGET', KEYS[2], 'held_part') == ARGV[3] then
  held = tonumber(redis.call('HGET', KEYS[2], 'held_bytes') or '0')
end
local used = tonumber(redis.call('GET', KEYS[1]) or '0') - held
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then
  if held > 0 then
    redis.call('HSET', KEYS[2], 'held_bytes', 0)
    redis.call('DECRBY', KEYS[1], held)
  end
  return -1
end
redis.call('HSET', KEYS[2], 'held_part', ARGV[3], 'held_bytes', ARGV[1])
return redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]) - held)
"""


FINAL = ("completed", "failed", "cancelled", "expired")


def now() -> int:
    return int(time.time())


class Records:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self.redis = redis
        self.ns = f"{namespace}:jobs"
        self._transition = redis.register_script(TRANSITION)
        self._reserve = redis.register_script(RESERVE)
        self._reserve_part = redis.register_script(RESERVE_PART)

    # Files
    async def put_file(self, rec: dict[str, Any]) -> None:
        team, fid = rec["team"], rec["id"]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.ns}:file:{fid}", orjson.dumps(rec))
            order = time.time_ns() // 1000  # microseconds: files created in one second listed in their order
            pipe.zadd(f"{self.ns}:files:{team}", {fid: order})
            pipe.zadd(f"{self.ns}:expiry", {fid: rec["expires_at"]})
            await pipe.execute()

    async def file(self, fid: str) -> dict[str, Any] | None:
        raw = await self.redis.get(f"{self.ns}:file:{fid}")
        return None if raw is None else dict(orjson.loads(raw))

    async def drop_file(self, rec: dict[str, Any]) -> bool:
        """The record gone and its bytes returned to the team; False when another replica got there first."""
        team, fid = rec["team"], rec["id"]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(f"{self.ns}:file:{fid}")
            pipe.zrem(f"{self.ns}:files:{team}", fid)
            pipe.zrem(f"{self.ns}:expiry", fid)
            deleted, _, _ = await pipe.execute()
        if deleted:
            await self.redis.decrby(f"{self.ns}:bytes:{team}", int(rec["bytes"]))
        return bool(deleted)

    async def expired_files(self, limit: int = 100) -> list[str]:
        ids = await self.redis.zrangebyscore(f"{self.ns}:expiry", "-inf", now(), start=0, num=limit)
        return [_s(i) for i in ids]

    async def reserve_bytes(self, team: str, size: int, cap: int) -> bool:
        return int(await self._reserve(keys=[f"{self.ns}:bytes:{team}"], args=[size, cap])) >= 0

    async def release_bytes(self, team: str, size: int) -> None:
        if size:
            await self.redis.decrby(f"{self.ns}:bytes:{team}", size)

    async def file_count(self, team: str) -> int:
        return int(await self.redis.zcard(f"{self.ns}:files:{team}"))

    async def reserve_part(self, team: str, bid: str, part: int, size: int, cap: int) -> bool:
        keys = [f"{self.ns}:bytes:{team}", f"{self.ns}:batch:{bid}"]
        return int(await self._reserve_part(keys=keys, args=[size, cap, part])) >= 0

    async def team_bytes(self, team: str) -> int:
        return int(await self.redis.get(f"{self.ns}:bytes:{team}") or 0)

    # Batches
    async def put_batch(self, fields: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(f"{self.ns}:batch:{fields['id']}", mapping={k: _text(v) for k, v in fields.items()})
            order = time.time_ns() // 1000  # microseconds: batches created in one second keep their order
            pipe.zadd(f"{self.ns}:batches:{fields['team']}", {fields["id"]: order})
            pipe.zadd(f"{self.ns}:batches", {fields["id"]: order})
            pipe.zadd(f"{self.ns}:active:{fields['team']}", {fields["id"]: order})
            await pipe.execute()

    async def active_batches(self, team: str) -> int:
        return len(await self.active_ids(team))

    async def active_ids(self, team: str) -> list[str]:
        """The team's batches not finished yet, oldest first; those found finished (or gone) leave its set
        now, so the count heals itself whatever stopped a batch."""
        key = f"{self.ns}:active:{team}"
        ids = [_s(i) for i in await self.redis.zrange(key, 0, -1)]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for bid in ids:
                pipe.hget(f"{self.ns}:batch:{bid}", "status")
            statuses = await pipe.execute()
        done = [bid for bid, status in zip(ids, statuses, strict=True) if status is None or _s(status) in FINAL]
        if done:
            await self.redis.zrem(key, *done)
        return [bid for bid in ids if bid not in done]

    async def active_teams(self) -> list[str]:
        """Teams with batches not known to be finished (the files sweep's list: a scan, once a minute)."""
        prefix = f"{self.ns}:active:"
        return [_s(k)[len(prefix) :] async for k in self.redis.scan_iter(match=prefix + "*", count=1000)]

    async def batch(self, bid: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(f"{self.ns}:batch:{bid}")
        return {_s(k): _s(v) for k, v in raw.items()} if raw else None

    async def update(self, bid: str, **fields: Any) -> None:
        await self.redis.hset(f"{self.ns}:batch:{bid}", mapping={k: _text(v) for k, v in fields.items()})

    async def transition(self, bid: str, sources: Sequence[str], **fields: Any) -> bool:
        """Set `fields` (a new `status` among them) only while the status is one of `sources`."""
        flat = [x for k, v in fields.items() for x in (k, _text(v))]
        done = await self._transition(keys=[f"{self.ns}:batch:{bid}"], args=[len(sources), *sources, *flat])
        return int(done) == 1

    async def old_batches(self, before: float, offset: int, limit: int) -> list[str]:
        """Ids of batches created before `before` (unix seconds), oldest first, from `offset`."""
        ids = await self.redis.zrangebyscore(f"{self.ns}:batches", "-inf", int(before * 1_000_000), start=offset,
                                             num=limit)  # fmt: skip
        return [_s(i) for i in ids]

    async def drop_batch(self, bid: str, team: str | None) -> None:
        """The batch's record gone, and its id from the listings."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(f"{self.ns}:batch:{bid}")
            pipe.zrem(f"{self.ns}:batches", bid)
            if team is not None:
                pipe.zrem(f"{self.ns}:batches:{team}", bid)
                pipe.zrem(f"{self.ns}:active:{team}", bid)
            await pipe.execute()

    async def batch_ids(self, team: str | None, after: str | None, limit: int) -> list[str]:
        """Newest first; `after`: the id the previous page ended with. team None: every team's (operators)."""
        key = f"{self.ns}:batches:{team}" if team is not None else f"{self.ns}:batches"
        start = await self._start(key, after, newest_first=True)
        return [] if start is None else await self._ids(key, start, limit, newest_first=True)

    async def file_start(self, team: str, after: str | None, newest_first: bool) -> int | None:
        """Where a listing of the team's files after the id `after` starts (None: `after` is not there)."""
        return await self._start(f"{self.ns}:files:{team}", after, newest_first)

    async def file_ids(self, team: str, start: int, limit: int, newest_first: bool) -> list[str]:
        return await self._ids(f"{self.ns}:files:{team}", start, limit, newest_first)

    async def files(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        raws = await self.redis.mget([f"{self.ns}:file:{i}" for i in ids]) if ids else []
        return [None if raw is None else dict(orjson.loads(raw)) for raw in raws]

    async def _start(self, key: str, after: str | None, newest_first: bool) -> int | None:
        """The rank after the id `after` in a sorted set, in its order or the reverse; None when `after` is
        not there (deleted meanwhile: the client starts again rather than skip or repeat)."""
        if after is None:
            return 0
        rank = await (self.redis.zrevrank(key, after) if newest_first else self.redis.zrank(key, after))
        return None if rank is None else int(rank) + 1  # type: ignore[arg-type]

    async def _ids(self, key: str, start: int, limit: int, newest_first: bool) -> list[str]:
        read = self.redis.zrevrange if newest_first else self.redis.zrange
        return [_s(i) for i in await read(key, start, start + limit - 1)]


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else ""
    if isinstance(v, int | float):
        return str(v)
    return orjson.dumps(v).decode()
