"""FileStore: the files of the OpenAI Files API as the batch jobs use them, owned by a team.

A file is a record in Redis (records.py) and one or more objects in storage (an upload is one object; a
job's output is one object per checkpointed chunk, served one after the other as one file, so a large
output is never copied or concatenated). Files expire `file_ttl_s` after their creation (a sweep deletes
them; an expired file not swept yet already answers 404). A team's stored bytes, inputs and outputs, are
counted; an upload that would take them over `team_max_bytes` is refused (413) before it is read (one of no
declared length holds its room UPLOAD_STEP at a time as its bytes come, and is refused when a step is), and one
past `team_max_files` files (400: each unfinished batch holds room for its two output files).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from ..errors import InvalidRequest, NotFound, PayloadTooLarge
from ..storage.base import Storage
from .records import Records, now
from .settings import JobSettings
from .upload import MultipartFile

log = logging.getLogger("embedding_gateway.jobs")
PURPOSES = ("batch",)
# A half-written object (a `.part` file of local storage) untouched this long was left by a killed process:
# a live write touches it at every chunk, and an upload slower than the body rate is cut long before.
LEFTOVER_AGE_S = 3600
LEFTOVERS_EVERY_S = 3600
PAGE_IDS = 500  # file ids read at a time while a listing fills its page
UPLOAD_STEP = 1024 * 1024  # an upload of no declared length holds its team's room this much at a time


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def file_object(rec: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's file object."""
    keys = ("id", "bytes", "created_at", "expires_at", "filename", "purpose")
    return {"object": "file", **{k: rec[k] for k in keys}, "status": "processed", "status_details": None}


class FileStore:
    def __init__(self, storage: Storage, records: Records, settings: JobSettings) -> None:
        self.storage = storage
        self.records = records
        self.settings = settings
        self._leftovers_at = 0.0  # monotonic time of the next sweep of half-written objects

    async def upload(
        self, team: str, content_type: str, declared: int | None, body: AsyncIterable[bytes]
    ) -> dict[str, Any]:
        s = self.settings
        if declared is not None and declared > s.max_file_bytes + 64 * 1024:
            raise PayloadTooLarge(f"file: larger than {s.max_file_bytes} bytes", param="file")
        form = MultipartFile(content_type, max_bytes=s.max_file_bytes, max_lines=s.max_lines)
        if await self.records.file_count(team) + 2 * await self.records.active_batches(team) >= s.team_max_files:
            raise InvalidRequest(f"file: team {team} keeps {s.team_max_files} files at most, its unfinished "
                                 "batches' outputs counted; delete some first", param="file",
                                 code="files_limit")  # fmt: skip
        held = min(s.max_file_bytes, declared if declared is not None else UPLOAD_STEP)
        await self._reserve(team, held)

        async def counted(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            """An upload without a declared length holds its team's room a step at a time, as its bytes come
            (it held the whole max_file_bytes: a few such uploads filled a team's cap while they lasted)."""
            nonlocal held
            size = 0
            async for chunk in chunks:
                size += len(chunk)
                while size > held and held < s.max_file_bytes:  # MultipartFile refuses past max_file_bytes
                    step = min(UPLOAD_STEP, s.max_file_bytes - held)
                    await self._reserve(team, step)
                    held += step
                yield chunk

        fid = new_id("file-")
        key = f"files/{fid}/0"
        try:
            size = await self.storage.put(key, counted(form.file_chunks(body)))
            purpose = form.fields.get("purpose", "")
            if purpose not in PURPOSES:
                raise InvalidRequest(f"purpose: {purpose[:40]!r} is not supported here; use 'batch'", param="purpose")
        except BaseException:
            await self.records.release_bytes(team, held)
            await self.storage.delete(key)
            raise
        await self.records.release_bytes(team, held - size)
        created = now()
        rec = {"id": fid, "team": team, "bytes": size, "lines": form.lines, "created_at": created,
               "expires_at": created + int(s.file_ttl_s), "filename": form.filename or "upload.jsonl",
               "purpose": purpose, "parts": [key]}  # fmt: skip
        await self.records.put_file(rec)
        return rec

    async def _reserve(self, team: str, size: int) -> None:
        """`size` more bytes of the team's stored bytes held, or 413 when they would pass its cap."""
        cap = self.settings.team_max_bytes
        if not await self.records.reserve_bytes(team, size, cap):
            raise PayloadTooLarge(f"file: team {team} has {cap} bytes of files stored at most; delete some first",
                                  param="file", status=413)  # fmt: skip

    async def get(self, team: str, fid: str) -> dict[str, Any]:
        """The team's file; 404 for another team's, an unknown or an expired one."""
        rec = await self.records.file(fid) if fid.startswith("file-") and len(fid) < 64 else None
        if rec is None or rec["team"] != team or rec["expires_at"] <= now():
            raise NotFound(f"file_id: no file {fid[:64]!r}", param="file_id", code="not_found")
        return rec

    async def page(
        self, team: str, after: str | None, limit: int, newest_first: bool, purpose: str | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to `limit` of the team's live files (of `purpose`, if given) after the id `after`, and whether
        more follow. Ids are read PAGE_IDS at a time until the page is full, so a filter that skips many
        never ends a listing early; a team holds `team_max_files` files at most, which bounds the reads."""
        found: list[dict[str, Any]] = []
        start, t = await self.records.file_start(team, after, newest_first), now()
        while start is not None:
            ids = await self.records.file_ids(team, start, PAGE_IDS, newest_first)
            for rec in await self.records.files(ids):
                if rec is not None and rec["expires_at"] > t and purpose in (None, rec["purpose"]):
                    if len(found) == limit:
                        return found, True
                    found.append(rec)
            if len(ids) < PAGE_IDS:
                break
            start += PAGE_IDS  # by rank: a file deleted meanwhile may skip one, never ends the listing early
        return found, False

    async def content(self, rec: dict[str, Any]) -> AsyncIterator[bytes]:
        for key in rec["parts"]:
            async for chunk in self.storage.get(key):
                yield chunk

    async def delete(self, rec: dict[str, Any]) -> None:
        if await self.records.drop_file(rec):
            for key in rec["parts"]:
                await self.storage.delete(key)

    async def create(self, team: str, fid: str, filename: str, purpose: str, parts: list[str], size: int,
                     lines: int) -> dict[str, Any]:  # fmt: skip
        """The record of a file the gateway wrote (a job's output): its bytes already counted (reserved)."""
        created = now()
        rec = {"id": fid, "team": team, "bytes": size, "lines": lines, "created_at": created,
               "expires_at": created + int(self.settings.file_ttl_s), "filename": filename, "purpose": purpose,
               "parts": parts}  # fmt: skip
        await self.records.put_file(rec)
        return rec

    async def sweep(self) -> int:
        """Delete expired files (every replica runs it now and then: a file goes once), and, at the first
        sweep and once every LEFTOVERS_EVERY_S after, what killed processes left half-written."""
        gone = 0
        if time.monotonic() >= self._leftovers_at:
            self._leftovers_at = time.monotonic() + LEFTOVERS_EVERY_S
            left = await self.storage.sweep_leftovers(LEFTOVER_AGE_S)
            if left:
                log.info("deleted %d half-written job files left by stopped processes", left)
        for fid in await self.records.expired_files():
            rec = await self.records.file(fid)
            if rec is None:
                await self.records.redis.zrem(f"{self.records.ns}:expiry", fid)
                continue
            await self.delete(rec)
            gone += 1
        if gone:
            log.info("deleted %d expired job files", gone)
        return gone
