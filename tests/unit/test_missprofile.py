"""bench.missprofile: each py-spy sample goes to the first part of the miss path its stack is in."""

from __future__ import annotations

from bench.missprofile import START, WRITES, split

LOOP = "main (bench/inmiss.py:103);Runner.run (asyncio/runners.py:118)"


def test_samples_go_to_the_first_part_their_stack_is_in() -> None:
    lines = [
        "<module> (app/main.py:1);_find_and_load (<frozen importlib._bootstrap>:1) 7",  # the start
        f"{LOOP};Batcher._call (app/flights/batcher.py:145);parse_json (app/upstreams/post.py:40) 3",
        f"{LOOP};Turn._run (app/redis/turn.py:75);read_response (redis/asyncio/connection.py:1) 2",
        f"{LOOP};Batcher._call (app/flights/batcher.py:145);Fleet.call (app/upstreams/fleet.py:137) 4",
        f"{LOOP};Handle._run (uvloop) 1",
        f"{LOOP};Turn._send (app/redis/turn.py:83);StreamWriter.writelines (asyncio/streams.py:346) 5",
        f"{LOOP};ClientRequest.send (aiohttp/a.py:1);StreamWriter._writelines (aiohttp/http_writer.py:116) 6",
        f"{LOOP};RedisLink.run (app/redis/link.py:140);Turn.alone (app/redis/turn.py:66) 8",
        "not a sample line",
    ]
    counts = split(lines)
    assert counts[WRITES] == 11  # the leaf is the socket write, whoever made it
    assert counts["team limits (admission, finish, their script round trips)"] == 8
    assert counts[START] == 7
    assert counts["the upstream answer's JSON parse"] == 3
    assert counts["Redis client (reads, claims, writes: app/redis, redis-py)"] == 2
    assert counts["miss bookkeeping (flights, fleet, guard, slots, usage)"] == 4
    assert counts["event loop and the rest"] == 1
    assert sum(counts.values()) == 36
