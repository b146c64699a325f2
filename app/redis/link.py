"""RedisLink: one Redis deployment as the cache, the leases and the limits use it, whatever its shape.

`connect(url, ...)` opens a single server, a Redis Cluster or the master behind Sentinel:
- `redis://` and `rediss://` (TLS; `?ssl_ca_certs=FILE` trusts a private CA): the server is asked at start
  (`INFO cluster`); `cluster_enabled:1` opens redis-py's cluster client (it follows MOVED/ASK and failovers),
  anything else a plain client. `mode` forces one or the other (a setting, for a server unreachable at start).
- `redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]`: Sentinel names the master (and
  a new one after a failover); the password is the master's.

Connections: at most `max_connections` per worker (per node for a cluster); past that a command waits for
one, within its caller's timeout, rather than failing (a blocking pool, or a semaphore where redis-py's
cluster and Sentinel pools would raise). `cause(exc)` (rediscause.py) names why Redis failed without
echoing the URL or its password.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, Literal
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import (
    NoScriptError,
    RedisClusterException,
    RedisError,
)

from .cause import RedisSetupError, cause, place, sentinel_parts
from .turn import Command, Turn

log = logging.getLogger("embedding_gateway.redis")

Mode = Literal["auto", "cluster", "single"]
Client = aioredis.Redis | RedisCluster
FAILURES = (TimeoutError, RedisError, OSError)


@functools.cache
def sha1(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


async def _script(
    send: Callable[[Command], Awaitable[Any]], script: str, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """EVALSHA through `send`, and EVAL where the server does not know the script (NOSCRIPT)."""
    try:
        return await send(("EVALSHA", sha1(script), len(keys), *keys, *args))
    except NoScriptError:
        return await send(("EVAL", script, len(keys), *keys, *args))


class RedisLink:
    """A connected client and what the callers must know of it: cluster or not, and room for commands."""

    def __init__(self, client: Client, *, cluster: bool, where: str, max_in_flight: int | None = None) -> None:
        self.client = client
        self.cluster = cluster
        self.where = where
        self._room = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self.down_cause: str | None = None  # why it failed last (start-up or since); None while it answers
        self.last_reply = 0.0  # time.monotonic() of the last script reply: Redis answers while it moves
        self._refreshed = 0.0
        self._refresh: asyncio.Task[None] | None = None
        # A single server's (or Sentinel master's) cache and lease commands of a loop turn: one round trip. It
        # holds room() around each (`_using`'s failure handling is a cluster's, which has no Turn).
        using = self.room if self._room is not None else None
        self._turn = None if isinstance(client, RedisCluster) else Turn(client, using)

    @property
    def turned(self) -> bool:
        """Whether the commands and reads of a loop turn go together by themselves (a single server's Turn)."""
        return self._turn is not None

    @property
    def turn_deadline_s(self) -> float | None:
        """How long a Turn's round trip may take (the link's socket timeout); None: no Turn, or no bound."""
        return None if self._turn is None else self._turn.deadline

    @property
    def kind(self) -> str:
        return "cluster" if self.cluster else "single"

    def room(self) -> AbstractAsyncContextManager[Any]:
        """Hold one of the worker's connections for one command (a no-op where the pool itself waits)."""
        return self._room if self._room is not None else nullcontext()

    @contextlib.asynccontextmanager
    async def _using(self) -> AsyncIterator[None]:
        """room(); on a cluster, a failure also refreshes the slot map (a failover moved a master), at most
        once a second and in the background, so that the callers' next try goes to the new master."""
        async with self.room():
            try:
                yield
            except FAILURES:
                if isinstance(self.client, RedisCluster) and time.monotonic() - self._refreshed > 1.0:
                    self._refreshed = time.monotonic()
                    self._refresh = asyncio.create_task(self._remap(self.client))
                raise

    @staticmethod
    async def _remap(client: RedisCluster) -> None:
        """Now, and again a few seconds later: a replica is promoted only after the cluster's node timeout."""
        for delay in (0.0, 3.0, 3.0):
            await asyncio.sleep(delay)
            with contextlib.suppress(*FAILURES, RedisClusterException):
                await client.nodes_manager.initialize()

    async def recheck(self) -> None:
        """Before trying again after a failure: on a cluster, read the slot map afresh."""
        if isinstance(self.client, RedisCluster):
            with contextlib.suppress(*FAILURES, RedisClusterException):
                await self.client.nodes_manager.initialize()

    async def mget(self, keys: Sequence[str]) -> list[Any]:
        if self._turn is not None:
            return await self._turn.read(keys)
        async with self._using():
            if isinstance(self.client, RedisCluster):
                return list(await self.client.mget_nonatomic(list(keys)))
            return list(await self.client.mget(keys))

    async def set_many(self, entries: Sequence[tuple[str, bytes]], ttl_s: int) -> None:
        await self.commands([("SET", k, v, "EX", ttl_s) for k, v in entries])

    async def commands(self, commands: Sequence[Command]) -> list[Any]:
        """Redis's replies to single-key `commands` (b"OK" or None for a SET), in one round trip: on a single
        server together with the other callers' commands of this loop turn (turn.py), on a cluster one per
        node (redis-py's pipeline; a SET's reply is then True or None)."""
        if self._turn is not None:
            return await self._turn(commands)
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        async with self._using():
            return list(await pipe.execute())

    async def run(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run a script whose keys share one slot (EVALSHA, loading it where the node does not know it). On a
        single server or Sentinel master, in a round trip of its own on the Turn's connections (turn.py
        `alone`: no pool checkout, no task per send); on a cluster through redis-py."""
        if self._turn is not None:
            reply = await _script(self._turn.alone, script, keys, args)
        else:
            async with self._using():
                reply = await _script(lambda command: self.client.execute_command(*command), script, keys, args)
        self.last_reply = time.monotonic()
        return reply

    async def eval_by_slot(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> list[Any]:
        """Run a script that answers one value per key, on keys that may lie in many slots: one call on a
        single server, else one call per slot, pipelined per node. Returns the answers in key order."""
        if not isinstance(self.client, RedisCluster):
            return list(await self.run(script, keys, args))
        groups: dict[int, list[int]] = {}
        for i, k in enumerate(keys):
            groups.setdefault(self.client.keyslot(k), []).append(i)
        pipe = self.client.pipeline(transaction=False)
        for idx in groups.values():
            # EVAL, not EVALSHA: a replica promoted by a failover has no script cache (the body is small).
            pipe.execute_command("EVAL", script, len(idx), *(keys[i] for i in idx), *args)
        async with self._using():
            replies = await pipe.execute()
        out: list[Any] = [None] * len(keys)
        for idx, reply in zip(groups.values(), replies, strict=True):
            for i, value in zip(idx, reply, strict=True):
                out[i] = value
        return out

    async def ping(self) -> bool:
        async with self._using():
            return bool(await self.client.ping())

    async def close(self) -> None:
        await shut(self.client, self.where)


async def shut(client: Client, where: str) -> None:
    """Close `client`; a close that fails is logged, not raised: redis-py 8 raises TimeoutError when a
    connection's close outlasts the connect timeout (a paused or slow Redis with bytes still to take, a loop
    busy at shutdown), and whoever closes is done with the client (the gateway stopping, a probe answered)."""
    try:
        await client.aclose()
    except FAILURES as exc:
        log.warning("closing Redis (%s): %s", where, cause(exc))


def _options(timeout_s: float, wait_s: float | None = None) -> dict[str, Any]:
    """Connecting takes at most `timeout_s`; a reply is awaited `wait_s` (default: the same)."""
    return {
        "socket_timeout": wait_s or timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 0,
    }


def single(url: str, timeout_s: float, max_connections: int, wait_s: float | None = None) -> RedisLink:
    """A single server's link, opened without asking the server anything."""
    return RedisLink(_single(url, timeout_s, max_connections, wait_s), cluster=False, where=place(url))


