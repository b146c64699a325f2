"""connect() opens each Redis shape the tests can start (single, cluster, password, TLS, Sentinel) and names
the cause when it cannot: a wrong password, an untrusted certificate, a plain client on a TLS port."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from app.redis.cause import RedisSetupError, sentinel_parts
from app.redis.link import connect
from tests.support.processes import RedisServer
from tests.support.redisfarm import Cluster, SentinelSet, Single


def _open(url: str, **kw: object) -> None:
    """Opens and closes: for the failures."""

    async def go() -> None:
        link = await connect(url, timeout_s=2.0, max_connections=4, **kw)  # type: ignore[arg-type]
        await link.close()

    asyncio.run(go())


def _roundtrip(url: str, kind: str, **kw: object) -> list[object]:
    async def go() -> list[object]:
        link = await connect(url, timeout_s=2.0, max_connections=4, **kw)  # type: ignore[arg-type]
        assert link.kind == kind
        keys = [f"link:{{{i}}}" for i in range(24)]
        await link.set_many([(k, k.encode()) for k in keys], 60)
        got = await link.mget(keys)
        script = "local out = {} for i, k in ipairs(KEYS) do out[i] = redis.call('GET', k) end return out"
        evaluated = await link.eval_by_slot(script, keys, [])
        assert evaluated == got
        # more commands at once than connections: they wait for one instead of failing
        many = await asyncio.gather(*(link.mget([k]) for k in keys * 4))
        assert [m[0] for m in many] == got * 4
        await link.close()
        return [g.decode() if isinstance(g, bytes) else g for g in got]

    return asyncio.run(go())


def test_single_server(redis_server: RedisServer) -> None:
    assert _roundtrip(redis_server.url, "single") == [f"link:{{{i}}}" for i in range(24)]


def test_cluster_detected_from_one_node(redis_cluster: Cluster) -> None:
    assert _roundtrip(redis_cluster.url, "cluster") == [f"link:{{{i}}}" for i in range(24)]


def test_cluster_node_forced_single_names_the_misconfiguration(redis_cluster: Cluster) -> None:
    with pytest.raises(RedisSetupError, match="cluster misconfiguration") as err:
        _roundtrip(redis_cluster.url, "single", mode="single")
    assert "127.0.0.1" in str(err.value)


def test_password(redis_password: Single) -> None:
    assert _roundtrip(redis_password.url, "single") == [f"link:{{{i}}}" for i in range(24)]
    wrong = redis_password.url.replace(redis_password.password or "", "not-the-password")
    with pytest.raises(RedisSetupError, match="authentication failed") as err:
        _open(wrong)
    assert "not-the-password" not in str(err.value)
    with pytest.raises(RedisSetupError, match="authentication failed"):
        _open(f"redis://127.0.0.1:{redis_password.node.port}/0")


def test_tls(redis_tls: Single) -> None:
    trusted = f"{redis_tls.url}?ssl_ca_certs={redis_tls.ca}"
    assert _roundtrip(trusted, "single") == [f"link:{{{i}}}" for i in range(24)]
    with pytest.raises(RedisSetupError, match="TLS verification failed"):
        _open(redis_tls.url)
    with pytest.raises(RedisSetupError, match="a TLS-only server reached with redis://"):
        _open(redis_tls.url.replace("rediss://", "redis://"))


def test_sentinel(redis_sentinel: SentinelSet) -> None:
    assert _roundtrip(redis_sentinel.url, "single") == [f"link:{{{i}}}" for i in range(24)]
    assert redis_sentinel.master.client().get("link:{0}") == b"link:{0}"


def test_sentinel_url_parts() -> None:
    assert sentinel_parts("redis+sentinel://:pw@h1:26379,h2:26380/mymaster/2") == (
        [("h1", 26379), ("h2", 26380)],
        "mymaster",
        2,
        "pw",
    )
    with pytest.raises(RedisSetupError):
        sentinel_parts("redis+sentinel://h1:26379")


def test_commands_of_one_loop_turn_answer_each_caller(redis_server: RedisServer) -> None:
    """The cache's and the leases' commands of one loop turn share a round trip (turn.py): each caller gets
    its own replies in order, a command Redis refuses raises for its caller only, and a caller that stops
    waiting leaves the others' answers (and the connection) intact."""

    async def go() -> None:
        link = await connect(redis_server.url, timeout_s=2.0, max_connections=1)
        await link.set_many([("turn:text", b"x")], 60)

        async def leave() -> bool:
            task = asyncio.ensure_future(link.commands([("SET", "turn:gone", b"g", "EX", 60)]))
            await asyncio.sleep(0)  # its command is queued
            return task.cancel()

        claim, refused, read, left = await asyncio.gather(
            link.commands([("SET", "turn:a", b"1", "NX", "PX", 5000), ("SET", "turn:a", b"2", "NX", "PX", 5000)]),
            link.commands([("INCR", "turn:text")]),  # not an integer: an error reply
            link.mget(["turn:a", "turn:text", "turn:none"]),
            leave(),
            return_exceptions=True,
        )
        assert left is True
        assert claim == [b"OK", None]  # the second SET NX found the first's value
        assert isinstance(refused, ResponseError)
        assert read == [b"1", b"x", None]  # the same turn, in the callers' order
        assert await link.mget(["turn:gone", "turn:a"]) == [b"g", b"1"]  # sent although its caller left
        await link.close()

    asyncio.run(go())


