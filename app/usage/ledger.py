"""The usage ledger of this process: requests counted in memory, written to the shared store in one batch
per `usage_flush_s` (a second), never a round trip of its own per request.

What a crash can lose: the requests this process answered since its last batch landed (at most
`usage_flush_s` of them, plus a batch whose script was still on its way), never more; a batch whose reply
was lost is sent again with its number and applied at most once (flush.lua), so nothing is counted twice.
A clean stop (SIGTERM) writes the last batch. While the store fails, batches wait in memory (bounded:
MAX_ROWS rows; past it new requests are not counted and a log line says so) and land once it answers.

Budgets read the spend the batches bring back (the team's money this UTC day and month, all replicas
together, as of the last batch) plus what this process counted since: a team over budget is known to every
replica within a second or so; its overshoot is bounded by what the fleet spends in that time.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..redis.cause import cause
from .rows import DAY_S, Keys, Usage, month_of
from .rows import field as field_name
from .store import LedgerStore

log = logging.getLogger("embedding_gateway.usage")

MAX_ROWS = 100_000  # rows (minute x team x key x model) waiting in memory while the store fails


@dataclass(slots=True)
class Batch:
    rows: dict[tuple[int, str, str, str], dict[str, int]] = field(default_factory=dict)  # (minute, team, key, model)
    spend: dict[tuple[str, str, int, str], int] = field(default_factory=dict)  # (team, 'd'|'m', period, currency)

    def add(self, minute: int, u: Usage) -> None:
        key = (minute, u.team, u.key, u.model)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = {}
        u.add_to(row)
        if u.currency is not None and u.cost:
            day = minute // DAY_S
            for period, value in (("d", day), ("m", month_of(day))):
                k = (u.team, period, value, u.currency)
                self.spend[k] = self.spend.get(k, 0) + u.cost


class Ledger:
    def __init__(
        self,
        store: LedgerStore,
        keys: Keys,
        *,
        flush_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keys = keys
        self.flush_s = flush_s
        self.budgets: Callable[[], list[tuple[str, str]]] = list  # (team, currency) whose spend is read back
        self.landed: Callable[[], None] = lambda: None  # after each batch that landed
        self.clock = clock
        self.process = secrets.token_hex(8)
        self.seq = 0
        self.current = Batch()
        self.pending: tuple[int, Batch] | None = None  # sent, its landing not yet confirmed
        self.known: dict[tuple[str, str, int, str], int] = {}  # spend read back: (team, d|m, period, currency)
        self.failing: str | None = None
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, u: Usage) -> None:
        minute = int(self.clock()) // 60 * 60
        if len(self.current.rows) >= MAX_ROWS and (minute, u.team, u.key, u.model) not in self.current.rows:
            self.dropped += 1
            if self.dropped == 1:
                log.error(
                    "usage ledger: %d rows wait for the store; new rows are not counted until it answers", MAX_ROWS
                )
            return
        self.current.add(minute, u)

    def spent(self, team: str, currency: str) -> tuple[int, int]:
        """The team's money billed this UTC day and this month in `currency`, in nanos: all replicas as of
        the last batch, plus what this process counted since."""
        day = int(self.clock()) // DAY_S
        month = month_of(day)
        batches = [self.current] + ([self.pending[1]] if self.pending else [])
        out = []
        for period, value in (("d", day), ("m", month)):
            k = (team, period, value, currency)
            out.append(self.known.get(k, 0) + sum(b.spend.get(k, 0) for b in batches))
        return out[0], out[1]

    async def flush(self) -> None:
        """Land the pending batch (sent again if its reply was lost), then the current one."""
        async with self._lock:
            if self.pending is None and (self.current.rows or self.budgets()):
                self.seq += 1
                self.pending, self.current = (self.seq, self.current), Batch()
            if self.pending is None:
                return
            seq, batch = self.pending
            try:
                await self._send(seq, batch)
            except Exception as exc:
                if self.failing is None:
                    self.failing = cause(exc)
                    log.warning("usage ledger: the store does not answer (%s); batches wait in memory", self.failing)
                return
            self.pending = None
            self.landed()
            if self.failing is not None:
                log.info("usage ledger: the store answers again; batches written")
                self.failing, self.dropped = None, 0

    async def _send(self, seq: int, batch: Batch) -> None:
        expiry: dict[str, int] = {}
        incs: list[tuple[str, str, int]] = []
        for (minute, team, key, model), row in batch.rows.items():
            for name, at in (self.keys.hour(minute // 3600 * 3600), self.keys.minute(minute)):
                expiry[name] = at
                incs += [(name, field_name(team, key, metric, model), n) for metric, n in row.items()]
        for (team, period, value, currency), n in batch.spend.items():
            name, at = self.keys.day(value) if period == "d" else self.keys.month(value)
            expiry[name] = at
            incs.append((name, f"{team}|{currency}", n))
        day = int(self.clock()) // DAY_S
        reads: list[tuple[str, str]] = []
        wanted: list[tuple[str, str, int, str]] = []
        for team, currency in self.budgets():
            for period, (name, at) in (("d", self.keys.day(day)), ("m", self.keys.month(month_of(day)))):
                expiry.setdefault(name, at)
                reads.append((name, f"{team}|{currency}"))
                wanted.append((team, period, day if period == "d" else month_of(day), currency))
        values = await self.store.apply(self.keys.seq(self.process), seq, expiry, incs, reads)
        self.known = dict(zip(wanted, values, strict=True))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        """The last batch, on a clean stop (an attempt; a store that fails keeps it, and it is lost)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush()
        if self.current.rows:
            await self.flush()
