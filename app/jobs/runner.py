"""BatchRunner: one batch, from its input file to its output and error files, resumable.

The input is read as a stream, each line parsed as it comes (lines.py), and cut into chunks of `chunk_lines`
lines, fewer when their items or vectors would pass one request's worth (CHUNK_VALUES, `max_input_items`:
a line may ask for 2,048 vectors, and a chunk's answers are held until it is written); a line whose image
URLs were fetched (media_fetch on) is a chunk of its own, its images taken from the memory budget as a
request's are (the job waits for room as it waits for quota). Each chunk: its
valid requests grouped by model and parameters, each group sent through the service at
background priority (background.py: the cache first, misses upstream), its output and error lines
written to storage as one part each (`batches/<id>/out/<n>`, `.../err/<n>`), then the checkpoint (lines
done, parts, counts) in the batch's record. A run that stops (cancel, crash, a replica killed) resumes at
the last checkpoint on any replica: at most one chunk is redone, and its vectors that landed in the cache
before the crash are read from it, not embedded again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from ..errors import NO_ROOM, GatewayError, OverLimit, RateLimited, Unavailable, UpstreamFailed
from ..flights.batcher import apportion, group_key
from ..inputs.params import dashscope_options
from ..runtime.budget import Lease
from ..service import EmbedRequest, EmbedResult
from ..storage.base import Storage, one
from ..teams.team import Team, model_for
from . import textlines
from .background import embed_background, retry_delay
from .files import FileStore
from .host import Host
from .lines import Line, error_line, ok_line, parse_line, render, split_lines
from .metrics import JobMetrics
from .records import Records, now

log = logging.getLogger("embedding_gateway.jobs")
CHUNK_BYTES = 8 * 1024 * 1024  # a chunk ends at chunk_lines lines or this many bytes of them, whichever first
# ... and its lines ask for at most max_input_items items and this many vector values (2,048 vectors of 1,024:
# one full request, 8 MiB of float32, about 26 MB as JSON floats), or are one line: a chunk holds its answers
# whole until they are written, and 500 lines of 2,048 items each would be a million vectors
CHUNK_VALUES = 2048 * 1024
SLICE_VECTORS = 20  # vectors rendered per loop turn (~1 ms: a slice of a large answer, app/api/answer.py)
ATTEMPTS = 8  # retryable failures of one group before its lines are failed
RETRYABLE = (RateLimited, Unavailable, UpstreamFailed)


def part_key(bid: str, kind: str, n: int) -> str:
    """Where part `n` of a batch's output (`kind` "out") or errors ("err") is stored."""
    return f"batches/{bid}/{kind}/{n:06d}"


Touch = Callable[[], Awaitable[None]]
Parse = Callable[[int, bytes | None, Lease, bool], Awaitable[Line | bytes]]  # (n, raw, lease, wait)


@dataclass(slots=True)
class Progress:
    lines: int = 0
    parts: int = 0
    completed: int = 0
    failed: int = 0
    cached: int = 0
    out_bytes: int = 0
    err_bytes: int = 0

    @classmethod
    def of(cls, b: dict[str, str]) -> Progress:
        return cls(*(int(b.get(k) or 0) for k in ("lines_done", "parts", "completed", "failed", "cached",
                                                   "out_bytes", "err_bytes")))  # fmt: skip

    def fields(self) -> dict[str, int]:
        return {"lines_done": self.lines, "parts": self.parts, "completed": self.completed, "failed": self.failed,
                "cached": self.cached, "out_bytes": self.out_bytes, "err_bytes": self.err_bytes}  # fmt: skip


@dataclass(slots=True)
class Chunk:
    out: list[bytes] = field(default_factory=list)
    err: list[bytes] = field(default_factory=list)
    cached: int = 0


