"""open_jobs: the storage, records, files, batches and the worker of one gateway process (main.py calls it
once the gateway is open). Jobs need Redis (their state is shared by the replicas): without REDIS_URL the
batch routes answer 503 saying so. Their state goes to the limits' Redis (LIMITS_REDIS_URL, else REDIS_URL):
a Redis that never evicts, unlike a cache's (allkeys-lru), opened as the limits open it (app/redis/link.py:
a password, TLS, Sentinel's master). saq needs one Redis: on a Redis Cluster the jobs stay off (JobsOff).
A Redis that cannot be opened at start leaves them off too, naming the cause; main.py tries again later."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

from redis.asyncio import Redis

from ..inputs.media.fetcher import Fetcher
from ..redis.link import Mode, shut
from ..runtime.state import Gateway
from ..storage.base import Storage
from ..storage.local import LocalStorage
from ..storage.s3 import S3Storage
from .batches import Batches
from .connection import JobsOff, jobs_redis
from .files import FileStore
from .metrics import JobMetrics
from .parts import Jobs
from .records import Records
from .runner import BatchRunner
from .settings import JobSettings
from .tasks import Tasks
from .worker import JobQueue

RETRY_S = 10.0  # a Redis that refused the jobs at start is asked again this often
log = logging.getLogger("embedding_gateway.jobs")


def open_storage(s: JobSettings) -> Storage:
    if s.storage == "s3":
        key, secret = s.s3_access_key_id, s.s3_secret_access_key
        return S3Storage(s.s3_bucket, endpoint=s.s3_endpoint, region=s.s3_region, prefix=s.s3_prefix,
                         access_key_id=key.get_secret_value() if key else None,
                         secret_access_key=secret.get_secret_value() if secret else None)  # fmt: skip
    return LocalStorage(s.storage_dir, min_free_bytes=s.min_free_bytes)


async def open_jobs(
    gw: Gateway, stack: AsyncExitStack, redis: Redis, namespace: str, s: JobSettings, text_fetcher: Fetcher
) -> Jobs:
    """Batch jobs on `redis` (jobs_redis() of the limits' Redis). `text_fetcher` fetches the text files of
    DashScope tasks (closed with the jobs)."""
    stack.push_async_callback(shut, redis, "batch jobs")
    storage = open_storage(s)
    stack.push_async_callback(storage.close)
    records = Records(redis, namespace)
    files = FileStore(storage, records, s)
    batches = Batches(records, files, BatchRunner(gw, files, records, storage, JobMetrics(gw.metrics.registry)))
    tasks = Tasks(records, files, batches, text_fetcher, s.result_url_ttl_s)
    stack.push_async_callback(text_fetcher.close)
    batches.prepare = lambda b: tasks.fetch_input(b, s.max_file_bytes)
    queue = JobQueue(redis, namespace, batches, files, concurrency=s.concurrency,
                     heartbeat_s=s.heartbeat_s, sweep_s=s.sweep_s, files_sweep_s=s.files_sweep_s,
                     team_max_running=s.team_max_running)  # fmt: skip
    await queue.start()
    stack.push_async_callback(queue.close)
    return Jobs(storage, records, files, batches, queue, tasks)


@dataclass(slots=True)
class JobsPlan:
    """Where and how the jobs open: the limits' Redis URL and mode, the start-up timeout, their settings."""

    url: str
    mode: Mode
    timeout_s: float
    namespace: str
    settings: JobSettings
    text_fetcher: Callable[[], Fetcher]


async def start_jobs(gw: Gateway, stack: AsyncExitStack, plan: JobsPlan) -> None:
    """Sets gw.jobs; or, when the jobs cannot run, gw.jobs_off (the batch routes' 503) and one log line, and
    while Redis may answer later (not a cluster), asks it again every RETRY_S in the background."""
    try:
        redis = await jobs_redis(plan.url, plan.mode, plan.timeout_s, plan.settings)
    except JobsOff as exc:
        gw.jobs_off = str(exc)
        log.warning("%s%s", exc, f"; trying again every {RETRY_S:g} s" if exc.retry else "")
        if exc.retry:
            retry = asyncio.get_running_loop().create_task(_retry(gw, stack, plan))
            stack.push_async_callback(_cancel, retry)
        return
    gw.jobs = await open_jobs(gw, stack, redis, plan.namespace, plan.settings, plan.text_fetcher())


async def _retry(gw: Gateway, stack: AsyncExitStack, plan: JobsPlan) -> None:
    while True:
        await asyncio.sleep(RETRY_S)
        try:
            redis = await jobs_redis(plan.url, plan.mode, plan.timeout_s, plan.settings)
        except JobsOff as exc:
            if str(exc) != gw.jobs_off:
                gw.jobs_off = str(exc)
                log.warning("%s", exc)
            if not exc.retry:
                return
            continue
        gw.jobs = await open_jobs(gw, stack, redis, plan.namespace, plan.settings, plan.text_fetcher())
        log.info("batch jobs: on, Redis answers")
        return


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
