"""The stores built from the settings: the vector cache (in-process, or Redis behind a hot LRU) and the
limits (Redis shared by every replica, or this process alone)."""

from __future__ import annotations

from ..cache.hot import HotCache
from ..cache.lru import MemoryCache
from ..cache.redis import RedisCache
from ..cache.store import VectorCache
from ..config.settings import Settings
from ..limits.census import Census
from ..limits.decider import LimitDecider
from ..limits.local import LocalStore
from ..limits.shared import RedisStore
from ..metrics import Metrics
from ..redis.bypass import Bypass
from ..redis.link import RedisLink, open_link


async def open_cache(settings: Settings, metrics: Metrics) -> VectorCache:
    s = settings
    if s.redis_url is None:
        return MemoryCache(s.cache_local_max_bytes, metrics)
    link = await open_link(s.redis_url.get_secret_value(), "cache", timeout_s=s.redis_timeout_s,
                           max_connections=s.redis_max_connections, mode=s.redis_cluster)  # fmt: skip
    redis = RedisCache(link, ttl_s=s.cache_ttl_s, timeout_s=s.redis_timeout_s, retry_after_s=s.redis_retry_after_s,
                       metrics=metrics)  # fmt: skip
    return HotCache(redis, s.cache_hot_max_bytes) if s.cache_hot_max_bytes else redis


async def open_limits(settings: Settings, metrics: Metrics) -> LimitDecider:
    """Redis (limits_redis_url, else REDIS_URL) shared by every replica, or this process alone."""
    s, url, link = settings, settings.limits_url(), None
    if url is not None:
        link = await open_link(url, "limits", timeout_s=s.limits_timeout_s, max_connections=s.limits_max_connections,
                               mode=s.redis_cluster, wait_s=s.request_deadline_s)  # fmt: skip
    return limits_on(link, s, metrics)


def limits_on(link: RedisLink | None, s: Settings, metrics: Metrics) -> LimitDecider:
    """The limits on `link` (None: this process alone); limits that fall back to this process are divided by
    the number of live processes (heartbeats in Redis)."""
    census = Census(link, namespace=s.cache_namespace, floor=s.replicas * s.workers,
                    interval_s=s.limits_heartbeat_s, metrics=metrics)  # fmt: skip
    shared = None
    if link is not None:  # a team's block in a process is a share of what is left among the live processes
        shared = RedisStore(link, namespace=s.cache_namespace, window_s=s.limits_window_s, lease_s=s.limits_lease_s,
                            timeout_s=s.limits_timeout_s, budget_s=s.request_deadline_s,
                            processes=lambda: census.shares)  # fmt: skip
    local = LocalStore(window_s=s.limits_window_s, lease_s=s.limits_lease_s)
    bypass = Bypass("redis limits", s.limits_retry_after_s, metrics)
    return LimitDecider(shared, local, census=census, policy=s.limits_on_redis_failure, breaker=bypass)