class BatchRunner:
    def __init__(self, host: Host, files: FileStore, records: Records, storage: Storage, metrics: JobMetrics) -> None:
        self.host = host
        self.metrics = metrics
        self.files = files
        self.records = records
        self.storage = storage

    async def chunks(self, b: dict[str, str], team: Team | None, touch: Touch) -> bool:
        """Run the batch's remaining chunks; False when it was cancelled on the way."""
        rec = await self.files.records.file(b["input_file_id"])
        if rec is None:
            raise FileNotFoundError(b["input_file_id"])
        s = self.files.settings
        max_items = self.host.caps.max_input_items
        progress = Progress.of(b)
        parse = self._parser(b, team)
        pending: list[Line | bytes] = []
        n = held = items = values = 0
        async for raw in split_lines(self.files.content(rec), s.max_line_bytes):
            n += 1
            if n <= progress.lines:
                continue
            # the line's fetched media, held until its chunk is written, within its team's share
            lease = self.host.memory.lease(team.name if team else None)
            try:
                line = await self._parsed(parse, n, raw, lease, touch)
                media = lease.held > 0  # a line that fetched media is a chunk of its own
                asks = len(line.items) if isinstance(line, Line) else 0
                wide = asks * line.params.dimension if isinstance(line, Line) else 0
                if pending and (media or items + asks > max_items or values + wide > CHUNK_VALUES):
                    if not await self._step(b, team, progress, pending, touch):  # one request's worth
                        return False
                    pending, held, items, values = [], 0, 0, 0
                pending.append(line)
                held, items, values = held + len(raw or b""), items + asks, values + wide
                if media or len(pending) >= s.chunk_lines or held >= CHUNK_BYTES:  # a chunk's lines at once: bounded
                    if not await self._step(b, team, progress, pending, touch):
                        return False
                    pending, held, items, values = [], 0, 0, 0
            finally:
                lease.release()
        return not pending or await self._step(b, team, progress, pending, touch)

    async def _parsed(self, parse: Parse, n: int, raw: bytes | None, lease: Lease, touch: Touch) -> Line | bytes:
        """Line `n` parsed, its media fetched into `lease`: when the memory budget has no room for them, the
        job waits and asks again, as it waits for quota (ATTEMPTS times, then the line fails with the 503, or
        the 429 when its team's share of the budget was what was full)."""
        for attempt in range(1, ATTEMPTS):
            try:
                return await parse(n, raw, lease, True)
            except NO_ROOM as exc:
                lease.release()
                await touch()
                await asyncio.sleep(retry_delay(exc, attempt))
        return await parse(n, raw, lease, False)

    async def _step(self, b: dict[str, str], team: Team | None, p: Progress, parsed: list[Line | bytes],
                    touch: Touch) -> bool:  # fmt: skip
        bid = b["id"]
        if await self.records.redis.hget(f"{self.records.ns}:batch:{bid}", "status") != b"in_progress":
            return False
        chunk = await self.chunk(b, team, parsed, touch)
        out, err = b"".join(chunk.out), b"".join(chunk.err)
        cap = self.files.settings.team_max_bytes
        if not await self.records.reserve_part(b["team"], bid, p.parts, len(out) + len(err), cap):
            why = (f"the team's files would pass {cap} bytes stored (jobs.team_max_bytes) with this batch's output: "
                   "it stopped, its output so far kept; delete files and send the rest as a new batch")  # fmt: skip
            errors = {"object": "list", "data": [{"code": "storage_full", "message": why, "param": None,
                                                  "line": p.lines + 1}]}  # fmt: skip
            await self.records.transition(bid, ["in_progress"], status="cancelling", cancelling_at=now(), errors=errors)
            return False
        await self.storage.put(part_key(bid, "out", p.parts), one(out))
        await self.storage.put(part_key(bid, "err", p.parts), one(err))
        p.lines += len(parsed)
        p.parts += 1
        p.completed += len(chunk.out)
        p.failed += len(chunk.err)
        p.cached += chunk.cached
        p.out_bytes += len(out)
        p.err_bytes += len(err)
        await self.records.update(bid, **p.fields())
        self.metrics.chunk(len(chunk.out), len(chunk.err), chunk.cached)
        await touch()
        return True

    async def chunk(self, b: dict[str, str], team: Team | None, parsed: list[Line | bytes], touch: Touch) -> Chunk:
        answers: list[tuple[bool, bytes]] = [(False, x) if isinstance(x, bytes) else (True, b"") for x in parsed]
        groups: dict[object, list[int]] = {}
        for i, x in enumerate(parsed):
            if isinstance(x, Line):
                groups.setdefault(group_key(x.spec, x.params), []).append(i)
        result = Chunk()
        kind = b["kind"]
        for idxs in groups.values():
            lines = [parsed[i] for i in idxs]
            done, cached = await self.group(kind, team, lines, touch)  # type: ignore[arg-type]
            result.cached += cached
            for i, ans in zip(idxs, done, strict=True):
                answers[i] = ans
        for ok, line in answers:
            (result.out if ok else result.err).append(line)
        return result

    def _parser(self, b: dict[str, str], team: Team | None) -> Parse:
        """The batch's parse of its line `n` (1-based): a Line, or the error line that takes its place; its
        fetched media taken from the lease (with `wait`, NO_ROOM raised when the budget has no room)."""
        limit = self.files.settings.max_line_bytes
        if b["kind"] == "openai":
            return lambda n, raw, lease, wait: parse_line(self.host, team, n, raw, limit, lease, wait)
        try:
            spec = model_for(self.host.catalog, team, textlines.served_name(b["model"]))
            parameters = orjson.loads(b.get("parameters") or "{}")
            params = dashscope_options(spec, self.host.upstream_kinds[spec.upstream], parameters)
        except GatewayError as err:
            refused = err
            return lambda n, raw, lease, wait: _ready(textlines.error(n - 1, refused))
        return lambda n, raw, lease, wait: _ready(textlines.parse_text(spec, params, limit, n, raw))

    async def group(self, kind: str, team: Team | None, lines: list[Line],
                    touch: Touch) -> tuple[list[tuple[bool, bytes]], int]:  # fmt: skip
        """The answers of lines that share a model and parameters (one service call), and the items the
        cache served."""
        first = lines[0]
        attempt = 0
        while True:
            try:
                req = EmbedRequest(first.spec, first.params, [it for ln in lines for it in ln.items])
                result = await embed_background(self.host, team, req)
                return await self._answers(kind, lines, result), result.hits
            except OverLimit as exc:  # before RETRYABLE: waiting cannot help
                err: GatewayError = exc
            except RETRYABLE as exc:
                attempt += 1
                if attempt < ATTEMPTS:
                    await touch()
                    await asyncio.sleep(retry_delay(exc, attempt))
                    continue
                return [(False, self._error(kind, ln, exc)) for ln in lines], 0
            except GatewayError as exc:
                err = exc
            if len(lines) == 1:
                return [(False, self._error(kind, first, err))], 0
            half = len(lines) // 2  # one line's refusal must not fail the others: halves, down to lines
            a, ca = await self.group(kind, team, lines[:half], touch)
            b, cb = await self.group(kind, team, lines[half:], touch)
            return a + b, ca + cb

    @staticmethod
    def _error(kind: str, line: Line, err: GatewayError) -> bytes:
        return error_line(line.custom_id, err) if kind == "openai" else textlines.error(int(line.custom_id), err)

    async def _answers(self, kind: str, lines: list[Line], result: EmbedResult) -> list[tuple[bool, bytes]]:
        """The lines' output, rendered a slice of vectors (SLICE_VECTORS) per loop turn: the event loop is
        every request's of this process (a chunk of 500 task lines at once held it ~35 ms)."""
        spec = lines[0].spec
        shares = apportion(result.billed_tokens, [sum(it.est_tokens for it in ln.items) for ln in lines])
        out: list[tuple[bool, bytes]] = []
        start = since = 0
        for ln, share in zip(lines, shares, strict=True):
            if since >= SLICE_VECTORS:
                await asyncio.sleep(0)
                since = 0
            vectors = result.vectors[start : start + len(ln.items)]
            start += len(ln.items)
            since += len(vectors)
            if kind != "openai":
                out.append((True, textlines.ok(self.host, ln, vectors, share)))
                continue
            mine = EmbedResult(vectors=vectors, hits=0, misses=0, billed_tokens=share)
            text = self.host.base64s if ln.base64 else self.host.floats
            out.append((True, ok_line(ln.custom_id, await render(mine, spec.name, text))))
        return out


async def _ready(value: Line | bytes) -> Line | bytes:
    return value
