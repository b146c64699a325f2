"""A team's list of files on a real redis-server (app/jobs/files.py `FileStore.page`): a purpose filter
that skips most of the team's files still fills its page and says whether more follow (the ids are read a
few hundred at a time), an expired file not yet swept is not listed, and another team's never."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from app.jobs.files import PAGE_IDS, FileStore
from app.jobs.records import Records, now
from app.jobs.settings import JobSettings
from app.storage.local import LocalStorage
from tests.support.processes import RedisServer


def record(team: str, fid: str, purpose: str, expires_at: int) -> dict[str, Any]:
    return {"id": fid, "team": team, "bytes": 1, "lines": 1, "created_at": now(), "expires_at": expires_at,
            "filename": "f.jsonl", "purpose": purpose, "parts": []}  # fmt: skip


def test_a_filtered_listing_fills_its_pages_across_reads(redis_server: RedisServer, tmp_path: Path) -> None:
    async def run() -> None:
        redis = Redis.from_url(redis_server.url)
        records = Records(redis, "t" + uuid.uuid4().hex[:10])
        files = FileStore(LocalStorage(tmp_path), records, JobSettings())
        try:
            total = 2 * PAGE_IDS + 203
            outputs = {0, PAGE_IDS + 7, total - 1}  # creation order: newest is the last
            live = now() + 3600
            made = [f"file-{n:06d}" for n in range(total)]
            for n, fid in enumerate(made):
                expired = n == PAGE_IDS + 8  # an output-purpose file past its expiry, not swept yet
                purpose = "batch_output" if n in outputs or expired else "batch"
                await records.put_file(record("beta", fid, purpose, now() - 1 if expired else live))
            await records.put_file(record("alpha", "file-alpha", "batch_output", live))

            first, more = await files.page("beta", None, 2, True, "batch_output")
            assert [f["id"] for f in first] == [made[total - 1], made[PAGE_IDS + 7]] and more
            rest, more = await files.page("beta", first[-1]["id"], 2, True, "batch_output")
            assert [f["id"] for f in rest] == [made[0]] and not more
            oldest, more = await files.page("beta", None, 3, False, "batch_output")
            assert [f["id"] for f in oldest] == [made[0], made[PAGE_IDS + 7], made[total - 1]] and not more
            everything, more = await files.page("beta", None, 10_000, True, None)
            assert [f["id"] for f in everything] == [f for n, f in enumerate(made) if n != PAGE_IDS + 8][::-1]
            assert not more
            gone, more = await files.page("beta", "file-no-such", 5, True, None)
            assert gone == [] and not more
        finally:
            await redis.aclose()

    asyncio.run(run())