def _single(url: str, timeout_s: float, max_connections: int, wait_s: float | None = None) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_s or timeout_s,  # the longest wait for a free connection
        retry=Retry(NoBackoff(), 0),
        **_options(timeout_s, wait_s),
    )
    return aioredis.Redis.from_pool(pool)


async def connect(
    url: str, *, timeout_s: float, max_connections: int, mode: Mode = "auto", wait_s: float | None = None
) -> RedisLink:
    """Open the deployment `url` names. Raises RedisSetupError (naming the cause) when it cannot be reached
    or is misconfigured; the caller decides whether to carry on without it."""
    where = place(url)
    if urlsplit(url).scheme.endswith("+sentinel"):
        link = _sentinel(url, timeout_s, max_connections, wait_s)
        await _check(link, where)
        return link
    cluster = mode == "cluster" or await _is_cluster(url, where, timeout_s)
    if mode == "single" and cluster:
        raise RedisSetupError(
            f"Redis at {where}: cluster misconfiguration: the server is a cluster node (cluster_enabled:1)"
            " but REDIS_CLUSTER=single"
        )
    if not cluster:
        link = RedisLink(_single(url, timeout_s, max_connections, wait_s), cluster=False, where=where)
        await _check(link, where)
        return link
    client = RedisCluster.from_url(
        url, max_connections=max_connections, retry=Retry(NoBackoff(), 0), **_options(timeout_s, wait_s)
    )
    link = RedisLink(client, cluster=True, where=where, max_in_flight=max_connections)
    try:
        await asyncio.wait_for(client.initialize(), timeout_s * 4)
    except FAILURES as exc:
        raise RedisSetupError(f"Redis cluster at {where}: {cause(exc)}") from None
    await _check(link, where)
    return link


