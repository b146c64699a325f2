"""S3-compatible object storage (AWS S3, SeaweedFS, MinIO, OSS in S3 mode) through obstore, for replicas
that share files. Uploads stream as multipart uploads of `PART_BYTES` parts, at most two in flight, so an
upload holds about 10 MB whatever its size; reads stream in chunks of CHUNK_BYTES."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from .base import CHUNK_BYTES, StorageError

PART_BYTES = 5 * 1024 * 1024  # S3's smallest multipart part


class S3Storage:
    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None,
        region: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        prefix: str = "",
    ) -> None:
        self.prefix = prefix.strip("/")
        options = {"allow_http": bool(endpoint and endpoint.startswith("http://")), "timeout": "120s"}
        self.store = S3Store(
            bucket,
            endpoint=endpoint,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            virtual_hosted_style_request=False,
            client_options=options,  # type: ignore[arg-type]
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                yield chunk

        try:
            await obstore.put_async(self.store, self._key(key), counted(), chunk_size=PART_BYTES, max_concurrency=2)
        except (OSError, BaseError) as exc:
            raise StorageError(f"s3 storage: {type(exc).__name__}") from exc
        return size

    async def get(self, key: str) -> AsyncIterator[bytes]:
        try:
            result = await obstore.get_async(self.store, self._key(key))
        except FileNotFoundError:  # obstore's NotFoundError is one
            raise FileNotFoundError(key) from None
        except (OSError, BaseError) as exc:
            raise StorageError(f"s3 storage: {type(exc).__name__}") from exc
        async for chunk in result.stream(min_chunk_size=CHUNK_BYTES):
            yield bytes(chunk)

    async def delete(self, key: str) -> None:
        try:
            await obstore.delete_async(self.store, self._key(key))
        except FileNotFoundError:
            return

    async def sweep_leftovers(self, older_than_s: float) -> int:
        """Nothing here: an upload cut off by a killed process is an incomplete multipart upload, which
        the bucket's lifecycle rule removes (AbortIncompleteMultipartUpload: docs/operations.md)."""
        return 0

    async def close(self) -> None:
        return None
