"""Production's load shapes against the server edge, each run as its own process by tests/e2e/test_edge_load.py.

- `stall`: `--connections` connections each ask for the answer of `--body-file` (an OpenAI embeddings
  request) and do not read it. After `--hold` seconds, or once `--release-file` exists, each connection
  reads what it can: a connection is counted `complete` when the whole answer came (the chunked terminator), else
  `cut` (the server closed or aborted it). With `--distinct`, each connection's texts end in its own number:
  no two connections ask for the same vectors.
- `keepalive`: `--connections` clients, each on one kept-alive connection, sending the request of
  `--body-file` every `--interval` seconds for `--duration` seconds and reading each answer. A request is
  `lost` when its connection fails before its answer while no earlier answer on that connection said
  `Connection: close`; after an answer saying it, the client opens a new connection (`reconnects`).

Sends the key in EG_TEST_GATEWAY_KEY when set. Prints one JSON line of counts and latencies. Raises its
own descriptor limit to the hard limit first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import time
from pathlib import Path

import orjson

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None  # type: ignore[assignment]


KEY_ENV = "EG_TEST_GATEWAY_KEY"  # the gateway's key, sent as a bearer token when set (not on the command line)


def request_bytes(path: str, body: bytes) -> bytes:
    key = os.environ.get(KEY_ENV)
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + (f"Authorization: Bearer {key}\r\n" if key else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def wait_for_file(path: str) -> None:
    while not Path(path).exists():
        time.sleep(0.2)


async def watch(path: str | None, released: asyncio.Event) -> None:
    if path:
        await asyncio.to_thread(wait_for_file, path)
        released.set()


async def stall_one(args: argparse.Namespace, req: bytes, out: dict[str, int], released: asyncio.Event) -> None:
    try:
        reader, writer = await asyncio.open_connection(args.host, args.port, limit=1 << 20)
    except OSError:
        out["connect_failed"] += 1
        return
    writer.transport.set_write_buffer_limits(high=1 << 22)
    writer.write(req)
    out["sent"] += 1
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(released.wait(), timeout=args.hold)
    got = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(1 << 20), timeout=2)
            if not chunk:
                break
            got = (got + chunk)[-16:]
    except (OSError, TimeoutError):
        pass
    writer.close()
    out["complete" if got.endswith(b"0\r\n\r\n") else "cut"] += 1


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, the answer said Connection: close); raises on a broken connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() == "close"


async def keepalive_one(args: argparse.Namespace, req: bytes, out: dict[str, list[float] | int], t0: float) -> None:
    end = t0 + args.duration
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    used = 0  # requests sent on the current connection
    next_at = time.monotonic()
    while next_at < end and time.monotonic() < end:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at += args.interval
        if conn is None:
            try:
                conn = await asyncio.open_connection(args.host, args.port)
                used = 0
            except OSError:
                out["connect_failed"] += 1  # type: ignore[operator]
                continue
        reader, writer = conn
        start = time.monotonic()
        out["sent"] += 1  # type: ignore[operator]
        used += 1
        try:
            writer.write(req)
            status, closing = await asyncio.wait_for(read_answer(reader), timeout=args.answer_timeout)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            out["lost"] += 1  # type: ignore[operator]
            kind = f"lost_{type(exc).__name__}_{'first' if used == 1 else 'later'}"
            out[kind] = int(out.get(kind, 0)) + 1  # type: ignore[call-overload]
            writer.close()
            conn = None
            continue
        out["latencies"].append(time.monotonic() - start)  # type: ignore[union-attr]
        out["ok" if status == 200 else "not_ok"] += 1  # type: ignore[operator]
        if closing:
            out["reconnects"] += 1  # type: ignore[operator]
            writer.close()
            conn = None
    if conn is not None:
        conn[1].close()


def distinct(path: str, body: bytes, n: int) -> bytes:
    doc = orjson.loads(body)
    doc["input"] = [f"{text} #{n}" for text in doc["input"]]
    return request_bytes(path, orjson.dumps(doc))


async def run(args: argparse.Namespace, body: bytes) -> dict[str, object]:
    req = request_bytes(args.path, body)
    t0 = time.monotonic()
    if args.mode == "stall":
        counts = dict.fromkeys(("connect_failed", "sent", "complete", "cut"), 0)
        released = asyncio.Event()
        watcher = asyncio.create_task(watch(args.release_file, released))
        reqs = [distinct(args.path, body, n) if args.distinct else req for n in range(args.connections)]
        await asyncio.gather(*(stall_one(args, r, counts, released) for r in reqs))
        watcher.cancel()
        return {"mode": "stall", **counts, "elapsed": time.monotonic() - t0}
    out: dict[str, list[float] | int] = {
        "connect_failed": 0, "sent": 0, "ok": 0, "not_ok": 0, "lost": 0, "reconnects": 0, "latencies": []
    }  # fmt: skip
    tasks = []
    for _ in range(args.connections):
        tasks.append(asyncio.create_task(keepalive_one(args, req, out, t0)))
        await asyncio.sleep(args.interval / args.connections)  # the clients start spread over one interval
    await asyncio.gather(*tasks)
    lat = sorted(out.pop("latencies"))  # type: ignore[arg-type]
    p = {f"p{q}_ms": round(lat[min(len(lat) - 1, int(len(lat) * q / 100))] * 1000, 1) for q in (50, 99)} if lat else {}
    return {"mode": "keepalive", **out, **p, "elapsed": time.monotonic() - t0}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("stall", "keepalive"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/embeddings")
    parser.add_argument("--body-file", required=True)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--hold", type=float, default=10.0, help="stall: seconds before reading, at most")
    parser.add_argument("--release-file", help="stall: read as soon as this file exists")
    parser.add_argument("--distinct", action="store_true", help="stall: each connection its own texts")
    parser.add_argument("--duration", type=float, default=20.0, help="keepalive: seconds of requests")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--answer-timeout", type=float, default=30.0)
    ns = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if uvloop is not None:
        uvloop.install()
    print(orjson.dumps(asyncio.run(run(ns, Path(ns.body_file).read_bytes()))).decode(), flush=True)
