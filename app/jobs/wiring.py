"""open_jobs: the storage, records, files, batches and the worker of one gateway process (main.py calls it
once the gateway is open). Jobs need Redis (their state is shared by the replicas): without REDIS_URL the
batch routes answer 503 saying so. Their state goes to the limits' Redis (LIMITS_REDIS_URL, else REDIS_URL):
a Redis that never evicts, unlike a cache's (allkeys-lru)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from redis.asyncio import Redis

from ..runtime.state import Gateway
from ..storage.base import Storage
from ..storage.local import LocalStorage
from ..storage.s3 import S3Storage
from .batches import Batches
from .files import FileStore
from .records import Records
from .runner import BatchRunner
from .settings import JobSettings
from .worker import JobQueue


@dataclass(slots=True)
class Jobs:
    storage: Storage
    records: Records
    files: FileStore
    batches: Batches
    queue: JobQueue


def open_storage(s: JobSettings) -> Storage:
    if s.storage == "s3":
        key, secret = s.s3_access_key_id, s.s3_secret_access_key
        return S3Storage(s.s3_bucket, endpoint=s.s3_endpoint, region=s.s3_region, prefix=s.s3_prefix,
                         access_key_id=key.get_secret_value() if key else None,
                         secret_access_key=secret.get_secret_value() if secret else None)  # fmt: skip
    return LocalStorage(s.storage_dir)


async def open_jobs(gw: Gateway, stack: AsyncExitStack) -> Jobs | None:
    s = gw.settings
    url = s.limits_url()
    if url is None:
        return None
    redis: Redis = Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    stack.push_async_callback(redis.aclose)
    storage = open_storage(s.jobs)
    stack.push_async_callback(storage.close)
    records = Records(redis, s.cache_namespace)
    files = FileStore(storage, records, s.jobs)
    batches = Batches(records, files, BatchRunner(gw, files, records, storage))
    queue = JobQueue(redis, s.cache_namespace, batches, files, concurrency=s.jobs.concurrency,
                     heartbeat_s=s.jobs.heartbeat_s, sweep_s=s.jobs.sweep_s)  # fmt: skip
    await queue.start()
    stack.push_async_callback(queue.close)
    return Jobs(storage, records, files, batches, queue)
