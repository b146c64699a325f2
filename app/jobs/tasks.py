"""DashScope's async text-embedding tasks (the dashscope SDK's BatchTextEmbedding) on the batch machinery:
a task is a batch of kind `dashscope` whose input is a text file named by `input.url` (fetched by the job
with the media fetcher's address checks, into storage, as a file of the team's) or by the id of a file
uploaded through /v1/files. Statuses are DashScope's; the result is a gzipped JSON-lines file served by the
gateway at a signed URL that expires (`result_url_ttl_s`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from ..api import routes
from ..errors import InvalidRequest, NotFound, PayloadTooLarge
from ..inputs.media.fetcher import Fetcher
from .batches import Batches
from .files import FileStore, new_id
from .records import Records, now

# zlib's fastest level: 5 ms a 256 KiB chunk of vectors where level 6 took 44 (same machine and load), for a
# result ~7 % larger (0.47 of the JSON against 0.44)
GZIP_LEVEL = 1
STATUS = {"validating": "PENDING", "in_progress": "RUNNING", "finalizing": "RUNNING", "cancelling": "RUNNING",
          "completed": "SUCCEEDED", "failed": "FAILED", "cancelled": "CANCELED", "expired": "FAILED"}  # fmt: skip


def stamp(t: str | None) -> str | None:
    return datetime.fromtimestamp(int(t), UTC).strftime("%Y-%m-%d %H:%M:%S.000") if t else None


class Tasks:
    def __init__(self, records: Records, files: FileStore, batches: Batches, fetcher: Fetcher, ttl_s: float) -> None:
        self.records = records
        self.files = files
        self.batches = batches
        self.fetcher = fetcher
        self.ttl_s = ttl_s
        self._secret: bytes | None = None

    async def create(self, team: str, model: str, url: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """A PENDING task; the input URL (or file id) is checked now, fetched by the job."""
        fid = ""
        if url.startswith("file-"):
            fid = (await self.files.get(team, url))["id"]
        else:
            await self.fetcher.check(url, "input.url")  # a private or malformed address: 400 now
        await self.batches.admit(team)
        created = now()
        b: dict[str, Any] = {"id": new_id("task-"), "team": team, "kind": "dashscope", "model": model, "input_url": url,
             "input_file_id": fid, "parameters": parameters, "status": "validating", "created_at": created,
             "expires_at": created + 86_400, "endpoint": "text-embedding", "completion_window": "24h"}  # fmt: skip
        await self.records.put_batch(b)
        self.batches.runner.metrics.entered("dashscope", "validating")
        assert self.batches.enqueue is not None
        await self.batches.enqueue(b["id"])
        return {"task_id": b["id"], "task_status": "PENDING"}

    async def fetch_input(self, b: dict[str, str], max_bytes: int) -> str:
        """The task's text file copied into storage, streamed: the file's id (the job reads it from there)."""
        fid = new_id("file-")
        key = f"files/{fid}/0"
        async with asyncio.timeout(self.fetcher.timeout_s):
            response = await self.fetcher.open(b["input_url"], "input.url")
        try:
            if response.status_code != 200:
                raise InvalidRequest(f"input.url: answered HTTP {response.status_code}", param="input.url")
            lines = self.files.settings.max_lines  # as an uploaded file's
            size = await self.files.storage.put(key, _capped(response.aiter_raw(), max_bytes, lines))
        except httpx.HTTPError:
            raise InvalidRequest("input.url: could not be read", param="input.url") from None
        finally:
            await response.aclose()
        if not await self.records.reserve_bytes(b["team"], size, self.files.settings.team_max_bytes):
            await self.files.storage.delete(key)
            raise PayloadTooLarge(f"input.url: the team's files would pass {self.files.settings.team_max_bytes} "
                                  "bytes stored; delete some first", param="input.url")  # fmt: skip
        await self.files.create(b["team"], fid, "input.txt", "batch_input", [key], size, 0)
        return fid

    async def get(self, team: str, tid: str) -> dict[str, str]:
        b = await self.records.batch(tid) if tid.startswith("task-") and len(tid) < 80 else None
        if b is None or b["team"] != team:
            raise NotFound(f"task_id: no task {tid[:80]!r}", param="task_id", dashscope_code="InvalidParameter")
        return b

    async def output(self, b: dict[str, str], base_url: str) -> dict[str, Any]:
        counts = {k: int(b.get(f) or 0) for k, f in (("TOTAL", "lines_done"), ("SUCCEEDED", "completed"),
                                                    ("FAILED", "failed"))}  # fmt: skip
        out: dict[str, Any] = {"task_id": b["id"], "task_status": STATUS[b["status"]],
                               "submit_time": stamp(b["created_at"]), "scheduled_time": stamp(b.get("in_progress_at")),
                               "end_time": stamp(b.get("completed_at") or b.get("failed_at") or b.get("cancelled_at")),
                               "task_metrics": counts}  # fmt: skip
        if b["status"] == "completed":
            out["url"] = await self.result_url(b["id"], base_url)
        if b.get("errors"):
            out["code"], out["message"] = "InvalidParameter", orjson.loads(b["errors"])["data"][0]["message"]
        return out

    async def cancel(self, team: str, tid: str) -> None:
        """DashScope cancels PENDING tasks only."""
        await self.get(team, tid)
        if not await self.records.transition(tid, ["validating"], status="cancelling", cancelling_at=now()):
            raise InvalidRequest("task_id: only a PENDING task can be canceled", param="task_id",
                                 dashscope_code="UnsupportedOperation")  # fmt: skip
        await self.batches.finalize(tid)

    async def result_url(self, tid: str, base_url: str) -> str:
        expires = int(time.time() + self.ttl_s)
        signature = await self._sign(tid, expires)
        return f"{base_url}{routes.TASK_RESULT.format(task_id=tid)}?expires={expires}&signature={signature}"

    async def signed(self, tid: str, expires: int, signature: str) -> bool:
        if not (time.time() < expires < time.time() + self.ttl_s + 60) or not signature.isascii():
            return False
        return hmac.compare_digest(signature, await self._sign(tid, expires))

    async def completed(self, tid: str) -> dict[str, str]:
        """The task's record, once it has a result (NotFound before: asked before the answer starts)."""
        b = await self.records.batch(tid)
        if b is None or b["status"] != "completed":
            raise NotFound("the task has no result", dashscope_code="InvalidParameter")
        return b

    async def result(self, b: dict[str, str]) -> AsyncIterator[bytes]:
        """The result file of a completed task (`completed`), gzipped as it streams (output parts, then error
        parts: each line has its index), each chunk compressed in a thread (zlib lets go of the GIL): on the
        event loop, a 256 KiB chunk of vectors held every other request of the process for 20-45 ms (level 6)."""
        packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        for name in ("output_file_id", "error_file_id"):
            rec = await self.records.file(b[name]) if b.get(name) else None
            if rec is not None:
                async for chunk in self.files.content(rec):
                    if packed := await asyncio.to_thread(packer.compress, chunk):
                        yield packed
        yield packer.flush()

    async def _sign(self, tid: str, expires: int) -> str:
        if self._secret is None:  # one secret for every replica, made by the first that needs it
            key = f"{self.records.ns}:secret"
            await self.records.redis.set(key, secrets.token_hex(32), nx=True)
            stored = await self.records.redis.get(key) or b""
            self._secret = stored if isinstance(stored, bytes) else stored.encode()
        return hmac.new(self._secret, f"{tid}:{expires}".encode(), hashlib.sha256).hexdigest()


async def _capped(chunks: AsyncIterator[bytes], cap: int, max_lines: int) -> AsyncIterator[bytes]:
    size = lines = 0
    last = b"\n"
    async for chunk in chunks:
        size += len(chunk)
        if size > cap:
            raise PayloadTooLarge(f"input.url: larger than {cap} bytes", param="input.url")
        lines += chunk.count(b"\n")
        last = chunk[-1:] or last
        if lines + (last != b"\n") > max_lines:
            raise InvalidRequest(f"input.url: more than {max_lines} lines (documents)", param="input.url")
        yield chunk
