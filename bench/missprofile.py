"""Where a miss's time goes: py-spy's samples of `bench.inmiss`, split by the part of the miss path they are in.

    py-spy record -r 200 -f raw -o miss.raw -- python -m bench.inmiss --rounds 3
    python -m bench.missprofile miss.raw [--cpu-us 600]

py-spy is not a dependency (install it where you like; it reads the process from outside). Each sample's
stack goes to the first part below whose pattern it contains: the answer's parse before the upstream call
that holds it, the Redis client before the service that waits on it. Samples of the start (imports,
`create_app`, the lifespan) are counted apart and left out of the shares. py-spy samples the running
thread by wall clock: a socket write that wakes a peer on a machine with more runnable processes than cores
is counted at the write while the peer takes the core (bench/README.md, "Miss path, fifth measurement"):
those samples (a socket write that wakes Redis or the stand-in) are a part of their own, and the last column
leaves them out: each other part's share of the rest, times `--cpu-us` (`bench.inmiss`'s CPU per request,
the figure to trust) when given, is that part's estimated CPU per request. The team limits' scripts run in a
task of their own (limits/shared.py), whose stack starts at `RedisLink.run`: counted with the team limits.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

START = "the start (imports, create_app, lifespan): not counted"
WRITES = "socket writes that wake Redis or the stand-in (the call, and the wait while the peer takes the core)"
PARTS = (
    (START, r"create_app|_find_and_load|lifespan|^(?!.*Runner\.run)"),
    (WRITES, r"\b_?writelines \([^;]*$"),
    ("the upstream answer's JSON parse", r"parse_json"),
    ("float32 vectors from the answer", r"app/upstreams/answers\.py"),
    ("aiohttp's call", r"aiohttp/|app/upstreams/http\.py"),
    ("team limits (admission, finish, their script round trips)", r"app/limits/|RedisLink\.run"),
    ("Redis client (reads, claims, writes: app/redis, redis-py)", r"app/redis/|\(redis/"),
    ("miss bookkeeping (flights, fleet, guard, slots, usage)", r"app/flights/|app/upstreams/|app/usage/"),
    ("the request as a hit pays it (front, route, service, answer, log)", r"app/|starlette/|fastapi/"),
    ("event loop and the rest", r""),
)


def split(lines: list[str]) -> Counter[str]:
    """Samples per part, from py-spy's raw lines (`frame;frame;... count`)."""
    parts = [(name, re.compile(pattern)) for name, pattern in PARTS]
    out: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        name = next(name for name, pattern in parts if pattern.search(stack))
        out[name] += int(count)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.missprofile", description=__doc__.split("\n\n")[0])
    ap.add_argument("raw", type=Path, help="py-spy record -f raw output")
    ap.add_argument("--cpu-us", type=float, default=None, help="bench.inmiss's CPU us per request: shares in us")
    a = ap.parse_args(argv)
    counts = split(a.raw.read_text().splitlines())
    work = max(1, sum(n for name, n in counts.items() if name != START))
    cpu = max(1, work - counts[WRITES])
    last = "est. CPU us per request" if a.cpu_us else "share without the writes"
    print(f"| part of the miss path | samples | share | {last} |\n|---|---|---|---|")
    for name, _ in PARTS:
        share = "-" if name == START else f"{100 * counts[name] / work:.1f} %"
        rest = counts[name] / cpu
        alone = "-" if name in (START, WRITES) else f"{rest * a.cpu_us:.0f}" if a.cpu_us else f"{100 * rest:.1f} %"
        print(f"| {name} | {counts[name]} | {share} | {alone} |")


if __name__ == "__main__":
    main()
