"""Storage: the interface every job file goes through. Objects are written once from a stream of chunks
and read back as a stream, so no file is ever held whole in memory (a 200 MB upload or output file costs
a few chunks). Names are relative paths chosen by the gateway (`files/<id>/0`), never by a client."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

from ..errors import Unavailable

CHUNK_BYTES = 256 * 1024  # what a read hands over at a time
# What one download holds while its reader is slower than the disk: the chunk in the transport's buffer and
# the next one, read and waiting for the drain (the routes take it from the memory budget)
DOWNLOAD_BYTES = 2 * CHUNK_BYTES


class StorageError(Unavailable):
    """The backend failed (disk full, S3 unreachable): a 503 to the caller; a job retries later."""


class Storage(Protocol):
    name: str

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Write the object from `chunks` (replacing one of that name); the bytes written."""
        ...

    def get(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of at most a few hundred KB; FileNotFoundError when absent."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; absent is fine."""
        ...

    async def sweep_leftovers(self, older_than_s: float) -> int:
        """Delete what writes that never ended left (a killed process's half-written objects), untouched
        for `older_than_s`; how many."""
        ...

    async def close(self) -> None: ...


async def one(data: bytes) -> AsyncIterator[bytes]:
    """A whole small object as a stream of one chunk (part files of a job are written this way)."""
    yield data


async def read_all(storage: Storage, key: str, limit: int) -> bytes:
    """A small object whole (at most `limit` bytes: a check, not a truncation)."""
    out = bytearray()
    async for chunk in storage.get(key):
        out += chunk
        if len(out) > limit:
            raise StorageError(f"{key} is larger than {limit} bytes")
    return bytes(out)
