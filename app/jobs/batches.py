"""Batches: the OpenAI Batch API's operations on batch records (create, get, list, cancel), the batch
object in OpenAI's shape, and the run of one batch by a worker (start, chunks, finalize).

Statuses: validating (created, queued) -> in_progress (a worker runs it) -> finalizing (output files
written) -> completed; cancelling (asked) -> cancelled (at the next chunk, or at once when no worker has it
yet; the output so far is kept); failed (the input file is gone). `request_counts` move at every chunk. A
finished batch is forgotten `file_ttl_s` after it finished, when its output files expire (sweep).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from ..api import routes
from ..errors import GatewayError, InvalidRequest, NotFound, RateLimited
from ..storage.base import StorageError
from .files import FileStore, new_id
from .records import FINAL, Records, now
from .runner import BatchRunner, part_key

log = logging.getLogger("embedding_gateway.jobs")
STORAGE_WAIT_S = 10.0
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # who runs a batch now (`jobs show`, the replica tests)
ENDPOINTS = (routes.EMBEDDINGS,)
WINDOWS = {"24h": 86_400}
TIMES = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at")


def batch_object(b: dict[str, str]) -> dict[str, Any]:
    counts = {k: int(b.get(k) or 0) for k in ("total", "completed", "failed")}
    errors = orjson.loads(b["errors"]) if b.get("errors") else None
    return {
        "id": b["id"], "object": "batch", "endpoint": b["endpoint"], "errors": errors,
        "input_file_id": b["input_file_id"], "completion_window": b["completion_window"], "status": b["status"],
        "output_file_id": b.get("output_file_id") or None, "error_file_id": b.get("error_file_id") or None,
        "created_at": int(b["created_at"]), "expires_at": int(b["expires_at"]),
        **{k: int(b[k]) if b.get(k) else None for k in TIMES},
        "request_counts": counts, "metadata": orjson.loads(b["metadata"]) if b.get("metadata") else None,
    }  # fmt: skip


class Batches:
    def __init__(self, records: Records, files: FileStore, runner: BatchRunner) -> None:
        self.records = records
        self.files = files
        self.runner = runner
        self.enqueue: Callable[[str], Awaitable[None]] | None = None  # set by the worker (worker.py)
        self.prepare: Callable[[dict[str, str]], Awaitable[str]] | None = None  # a task's input fetch (tasks.py)

    async def create(self, team: str, body: dict[str, Any]) -> dict[str, str]:
        fid, endpoint, window = body.get("input_file_id"), body.get("endpoint"), body.get("completion_window")
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(f"endpoint: only {', '.join(ENDPOINTS)} is served here", param="endpoint")
        if window not in WINDOWS:
            raise InvalidRequest("completion_window: must be '24h'", param="completion_window")
        if not isinstance(fid, str):
            raise InvalidRequest("input_file_id: required", param="input_file_id")
        metadata = body.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > 16
            or any(not isinstance(v, str) or len(v) > 512 for v in metadata.values())
        ):
            raise InvalidRequest("metadata: at most 16 string values of 512 characters", param="metadata")  # fmt: skip
        rec = await self.files.get(team, fid)
        if rec["purpose"] != "batch":
            raise InvalidRequest(f"input_file_id: {fid} was not uploaded with purpose 'batch'", param="input_file_id")
        await self.admit(team)
        created = now()
        b = {"id": new_id("batch_"), "team": team, "kind": "openai", "endpoint": endpoint, "input_file_id": fid,
             "completion_window": window, "status": "validating", "created_at": created,
             "expires_at": created + WINDOWS[window], "total": rec["lines"], "metadata": metadata}  # fmt: skip
        await self.records.put_batch(b)
        self.runner.metrics.entered("openai", "validating")
        assert self.enqueue is not None
        await self.enqueue(b["id"])
        return await self.get(team, b["id"])

    async def admit(self, team: str) -> None:
        """Room for one more batch (or task) of the team: at most `team_max_batches` not finished, and room
        among its files for the two it may write (`team_max_files`); else 429 (room comes back as batches
        finish or files are deleted)."""
        s = self.files.settings
        active = await self.records.active_batches(team)
        if active >= s.team_max_batches:
            raise RateLimited(f"team {team} has {s.team_max_batches} batches not finished, the most it may; "
                              "retry when one has", code="batch_limit", retry_after=60.0)  # fmt: skip
        if await self.records.file_count(team) + 2 * (active + 1) > s.team_max_files:
            raise RateLimited(f"team {team} may keep {s.team_max_files} files, its unfinished batches' outputs "
                              "counted; delete some first", code="files_limit", retry_after=60.0)  # fmt: skip

    async def get(self, team: str, bid: str) -> dict[str, str]:
        b = await self.records.batch(bid) if len(bid) < 80 else None
        if b is None or b["team"] != team:
            raise NotFound(f"batch_id: no batch {bid[:80]!r}", param="batch_id", code="not_found")
        return b

    async def page(self, team: str, after: str | None, limit: int) -> tuple[list[dict[str, str]], bool]:
        ids = await self.records.batch_ids(team, after, limit + 1)
        found = [b for b in [await self.records.batch(i) for i in ids[:limit]] if b is not None]
        return found, len(ids) > limit

    async def cancel(self, team: str | None, bid: str) -> dict[str, str]:
        b = await self.get(team, bid) if team is not None else await self.records.batch(bid)
        if b is None:
            raise NotFound(f"batch_id: no batch {bid[:80]!r}", param="batch_id", code="not_found")
        await self.records.transition(bid, ["validating", "in_progress"], status="cancelling", cancelling_at=now())
        return await self.records.batch(bid) or b

    async def run(self, bid: str, touch: Callable[[], Awaitable[None]]) -> None:
        """The worker's whole job for one batch (any replica, any number of times: it resumes)."""
        b = await self.records.batch(bid)
        if b is None or b["status"] in FINAL:
            return
        if await self.records.transition(bid, ["validating"], status="in_progress", in_progress_at=now()):
            self.runner.metrics.entered(b["kind"], "in_progress")
        b = await self.records.batch(bid) or b
        if b["status"] == "in_progress":
            await self.records.update(bid, worker=WORKER)
            team = self.runner.host.auth.team(b["team"])
            try:
                if not b.get("input_file_id") and self.prepare is not None:
                    b["input_file_id"] = await self.prepare(b)
                    await self.records.update(bid, input_file_id=b["input_file_id"])
                await self.runner.chunks(b, team, touch)
            except StorageError:
                await asyncio.sleep(STORAGE_WAIT_S)  # storage away: saq runs the job again, from its checkpoint
                raise
            except (FileNotFoundError, GatewayError) as exc:
                why = exc.message if isinstance(exc, GatewayError) else "the input file is gone"
                errors = {"object": "list", "data": [{"code": "invalid_input", "message": why,
                                                      "param": "input_file_id", "line": None}]}  # fmt: skip
                if await self.records.transition(bid, ["in_progress"], status="failed", failed_at=now(), errors=errors):
                    self.runner.metrics.entered(b["kind"], "failed")
                    await self.discard(bid)
                return
            await self.records.transition(bid, ["in_progress"], status="finalizing", finalizing_at=now())
        await self.finalize(bid)

    async def discard(self, bid: str) -> None:
        """A failed batch's output parts written so far: deleted, their bytes given back to the team."""
        b = await self.records.batch(bid)
        if b is None:
            return
        parts = int(b.get("parts") or 0)
        held = int(b.get("held_bytes") or 0) if b.get("held_part") == str(parts) else 0  # written, not checkpointed
        await self.records.release_bytes(b["team"], int(b.get("out_bytes") or 0) + int(b.get("err_bytes") or 0) + held)
        for i in range(parts + 1):
            for kind in ("out", "err"):
                await self.runner.storage.delete(part_key(bid, kind, i))

    async def sweep(self, pages: int = 20, page: int = 1000) -> int:
        """Forget batches (and tasks) finished more than `file_ttl_s` ago, when their output files expire: a
        batch is a record in the shared Redis, and a team may make them without end (every replica runs this
        now and then: a batch goes once). Unfinished ones stay, however old."""
        keep_s = self.files.settings.file_ttl_s
        gone = offset = 0
        for _ in range(pages):
            ids = await self.records.old_batches(time.time() - keep_s, offset, page)
            for bid in ids:
                b = await self.records.batch(bid)
                ended = max((int(b[k]) for k in ("completed_at", "failed_at", "cancelled_at", "expired_at")
                             if b and b.get(k)), default=0)  # fmt: skip
                if b is None or (b["status"] in FINAL and ended + keep_s <= now()):
                    await self.records.drop_batch(bid, b["team"] if b else None)
                    gone += 1
                else:
                    offset += 1  # kept: the next page starts after it
            if len(ids) < page:
                break
        if gone:
            log.info("forgot %d finished batches", gone)
        return gone

    async def finalize(self, bid: str) -> None:
        b = await self.records.batch(bid)
        if b is None or b["status"] not in ("finalizing", "cancelling"):
            return
        parts, fields = int(b.get("parts") or 0), {}
        base = bid.removeprefix("batch_")
        for kind, count, size, name in (("out", "completed", "out_bytes", "output_file_id"),
                                        ("err", "failed", "err_bytes", "error_file_id")):  # fmt: skip
            if int(b.get(count) or 0) == 0:  # no file: its parts are empty, and no file would ever delete them
                for i in range(parts):
                    await self.runner.storage.delete(part_key(bid, kind, i))
                continue
            fid = f"file-{base}{kind}"
            keys = [part_key(bid, kind, i) for i in range(parts)]
            # its bytes were counted part by part as they were written (BatchRunner._step)
            await self.files.create(b["team"], fid, f"{bid}_{kind}put.jsonl", "batch_output", keys,
                                    int(b.get(size) or 0), int(b.get(count) or 0))  # fmt: skip
            fields[name] = fid
        if b["status"] == "cancelling":
            done = await self.records.transition(bid, ["cancelling"], status="cancelled", cancelled_at=now(), **fields)
        else:
            done = await self.records.transition(bid, ["finalizing"], status="completed", completed_at=now(), **fields)
        if done:
            final = "cancelled" if b["status"] == "cancelling" else "completed"
            self.runner.metrics.entered(b["kind"], final)
            log.info("batch %s %s", bid, final)
