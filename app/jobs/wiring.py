"""open_jobs: the storage, records, files, batches and the worker of one gateway process (main.py calls it
once the gateway is open). Jobs need Redis (their state is shared by the replicas): without REDIS_URL the
batch routes answer 503 saying so. Their state goes to the limits' Redis (LIMITS_REDIS_URL, else REDIS_URL):
a Redis that never evicts, unlike a cache's (allkeys-lru)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from redis.asyncio import Redis

from ..inputs.media.fetcher import Fetcher
from ..runtime.state import Gateway
from ..storage.base import Storage
from ..storage.local import LocalStorage
from ..storage.s3 import S3Storage
from .batches import Batches
from .files import FileStore
from .metrics import JobMetrics
from .records import Records
from .runner import BatchRunner
from .settings import JobSettings
from .tasks import Tasks
from .worker import JobQueue


@dataclass(slots=True)
class Jobs:
    storage: Storage
    records: Records
    files: FileStore
    batches: Batches
    queue: JobQueue
    tasks: Tasks


def open_storage(s: JobSettings) -> Storage:
    if s.storage == "s3":
        key, secret = s.s3_access_key_id, s.s3_secret_access_key
        return S3Storage(s.s3_bucket, endpoint=s.s3_endpoint, region=s.s3_region, prefix=s.s3_prefix,
                         access_key_id=key.get_secret_value() if key else None,
                         secret_access_key=secret.get_secret_value() if secret else None)  # fmt: skip
    return LocalStorage(s.storage_dir)


async def open_jobs(
    gw: Gateway, stack: AsyncExitStack, url: str, namespace: str, s: JobSettings, text_fetcher: Fetcher
) -> Jobs:
    """Batch jobs on the Redis at `url` (the limits' Redis). `text_fetcher` fetches the text files of
    DashScope tasks (closed with the jobs)."""
    redis: Redis = Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
    stack.push_async_callback(redis.aclose)
    storage = open_storage(s)
    stack.push_async_callback(storage.close)
    records = Records(redis, namespace)
    files = FileStore(storage, records, s)
    batches = Batches(records, files, BatchRunner(gw, files, records, storage, JobMetrics(gw.metrics.registry)))
    tasks = Tasks(records, files, batches, text_fetcher, s.result_url_ttl_s)
    stack.push_async_callback(text_fetcher.close)
    batches.prepare = lambda b: tasks.fetch_input(b, s.max_file_bytes)
    queue = JobQueue(redis, namespace, batches, files, concurrency=s.concurrency,
                     heartbeat_s=s.heartbeat_s, sweep_s=s.sweep_s, files_sweep_s=s.files_sweep_s)  # fmt: skip
    await queue.start()
    stack.push_async_callback(queue.close)
    return Jobs(storage, records, files, batches, queue, tasks)
