"""A Slowloris client, run as its own process by tests/test_connections_e2e.py.

Opens `--connections` connections to the gateway (in batches, as fast as the machine allows), sends
each one part of a request head and then one more header byte every `--drip` seconds, never finishing
it; `--body` sends a whole head announcing a body and then drips the body instead. Waits until every
connection is closed by the server or `--hold` seconds have passed, and prints one JSON line: how many
connections were opened, refused at connect, closed by the server (and after how long), still open.
Raises its own descriptor limit to the hard limit first.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time

import orjson


async def one(host: str, port: int, args: argparse.Namespace, t0: float, out: dict[str, list[float]]) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        out["connect_failed"].append(time.monotonic() - t0)
        return
    opened = time.monotonic()
    out["opened"].append(opened - t0)
    if args.body:
        writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
    else:
        writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nX-a: ")
    deadline = t0 + args.hold
    try:
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(4096), timeout=args.drip)
            except TimeoutError:
                writer.write(b"a")  # one more byte: a keep-alive timer restarted by every byte never fires
                continue
            if not data:
                out["closed_after"].append(time.monotonic() - opened)
                return
            out["answered"].append(time.monotonic() - opened)  # e.g. a 503 refusal; the close follows
    except OSError:
        out["closed_after"].append(time.monotonic() - opened)
        return
    finally:
        writer.close()
    out["still_open"].append(time.monotonic() - opened)


async def main(args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    out: dict[str, list[float]] = {
        k: [] for k in ("opened", "connect_failed", "closed_after", "answered", "still_open")
    }
    tasks = []
    for start in range(0, args.connections, args.batch):
        for _ in range(min(args.batch, args.connections - start)):
            tasks.append(asyncio.create_task(one(args.host, args.port, args, t0, out)))
        await asyncio.sleep(args.pause)
    print(orjson.dumps({"event": "all_started", "t": time.monotonic() - t0}).decode(), flush=True)
    await asyncio.gather(*tasks)
    closed = sorted(out["closed_after"])
    summary = {
        "event": "done",
        "opened": len(out["opened"]),
        "connect_failed": len(out["connect_failed"]),
        "closed_by_server": len(closed),
        "answered": len(out["answered"]),
        "still_open": len(out["still_open"]),
        "closed_after_max": closed[-1] if closed else None,
        "closed_after_median": closed[len(closed) // 2] if closed else None,
        "elapsed": time.monotonic() - t0,
    }
    print(orjson.dumps(summary).decode(), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between batches")
    parser.add_argument("--drip", type=float, default=1.0)
    parser.add_argument("--hold", type=float, default=60.0)
    parser.add_argument("--body", action="store_true", help="finish the head, drip the body")
    ns = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < ns.connections + 64:
        sys.exit(f"descriptor limit {hard} is too low for {ns.connections} connections")
    asyncio.run(main(ns))
