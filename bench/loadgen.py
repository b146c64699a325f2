"""A small HTTP/1.1 load generator: N keep-alive connections, each sending one request at a time for a
fixed duration, over raw asyncio protocols (no HTTP client library on the measuring path).

Run as its own process so that it never shares an event loop (or a GIL) with the server it measures:

    python -m bench.loadgen < job.json > result.json

The job: {"host", "port", "path", "bodies": [str, ...], "connections", "duration_s", "warmup_s",
"headers": {...}, "unique": bool}. Bodies are cycled; when `unique` is set, every `@@N@@` in a body is
replaced by a number no other request of this run used (to make cache misses). The result: requests,
errors, statuses, requests_per_s and latency percentiles in milliseconds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MARK = b"@@N@@"


@dataclass
class Job:
    host: str
    port: int
    path: str
    bodies: list[str]
    connections: int = 1
    duration_s: float = 2.0
    warmup_s: float = 0.3
    headers: dict[str, str] = field(default_factory=dict)
    unique: bool = False
    max_requests: int = 0  # 0: no cap; otherwise stop after this many measured requests in all


class Requests:
    """Pre-built request bytes, cycled; `@@N@@` replaced by a unique counter when asked."""

    def __init__(self, job: Job) -> None:
        self.unique = job.unique
        self.run = uuid.uuid4().hex[:8].encode()
        self.counter = itertools.count()
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        for body in job.bodies:
            raw = body.encode()
            self.bodies.append(raw)
            head = [f"POST {job.path} HTTP/1.1", f"Host: {job.host}:{job.port}", "Content-Type: application/json"]
            head += [f"{k}: {v}" for k, v in job.headers.items()]
            self.heads.append(("\r\n".join(head) + "\r\n").encode())
        self.cycle = itertools.cycle(range(len(self.bodies)))

    def next(self) -> bytes:
        i = next(self.cycle)
        body = self.bodies[i]
        if self.unique:
            body = body.replace(MARK, self.run + b"-" + str(next(self.counter)).encode())
        return self.heads[i] + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


class Conn(asyncio.Protocol):
    """One keep-alive connection: write a request, read exactly one response (Content-Length framed)."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.need = -1
        self.status = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self._fail(ValueError("response without content-length"))
                return
            stop = head.find(b"\r\n", at + 2)
            self.need = end + 4 + int(head[at + 17 : stop if stop >= 0 else None])
        if len(self.buf) >= self.need:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(self.status)
            del self.buf[: self.need]
            self.need = -1

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def request(self, raw: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter


async def _connect(job: Job) -> Conn:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(Conn, job.host, job.port)
    return proto


async def _worker(job: Job, reqs: Requests, t_start: float, t_end: float, out: dict[str, Any]) -> None:
    conn = await _connect(job)
    lat: list[float] = out["latencies"]
    statuses: Counter[int] = out["statuses"]
    clock = time.perf_counter
    while True:
        if job.max_requests and out["measured"] >= job.max_requests:
            break
        raw = reqs.next()
        t0 = clock()
        if t0 >= t_end:
            break
        try:
            status = await conn.request(raw)
        except (ConnectionError, OSError, ValueError):
            out["errors"] += 1
            if conn.transport is not None:
                conn.transport.close()
            conn = await _connect(job)
            continue
        t1 = clock()
        if t0 >= t_start:
            lat.append(t1 - t0)
            statuses[status] += 1
            out["measured"] += 1
        if conn.closed:
            conn = await _connect(job)
    if conn.transport is not None:
        conn.transport.close()


def _pct(sorted_lat: list[float], q: float) -> float:
    if not sorted_lat:
        return float("nan")
    return sorted_lat[min(len(sorted_lat) - 1, int(q * len(sorted_lat)))] * 1000


async def run(job: Job) -> dict[str, Any]:
    reqs = Requests(job)
    out: dict[str, Any] = {"latencies": [], "statuses": Counter(), "errors": 0, "measured": 0}
    now = time.perf_counter()
    t_start, t_end = now + job.warmup_s, now + job.warmup_s + job.duration_s
    await asyncio.gather(*(_worker(job, reqs, t_start, t_end, out) for _ in range(job.connections)))
    elapsed = min(time.perf_counter(), t_end) - t_start
    lat = sorted(out["latencies"])
    return {
        "requests": len(lat),
        "errors": out["errors"],
        "statuses": {str(k): v for k, v in out["statuses"].items()},
        "requests_per_s": len(lat) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": _pct(lat, 0.50),
        "p90_ms": _pct(lat, 0.90),
        "p99_ms": _pct(lat, 0.99),
        "mean_ms": (sum(lat) / len(lat) * 1000) if lat else float("nan"),
    }


def main() -> None:
    job = Job(**json.load(sys.stdin))
    try:
        import uvloop

        json.dump(uvloop.run(run(job)), sys.stdout)
    except ImportError:  # pragma: no cover
        json.dump(asyncio.run(run(job)), sys.stdout)


if __name__ == "__main__":
    main()
