"""The two storage backends of job files, each against the real thing: a local directory and SeaweedFS's
S3 server. Objects stream in and out in bounded chunks; a missing object is FileNotFoundError; a key
cannot leave the local directory."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from app.storage.base import Storage, read_all
from app.storage.local import LocalStorage
from app.storage.s3 import S3Storage
from tests.support.seaweedkit import SeaweedFS, start_seaweedfs

MB = 1024 * 1024


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    s = start_seaweedfs(tmp_path_factory.mktemp("seaweed"))
    yield s
    s.stop()


def s3_of(seaweed: SeaweedFS, bucket: str) -> S3Storage:
    return S3Storage(bucket, endpoint=seaweed.endpoint, region="us-east-1", access_key_id="test",
                     secret_access_key="test", prefix="gw")  # fmt: skip


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "files")
    seaweed: SeaweedFS = request.getfixturevalue("seaweed")
    return s3_of(seaweed, seaweed.bucket("t" + uuid.uuid4().hex[:12]))


async def pieces(total: int, size: int) -> AsyncIterator[bytes]:
    for i in range(0, total, size):
        yield bytes([i // size % 251]) * min(size, total - i)


async def test_a_large_object_streams_in_and_out_in_bounded_chunks(storage: Storage) -> None:
    total = 13 * MB  # three S3 multipart parts
    want = hashlib.sha256()
    async for p in pieces(total, MB // 3):
        want.update(p)
    assert await storage.put("batches/b1/out/000000", pieces(total, MB // 3)) == total
    got, largest, size = hashlib.sha256(), 0, 0
    async for chunk in storage.get("batches/b1/out/000000"):
        got.update(chunk)
        largest = max(largest, len(chunk))
        size += len(chunk)
    assert size == total and got.digest() == want.digest()
    assert largest <= 4 * MB  # never the whole object at once


async def test_missing_and_deleted_objects(storage: Storage) -> None:
    with pytest.raises(FileNotFoundError):
        await read_all(storage, "files/nothing/0", MB)
    await storage.put("files/f1/0", pieces(10, 10))
    assert await read_all(storage, "files/f1/0", MB) == bytes(10)
    await storage.put("files/f1/0", pieces(3, 3))  # replaced whole
    assert await read_all(storage, "files/f1/0", MB) == bytes(3)
    await storage.delete("files/f1/0")
    await storage.delete("files/f1/0")  # twice is fine
    with pytest.raises(FileNotFoundError):
        await read_all(storage, "files/f1/0", MB)


async def test_a_failed_write_leaves_nothing(storage: Storage) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * MB
        raise ValueError("client went away")

    with pytest.raises(ValueError):
        await storage.put("files/f2/0", broken())
    with pytest.raises(FileNotFoundError):
        await read_all(storage, "files/f2/0", 2 * MB)


def test_a_local_key_cannot_leave_its_directory(tmp_path: Path) -> None:
    local = LocalStorage(tmp_path / "files")
    with pytest.raises(ValueError):
        local._path("../outside")