def test_a_kept_connection_that_redis_closed_is_opened_again(redis_server: RedisServer) -> None:
    """The turn keeps its connections between round trips (turn.py): one that Redis closed meanwhile (a
    restart, its idle timeout) is connected again before the next round trip instead of failing it."""

    async def go() -> None:
        link = await connect(redis_server.url, timeout_s=2.0, max_connections=4)
        await link.set_many([("turn:kept", b"k")], 60)
        other = aioredis.Redis.from_url(redis_server.url)
        assert await other.client_kill_filter(_type="normal", skipme=True) >= 1
        await other.aclose()
        await asyncio.sleep(0.05)  # the close reaches the kept connection
        assert await link.mget(["turn:kept"]) == [b"k"]
        await link.close()

    asyncio.run(go())


def test_callers_that_give_up_anywhere_leave_every_connection_to_the_others(redis_server: RedisServer) -> None:
    """A script caller (turn.py `alone`, the team limits' calls) cancelled at any step of its round trip,
    taking a kept connection included, gives the connection back: after hundreds of them a pool of two
    still serves calls, none waits for a connection that nobody holds."""

    async def go() -> None:
        link = await connect(redis_server.url, timeout_s=2.0, max_connections=2, wait_s=1.0)
        script = "return redis.call('INCR', KEYS[1])"
        await link.run(script, ["turn:calls"], [])
        for i in range(400):
            task = asyncio.ensure_future(link.run(script, ["turn:calls"], []))
            for _ in range(i % 6):  # cancelled before, during and after taking its connection
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        replies = await asyncio.gather(*(link.run(script, ["turn:calls"], []) for _ in range(8)))
        assert len(set(replies)) == 8
        await link.close()

    asyncio.run(go())


def test_shared_round_trips_that_time_out_give_their_connections_back(own_redis: RedisServer) -> None:
    """A loop turn's round trip to a paused Redis ends at the Turn's one deadline (the exchange has no timer of
    its own: 248b9e8), for each of its callers, and its connection, left mid-reply (the one the turn kept), is
    closed and goes back: once Redis is resumed, both connections of a pool of two serve at once."""

    async def go() -> None:
        link = await connect(own_redis.url, timeout_s=0.25, max_connections=2)  # a reply, or a connection: 0.25 s
        await link.set_many([("turn:kept", b"k")], 60)  # the turn keeps this round trip's connection
        own_redis.pause()
        try:
            for _ in range(3):  # the kept connection's exchange, then new connections' setup, time out
                t0 = time.monotonic()
                ends = await asyncio.gather(
                    link.mget(["turn:kept"]), link.commands([("SET", "turn:w", b"w", "EX", 60)]), return_exceptions=True
                )
                assert [type(e) for e in ends] == [TimeoutError, TimeoutError]
                assert time.monotonic() - t0 < 1.0  # one deadline of 0.25 s: generous margin for a shared machine
        finally:
            own_redis.resume()
        script = "return redis.call('INCR', KEYS[1])"
        t0 = time.monotonic()
        replies = await asyncio.gather(*(link.run(script, ["turn:calls"], []) for _ in range(2)))  # one connection each
        assert sorted(replies) == [1, 2]
        assert time.monotonic() - t0 < 0.2  # neither waits for a connection nobody gave back (it would raise)
        await link.close()

    asyncio.run(go())


def test_a_close_that_outlasts_its_timeout_is_logged_not_raised(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py 8 raises TimeoutError when a connection's close takes longer than the connect timeout: here a
    connection with 64 MiB still to send to a paused Redis. The gateway closes its links at shutdown (and a
    probe at start): that close returns, with one warning that names the place, and raises nothing."""

    async def go() -> float:
        link = await connect(own_redis.url, timeout_s=0.25, max_connections=4)
        assert isinstance(link.client, aioredis.Redis)
        pool = link.client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        await conn.connect()
        own_redis.pause()
        try:
            conn._writer.write(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$67108864\r\n" + b"x" * (64 << 20))
            await pool.release(conn)
            started = asyncio.get_running_loop().time()
            await link.close()
            return asyncio.get_running_loop().time() - started
        finally:
            own_redis.resume()

    with caplog.at_level("WARNING", logger="embedding_gateway.redis"):
        took = asyncio.run(go())
    assert took < 2.0
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [f"closing Redis (127.0.0.1:{own_redis.port}): no answer in time"]


def test_reads_of_one_loop_turn_are_one_mget_and_a_reader_that_leaves_stops_none(redis_server: RedisServer) -> None:
    """A single server's reads of one loop turn go as one MGET after the turn's commands (turn.py `read`):
    each reader gets its own keys' values, a reader cancelled while it waits leaves the others' answers, and
    Redis runs one command for all of them."""

    async def go() -> None:
        link = await connect(redis_server.url, timeout_s=2.0, max_connections=2)
        await link.set_many([(f"read:{i}", str(i).encode()) for i in range(4)], 60)
        spy = aioredis.Redis.from_url(redis_server.url)
        before = (await spy.info("commandstats")).get("cmdstat_mget", {}).get("calls", 0)

        async def leave() -> bool:
            task = asyncio.ensure_future(link.mget(["read:0"]))
            await asyncio.sleep(0)  # its keys are queued
            return task.cancel()

        first, left, second, written = await asyncio.gather(
            link.mget(["read:0", "read:1"]),
            leave(),
            link.mget(["read:3", "read:none", "read:w"]),
            link.commands([("SET", "read:w", b"w", "EX", 60)]),
        )
        after = (await spy.info("commandstats")).get("cmdstat_mget", {}).get("calls", 0)
        await spy.aclose()
        assert left is True
        assert first == [b"0", b"1"]
        assert second == [b"3", None, b"w"]  # after the turn's commands
        assert written == [b"OK"]
        assert after - before == 1
        assert await link.mget(["read:2"]) == [b"2"]  # nothing left waiting
        await link.close()

    asyncio.run(go())
