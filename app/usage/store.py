"""Where the ledger lives: the limits Redis (shared by every replica; noeviction, so no row is evicted), or
this process's memory when no Redis is configured (one process; lost at restart)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from importlib import resources
from typing import Protocol

from ..redis.link import RedisLink

FLUSH = resources.files(__package__).joinpath("flush.lua").read_text()


class LedgerStore(Protocol):
    name: str

    async def apply(
        self, seq_key: str, seq: int, expiry: dict[str, int], incs: Sequence[tuple[str, str, int]],
        reads: Sequence[tuple[str, str]],
    ) -> list[int]: ...  # fmt: skip

    async def read(self, names: Sequence[str]) -> list[dict[str, int]]: ...


def _script_args(
    seq_key: str,
    seq: int,
    expiry: dict[str, int],
    incs: Sequence[tuple[str, str, int]],
    reads: Sequence[tuple[str, str]],
) -> tuple[list[str], list[object]]:
    names = list(expiry)
    index = {name: i + 2 for i, name in enumerate(names)}  # KEYS[1] is the batch number's key
    args: list[object] = [seq, len(names), *(expiry[n] for n in names), len(incs)]
    for name, fld, n in incs:
        args += [index[name], fld, n]
    for name, fld in reads:
        args += [index[name], fld]
    return [seq_key, *names], args


class RedisLedger:
    name = "redis"

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    async def apply(
        self, seq_key: str, seq: int, expiry: dict[str, int], incs: Sequence[tuple[str, str, int]],
        reads: Sequence[tuple[str, str]],
    ) -> list[int]:  # fmt: skip
        keys, args = _script_args(seq_key, seq, expiry, incs, reads)
        _, values = await self.link.run(FLUSH, keys, args)
        return [int(v) for v in values]

    async def read(self, names: Sequence[str]) -> list[dict[str, int]]:
        pipe = self.link.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        async with self.link.room():
            replies = await pipe.execute()
        return [{_text(k): int(v) for k, v in reply.items()} for reply in replies]


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class MemoryLedger:
    """The same semantics in this process: hashes with an expiry, and each batch number applied once."""

    name = "memory"

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, int]] = {}
        self.expiry: dict[str, int] = {}
        self.seqs: dict[str, int] = {}

    async def apply(
        self, seq_key: str, seq: int, expiry: dict[str, int], incs: Sequence[tuple[str, str, int]],
        reads: Sequence[tuple[str, str]],
    ) -> list[int]:  # fmt: skip
        now = time.time()
        for name in [n for n, at in self.expiry.items() if at <= now]:
            self.hashes.pop(name, None)
            del self.expiry[name]
        if seq > self.seqs.get(seq_key, 0):
            for name, fld, n in incs:
                h = self.hashes.setdefault(name, {})
                h[fld] = h.get(fld, 0) + n
            for name, at in expiry.items():
                if name in self.hashes:
                    self.expiry[name] = at
            self.seqs[seq_key] = seq
        return [self.hashes.get(name, {}).get(fld, 0) for name, fld in reads]

    async def read(self, names: Sequence[str]) -> list[dict[str, int]]:
        return [dict(self.hashes.get(name, {})) for name in names]
