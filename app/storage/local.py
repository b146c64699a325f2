"""A directory on local disk: the embedded default (a named volume in docker-compose.yml). Writes go to a
temporary name and are renamed into place, so a reader never sees half an object; file I/O runs in a
thread so the event loop never blocks on the disk. A write stops (StorageError: 503, `storage_full`)
while the disk has less than `min_free_bytes` free, checked before it starts and every CHECK_EVERY_BYTES:
each team's files are capped (`jobs.team_max_bytes`), but many teams within their caps could fill the
disk the gateway shares with its logs (and, in compose, Redis's data)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from .base import CHUNK_BYTES, StorageError

CHECK_EVERY_BYTES = 8 * 1024 * 1024


class LocalStorage:
    name = "local"

    def __init__(self, root: str | Path, min_free_bytes: int = 0) -> None:
        self.root = Path(root).resolve()
        self.min_free_bytes = min_free_bytes

    def _check_room(self) -> None:
        if not self.min_free_bytes:
            return
        where = next(p for p in (self.root, *self.root.parents) if p.exists())
        if shutil.disk_usage(where).free < self.min_free_bytes:
            raise StorageError(
                "the gateway's file storage is full (its disk has less free than jobs.min_free_bytes); retry later",
                code="storage_full",
            )

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"storage key {key!r} leaves the storage directory")
        return path

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        path = self._path(key)
        tmp = path.with_name(path.name + f".{os.getpid()}.part")
        try:
            await asyncio.to_thread(self._check_room)
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            handle = await asyncio.to_thread(tmp.open, "wb")
            size, check_at = 0, CHECK_EVERY_BYTES
            try:
                async for chunk in chunks:
                    size += len(chunk)
                    if size >= check_at:
                        check_at += CHECK_EVERY_BYTES
                        await asyncio.to_thread(self._check_room)
                    await asyncio.to_thread(handle.write, chunk)
            finally:
                await asyncio.to_thread(handle.close)
            await asyncio.to_thread(os.replace, tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"local storage: {type(exc).__name__}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return size

    async def get(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"local storage: {type(exc).__name__}") from exc
        try:
            while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield chunk
        finally:
            handle.close()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._remove, self._path(key))

    def _remove(self, path: Path) -> None:
        """The object, and its folders once empty (a folder per file and per batch: left, one a file for ever)."""
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == self.root:
                return
            try:
                folder.rmdir()
            except OSError:  # not empty, or gone
                return

    async def sweep_leftovers(self, older_than_s: float) -> int:
        """`.part` files not written to for `older_than_s`: a process killed while writing (an upload, an
        output) never renamed or removed its own. A live write touches its file at every chunk."""
        return await asyncio.to_thread(self._sweep_parts, time.time() - older_than_s)

    def _sweep_parts(self, before: float) -> int:
        """os.walk, not Path.rglob: folders are removed as their last file goes (other writes, deletes and
        sweeps run meanwhile), and rglob raises on a folder that went between its listing and its scan."""
        gone = 0
        for folder, _, names in os.walk(self.root):
            for name in names:
                if not name.endswith(".part"):
                    continue
                path = Path(folder, name)
                try:
                    if path.stat().st_mtime < before:
                        self._remove(path)
                        gone += 1
                except OSError:  # removed meanwhile
                    continue
        return gone

    async def close(self) -> None:
        return None
