"""Where a miss's time goes: py-spy's samples of `bench.inmiss`, split by the part of the miss path they are in.

    py-spy record -r 200 -f raw -o miss.raw -- python -m bench.inmiss --rounds 3
    python -m bench.missprofile miss.raw

py-spy is not a dependency (install it where you like; it reads the process from outside). Each sample's
stack goes to the first part below whose pattern it contains: the answer's parse before the upstream call
that holds it, the Redis client before the service that waits on it. Samples of the start (imports,
`create_app`, the lifespan) are counted apart and left out of the shares. py-spy samples the running
thread by wall clock: a socket write that wakes a peer on a machine with more runnable processes than cores
is counted at the write while the peer takes the core (bench/README.md, "Miss path, fifth measurement"),
so read the Redis and upstream shares as upper bounds and `bench.inmiss`'s CPU per request as the figure.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

START = "the start (imports, create_app, lifespan): not counted"
PARTS = (
    (START, r"create_app|_find_and_load|lifespan|^(?!.*Runner\.run)"),
    ("the upstream answer's JSON parse", r"parse_json"),
    ("float32 vectors from the answer", r"app/upstreams/answers\.py"),
    ("aiohttp's call", r"aiohttp/|app/upstreams/http\.py"),
    ("team limits", r"app/limits/"),
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
    a = ap.parse_args(argv)
    counts = split(a.raw.read_text().splitlines())
    work = sum(n for name, n in counts.items() if name != START)
    print("| part of the miss path | samples | share |\n|---|---|---|")
    for name, _ in PARTS:
        share = "-" if name == START else f"{100 * counts[name] / max(work, 1):.1f} %"
        print(f"| {name} | {counts[name]} | {share} |")


if __name__ == "__main__":
    main()
