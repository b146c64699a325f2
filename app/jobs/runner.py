"""BatchRunner: one batch, from its input file to its output and error files, resumable.

The input is read as a stream and cut into chunks of `chunk_lines` lines. Each chunk: its lines parsed
(lines.py), its valid requests grouped by model and parameters, each group sent through the service at
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

from ..errors import GatewayError, OverLimit, RateLimited, Unavailable, UpstreamFailed
from ..flights.batcher import apportion, group_key
from ..inputs.params import dashscope_options
from ..service import EmbedRequest, EmbedResult
from ..storage.base import Storage, one
from ..teams.team import Team, model_for
from . import textlines
from .background import embed_background, retry_delay
from .files import FileStore
from .host import Host
from .lines import Line, error_line, ok_line, parse_line, render, split_lines
from .metrics import JobMetrics
from .records import Records

log = logging.getLogger("embedding_gateway.jobs")
CHUNK_BYTES = 8 * 1024 * 1024  # a chunk ends at chunk_lines lines or this many bytes of them, whichever first
ATTEMPTS = 8  # retryable failures of one group before its lines are failed
RETRYABLE = (RateLimited, Unavailable, UpstreamFailed)
Touch = Callable[[], Awaitable[None]]


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
        progress = Progress.of(b)
        pending: list[bytes | None] = []
        n = held = 0
        async for raw in split_lines(self.files.content(rec), s.max_line_bytes):
            n += 1
            if n <= progress.lines:
                continue
            pending.append(raw)
            held += len(raw or b"")
            if len(pending) >= s.chunk_lines or held >= CHUNK_BYTES:  # a chunk's lines held at once: bounded
                if not await self._step(b, team, progress, pending, touch):
                    return False
                pending, held = [], 0
        return not pending or await self._step(b, team, progress, pending, touch)

    async def _step(self, b: dict[str, str], team: Team | None, p: Progress, raws: list[bytes | None],
                    touch: Touch) -> bool:  # fmt: skip
        bid = b["id"]
        if await self.records.redis.hget(f"{self.records.ns}:batch:{bid}", "status") != b"in_progress":
            return False
        chunk = await self.chunk(b, team, p.lines + 1, raws, touch)
        out, err = b"".join(chunk.out), b"".join(chunk.err)
        await self.storage.put(f"batches/{bid}/out/{p.parts:06d}", one(out))
        await self.storage.put(f"batches/{bid}/err/{p.parts:06d}", one(err))
        p.lines += len(raws)
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

    async def chunk(self, b: dict[str, str], team: Team | None, first: int, raws: list[bytes | None],
                    touch: Touch) -> Chunk:  # fmt: skip
        parsed = await self._parse(b, team, first, raws)
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

    async def _parse(self, b: dict[str, str], team: Team | None, first: int,
                     raws: list[bytes | None]) -> list[Line | bytes]:  # fmt: skip
        limit = self.files.settings.max_line_bytes
        if b["kind"] == "openai":
            return [await parse_line(self.host, team, first + i, raw, limit) for i, raw in enumerate(raws)]
        try:
            spec = model_for(self.host.catalog, team, textlines.served_name(b["model"]))
            parameters = orjson.loads(b.get("parameters") or "{}")
            params = dashscope_options(spec, self.host.upstream_kinds[spec.upstream], parameters)
        except GatewayError as err:
            return [textlines.error(first + i - 1, err) for i in range(len(raws))]
        return [textlines.parse_text(spec, params, limit, first + i, raw) for i, raw in enumerate(raws)]

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
                return self._answers(kind, lines, result), result.hits
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

    def _answers(self, kind: str, lines: list[Line], result: EmbedResult) -> list[tuple[bool, bytes]]:
        spec = lines[0].spec
        shares = apportion(result.billed_tokens, [sum(it.est_tokens for it in ln.items) for ln in lines])
        out: list[tuple[bool, bytes]] = []
        start = 0
        for ln, share in zip(lines, shares, strict=True):
            vectors = result.vectors[start : start + len(ln.items)]
            start += len(ln.items)
            if kind != "openai":
                out.append((True, textlines.ok(self.host, ln, vectors, share)))
                continue
            mine = EmbedResult(vectors=vectors, hits=0, misses=0, billed_tokens=share)
            text = self.host.base64s if ln.base64 else self.host.floats
            out.append((True, ok_line(ln.custom_id, render(mine, spec.name, text))))
        return out
