"""The jobs' Redis: the limits' Redis (a Redis that never evicts), opened as the limits open it
(app/redis/link.py: a password, TLS, Sentinel's master), as one client: saq needs one Redis, so on a Redis
Cluster the jobs stay off. The gateway (wiring.py) and the operators' command (operator.py) open it; this
module imports neither the Gateway nor the jobs' parts, so `embedding-gateway jobs` starts light."""

from __future__ import annotations

from redis.asyncio import Redis

from ..redis.cause import RedisSetupError
from ..redis.link import Mode, connect
from .settings import JobSettings

REPLY_WAIT_S = 10.0  # above saq's 1 s blocking dequeue


class JobsOff(Exception):
    """The jobs cannot run on this Redis (the message says why, never the URL or a password); `retry`: it may
    answer later (refused, authentication, TLS), not when it is a cluster."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


async def jobs_redis(url: str, mode: Mode, timeout_s: float, s: JobSettings) -> Redis:
    """A single-node client: the server's, or the Sentinel's current master. Raises JobsOff."""
    try:
        link = await connect(url, timeout_s=timeout_s, max_connections=2 * s.concurrency + 16, mode=mode,
                             wait_s=REPLY_WAIT_S)  # fmt: skip
    except RedisSetupError as exc:
        raise JobsOff(f"batch jobs are off: {exc}", retry=True) from None
    if link.cluster or not isinstance(link.client, Redis):
        await link.close()
        raise JobsOff(f"batch jobs need a single Redis or Sentinel; {link.where} is a Redis Cluster", retry=False)
    return link.client
