"""The job queue: saq on the gateway's Redis, its worker running inside every gateway process.

Why saq (compared with arq): saq keeps a job in its active list with a heartbeat, and every worker sweeps
for jobs whose heartbeat stopped and queues them again; arq only learns that a worker died when the job's
whole timeout has passed, and a re-index runs for hours. So with saq a killed replica's batch is running
again on another one within `heartbeat_s + sweep_s + 1` seconds (16 s by default). saq's Redis queue speaks
redis-py's asyncio client, the one the gateway already uses; it is typed (py.typed).

Workers run in the gateway processes (no second deployment to operate): each runs at most `concurrency`
jobs at once, their upstream calls at background priority. On shutdown a job in progress is cancelled and
queued again at once (saq's retry), and the next worker resumes it from its last checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from saq import CronJob, Job, Worker
from saq.queue.redis import RedisQueue

from ..redis.link import FAILURES
from .batches import Batches
from .files import FileStore
from .outage import Outage
from .slots import Slots

log = logging.getLogger("embedding_gateway.jobs")
RUN = "run_batch"
ABORT_WAIT_S = 1.0
RETRIES = 1000  # a job is retried after every lost worker or storage outage (runs wait 10 s after one)
AWAY_WAIT_S = 1.0  # a worker loop waits this long after Redis failed to answer, before asking again


def every(seconds: int) -> str:
    """A cron line (croniter's, seconds last) for every `seconds` seconds, at most a minute."""
    return "* * * * *" if seconds >= 60 else f"* * * * * */{seconds}"


class Queue(RedisQueue):
    """saq's Redis queue, asking a stuck job's worker to stop for 1 s (saq waits 5) before running it again:
    a worker that stopped beating is dead or far too late. A dequeue that fails waits a second and finds no
    job (saq's worker would ask again at once, silently, in a busy loop, while Redis is away)."""

    def __init__(self, redis: Redis, name: str) -> None:
        super().__init__(redis, name=name)
        self.outage = Outage()

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:  # noqa: ASYNC109 (saq's)
        try:
            job = await super().dequeue(timeout, poll_interval)
        except FAILURES as exc:
            if self.outage.failed(exc):
                log.warning("batch jobs: Redis failed: %s (taking jobs)", self.outage.cause)
            await asyncio.sleep(AWAY_WAIT_S)
            return None
        self.outage.answered()
        return job

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        return await super().sweep(lock, abort=min(abort, ABORT_WAIT_S))


class QuietWorker(Worker):  # type: ignore[type-arg]
    SIGNALS: list[Any] = []  # the server's signal handlers stay: it stops the worker in its lifespan


class JobQueue:
    def __init__(self, redis: Redis, namespace: str, batches: Batches, files: FileStore, *, concurrency: int,
                 heartbeat_s: int, sweep_s: int, files_sweep_s: int = 60,
                 team_max_running: int = 2) -> None:  # fmt: skip
        self.queue = Queue(redis, name=f"{namespace}:jobs")
        self.slots = Slots(redis, namespace, team_max_running, lapse_s=heartbeat_s)
        self.outage = self.queue.outage
        self.batches = batches
        self.files = files
        self.heartbeat_s = heartbeat_s
        self.worker: Worker | None = None  # type: ignore[type-arg]
        self.task: asyncio.Task[None] | None = None
        if concurrency:
            self.worker = QuietWorker(
                self.queue, functions=[(RUN, self._run)], concurrency=concurrency,
                cron_jobs=[CronJob(self._sweep, cron=every(files_sweep_s), timeout=300)],  # expired files, batches
                timers={"sweep": sweep_s, "abort": 1, "schedule": min(30, files_sweep_s), "worker_info": 10},
                shutdown_grace_period_s=0, dequeue_timeout=1,
            )  # fmt: skip
        batches.enqueue = self.enqueue

    async def start(self) -> None:
        logging.getLogger("saq").addFilter(self.outage)
        await self.queue.connect()
        if self.worker is not None:
            self.task = asyncio.get_running_loop().create_task(self.worker.start())

    async def enqueue(self, bid: str) -> None:
        await self.queue.enqueue(Job(RUN, kwargs={"bid": bid}, key=bid, timeout=0, heartbeat=self.heartbeat_s,
                                     retries=RETRIES, ttl=86_400))  # fmt: skip

    async def _run(self, ctx: dict[str, Any], *, bid: str) -> None:
        """Run the batch if its team has a free slot (slots.py); else leave it for when one frees."""
        job: Job = ctx["job"]
        b = await self.batches.records.batch(bid)
        team = b["team"] if b is not None else None
        if team is not None and not await self.slots.claim(team, bid):
            return
        beat = asyncio.get_running_loop().create_task(self._beat(job, team, bid))
        try:
            await self.batches.run(bid, job.update)
        finally:
            beat.cancel()
            if team is not None:
                await self.slots.release(team, bid)
                await self.next_of(team)

    async def next_of(self, team: str) -> int:
        """Queue the team's oldest unfinished batches that are not running, as many as it has free slots."""
        running = await self.slots.running(team)
        free = self.slots.cap - len(running)
        if free <= 0:
            return 0
        waiting = [bid for bid in await self.batches.records.active_ids(team) if bid not in running][:free]
        for bid in waiting:
            await self.enqueue(bid)
        return len(waiting)

    async def _beat(self, job: Job, team: str | None, bid: str) -> None:
        """Heartbeats while the run waits (a long wait for quota is not a dead worker), for saq and the slot."""
        while True:
            await asyncio.sleep(self.heartbeat_s / 3)
            try:
                await job.update()
                if team is not None:
                    await self.slots.claim(team, bid)
            except Exception as exc:  # Redis away for a moment: the next beat tries again
                if self.outage.failed(exc):
                    log.warning("batch jobs: Redis failed: %s (job heartbeat)", self.outage.cause)

    async def _sweep(self, ctx: dict[str, Any]) -> int:
        queued = 0
        for team in await self.batches.records.active_teams():  # a worker that died before it queued them
            queued += await self.next_of(team)
        return await self.files.sweep() + await self.batches.sweep() + queued

    async def close(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.queue.disconnect()
        logging.getLogger("saq").removeFilter(self.outage)