async def open_link(
    url: str, role: str, *, timeout_s: float, max_connections: int, mode: Mode, wait_s: float | None = None
) -> RedisLink:
    """connect(), or, when Redis cannot be opened at start, a link that connects once Redis answers (the
    callers' bypass keeps requests off it meanwhile); the cause is logged once and kept for /readyz."""
    try:
        link = await connect(url, timeout_s=timeout_s, max_connections=max_connections, mode=mode, wait_s=wait_s)
    except RedisSetupError as exc:
        log.warning("%s: %s; carrying on without it until it answers", role, exc)
        if urlsplit(url).scheme.endswith("+sentinel"):
            link = _sentinel(url, timeout_s, max_connections, wait_s)
        else:
            client = _single(url, timeout_s, max_connections, wait_s)
            link = RedisLink(client, cluster=mode == "cluster", where=place(url))
        link.down_cause = str(exc)
        return link
    log.info("%s: Redis %s at %s", role, link.kind, link.where)
    return link


def _sentinel(url: str, timeout_s: float, max_connections: int, wait_s: float | None = None) -> RedisLink:
    sentinels, service, db, password = sentinel_parts(url)
    sentinel = Sentinel(sentinels, sentinel_kwargs=_options(timeout_s), **_options(timeout_s, wait_s))  # type: ignore[no-untyped-call]
    master = sentinel.master_for(service, db=db, password=password, max_connections=max_connections)
    return RedisLink(master, cluster=False, where=place(url), max_in_flight=max_connections)


async def _is_cluster(url: str, where: str, timeout_s: float) -> bool:
    probe = _single(url, timeout_s, 1)
    try:
        info = await asyncio.wait_for(probe.info("cluster"), timeout_s * 2)
    except FAILURES as exc:
        raise RedisSetupError(f"Redis at {where}: {cause(exc)}") from None
    finally:
        await shut(probe, where)  # a slow close of the probe is no setup error: its answer is in
    return int(info.get("cluster_enabled", 0)) == 1


async def _check(link: RedisLink, where: str) -> None:
    try:
        await link.ping()
    except FAILURES as exc:
        raise RedisSetupError(f"Redis ({link.kind}) at {where}: {cause(exc)}") from None
