"""The gateway's own time on a cache hit, without sockets: one process calls the ASGI app directly.

    python -m bench.inproc [--encoding float|base64] [--input texts|token-ids] [--calls 3000] [--rounds 5]
                           [--team limited|free] [--traces RATIO] [--via app|server] [--settle]

It starts the stand-in upstream (to fill the cache once), builds the app with `create_app` as `serve` does
(auth off, in-process cache, access log on and written to /dev/null), then sends the same request of 8
texts `--calls` times per round and prints the microseconds per call of each round, and the median time from
a request's start to its answer's last byte handed on ("to the answer's write": the app's last `send`, or,
`--via server`, the transport's write). No server, client or kernel is on the measured path, so the figure
moves little between runs of a noisy machine: it is the one to compare when changing the hot path
(bench/README.md lists its history). `--input token-ids` sends the same texts as tiktoken ids (cl100k_base),
as LangChain does: the gateway decodes them to the same texts.
`--traces RATIO` turns OpenTelemetry traces on (parentbased_traceidratio at RATIO, exported over OTLP/HTTP
to bench/otlpsink.py on loopback). `--via server` sends the request as HTTP/1.1 bytes through the server
layer too (the gateway's protocol, app/server/protocol.py, over uvicorn's httptools protocol and ASGI cycle,
writing into a transport that keeps nothing), then does the same for the raw-ASGI floor (bench/baseline.py
under uvicorn's own httptools protocol, answering a body of the gateway's answer's size): the two figures
to compare for the server layer's share, still without sockets. The full benchmark (`python -m bench.run`)
remains the measure of throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.procs import free_port, stop, wait_http
from bench.stack import AUTH, AUTH_FREE, KEY, ROOT, env, gateway_env, team_config

TEXTS = [f"cached text {i} of the in-process benchmark" for i in range(8)]
Rounds = list[tuple[float, float, float]]  # per round: wall-clock and CPU us per call, median us to the write


class Sink(asyncio.Transport):
    """The server's side of a connection whose client takes every byte at once: resolves a future once one
    whole answer came (its head's Content-Length told where it ends; the length of an answer varies with its
    rate-limit headers' digits), `keep`: with the answer kept, to be checked."""

    def __init__(self) -> None:
        super().__init__()
        self.left = -1  # body bytes of the current answer still to come; -1: its head is next
        self.head = bytearray()  # the head's bytes so far, while it came in parts
        self.done: asyncio.Future[None] | None = None
        self.kept: bytearray | None = None
        self.closed = False
        self.done_at = 0.0  # perf_counter when the answer's last byte was written

    def expect(self, keep: bool = False) -> asyncio.Future[None]:
        """A future resolved once the next whole answer is written."""
        self.done = asyncio.get_running_loop().create_future()
        self.kept = bytearray() if keep else None
        return self.done

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.kept is not None:
            self.kept += data
        if not data:  # the end of an answer's body (uvicorn's protocol writes it empty)
            return
        if self.left < 0:  # (part of) a head, maybe with body bytes after it
            raw = data if isinstance(data, bytes | bytearray) and not self.head else bytes(self.head + data)
            end = raw.find(b"\r\n\r\n") + 4
            if end < 4:
                self.head = bytearray(raw)
                return
            self.head = bytearray()
            self.left = declared_length(raw[:end]) - (len(raw) - end)
        else:
            self.left -= len(data)
        if self.left == 0:
            self.left = -1
            self.done_at = time.perf_counter()
            if self.done is not None and not self.done.done():
                self.done.set_result(None)

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.write(part)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)


def http_request(path: bytes, body: bytes, auth: dict[str, str]) -> bytes:
    """The request as a client writes it (the same head as scope_of's)."""
    head = b"POST %s HTTP/1.1\r\nhost: 127.0.0.1:8000\r\ncontent-type: application/json\r\n" % path
    head += b"content-length: %d\r\nauthorization: %s\r\n\r\n" % (len(body), auth["Authorization"].encode())
    return head + body


async def answered(protocol: Any, sink: Sink, request: bytes) -> bytes:
    """The whole answer to `request` (a miss waits for the upstream call)."""
    done = sink.expect(keep=True)
    protocol.data_received(request)
    async with asyncio.timeout(30.0):
        await done
    assert sink.kept is not None
    return bytes(sink.kept)


async def rounds_through(
    protocol: Any, sink: Sink, request: bytes, calls: int, rounds: int, settle: bool = False
) -> Rounds:
    """`rounds` of `calls` requests, one at a time (a client on one connection), each awaited to its answer's last byte;
    per call also the time from its bytes handed to the protocol to its answer's last byte handed to the
    transport. Each request is sent as soon as the previous answer is written, as a client on loopback does
    (bench.run's): what the loop queued behind that answer (callbacks, flushes) counts in the next one's
    time, as it does in the benchmark's one-connection p50 (bench/README.md, seventh measurement). `settle`:
    the loop runs that first, as for a client slower than that work."""
    out = []
    for _ in range(rounds):
        to_write = []
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            done = sink.expect()
            t = time.perf_counter()
            protocol.data_received(request)
            await asyncio.sleep(0)  # one loop turn per request, as under a server (uvicorn's task runs in it)
            await done
            to_write.append(sink.done_at - t)
            if settle:
                await asyncio.sleep(0)
        cpu = (time.process_time() - c0) / calls * 1e6
        out.append(((time.perf_counter() - t0) / calls * 1e6, cpu, statistics.median(to_write) * 1e6))
    return out


def declared_length(answer: bytes | bytearray) -> int:
    """The answer's Content-Length (-1 while its head is incomplete or has none)."""
    head, sep, _ = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:] if sep else ():
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return -1


def body_length(answer: bytes | bytearray) -> int:
    return len(answer.partition(b"\r\n\r\n")[2])


async def floor_rounds(size: int, calls: int, rounds: int, auth: dict[str, str], settle: bool = False) -> Rounds:
    """The raw-ASGI floor (bench/baseline.py under uvicorn's httptools protocol, as bench.run serves it)
    answering `size` bytes of body to the same request."""
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from bench.baseline import Baseline

    config = Config(app=Baseline(), http="httptools", access_log=False, lifespan="off", log_config=None)
    config.load()
    protocol = HttpToolsProtocol(config, ServerState(), {})
    sink = Sink()
    protocol.connection_made(sink)
    body = orjson.dumps({"model": "text-embedding-v4", "input": TEXTS})
    request = http_request(b"/?size=%d" % size, body, auth)
    answer = await answered(protocol, sink, request)
    if body_length(answer) != size:
        raise SystemExit(f"the floor answered {body_length(answer)} bytes, not {size}")
    return await rounds_through(protocol, sink, request, calls, rounds, settle)


def scope_of(body: bytes, auth: dict[str, str] = AUTH) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/embeddings",
        "raw_path": b"/v1/embeddings",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", auth["Authorization"].encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def measure(
    encoding: str,
    calls: int,
    rounds: int,
    token_ids: bool = False,
    auth: dict[str, str] = AUTH,
    via: str = "app",
    settle: bool = False,
) -> tuple[Rounds, Rounds]:
    """Per round: wall-clock and CPU (this process, every thread) microseconds per call; with `via` "server",
    the gateway's through its server layer, then the floor's the same way (else no floor rounds)."""
    from app.config.settings import Settings
    from app.main import create_app

    app = create_app(Settings())
    inputs: list[Any] = TEXTS
    if token_ids:
        from app.inputs import tokentext

        enc = tokentext.encoding(tokentext.DEFAULT_ENCODING)
        assert enc is not None
        inputs = [enc.encode_ordinary(t) for t in TEXTS]
    body = orjson.dumps({"model": "text-embedding-v4", "input": inputs, "encoding_format": encoding})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    last_sent = 0.0  # perf_counter at the answer's last message

    async def call() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal last_sent
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                last_sent = time.perf_counter()

        await app(scope_of(body, auth), receive, send)
        return sent

    async with app.router.lifespan_context(app) as state:
        if via == "server":
            return await measure_server(app, state or {}, body, calls, rounds, auth, settle)
        for expected in (b"0", b"8"):  # the first call fills the cache, the second must be a whole hit
            start = (await call())[0]
            headers = dict(start["headers"])
            if start["status"] != 200 or headers.get(b"x-cache-hits") != expected:
                raise SystemExit(f"unexpected answer: {start['status']} {headers}")
        out = []
        for _ in range(rounds):
            to_write = []
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(calls):
                t = time.perf_counter()
                await call()
                to_write.append(last_sent - t)
                await asyncio.sleep(0)  # one loop turn per request, as under a server
            cpu = (time.process_time() - c0) / calls * 1e6
            out.append(((time.perf_counter() - t0) / calls * 1e6, cpu, statistics.median(to_write) * 1e6))
        return out, []


async def measure_server(
    app: Any, state: Any, body: bytes, calls: int, rounds: int, auth: dict[str, str], settle: bool = False
) -> tuple[Rounds, Rounds]:
    """The gateway's rounds through its server layer (configured as `serve` does), then the floor's."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from app.server.protocol import GatewayProtocol

    config = Config(
        app=app, http=GatewayProtocol, access_log=False, proxy_headers=False, server_header=False, log_config=None
    )
    config.load()
    protocol = GatewayProtocol(config, ServerState(), dict(state))
    sink = Sink()
    protocol.connection_made(sink)
    request = http_request(b"/v1/embeddings", body, auth)
    for expected in (b"x-cache-hits: 0", b"x-cache-hits: 8"):  # the first fills the cache, the second must hit
        answer = await answered(protocol, sink, request)
        if not answer.startswith(b"HTTP/1.1 200") or expected not in answer:
            raise SystemExit(f"unexpected answer: {answer[:300]!r}")
    gateway = await rounds_through(protocol, sink, request, calls, rounds, settle)
    return gateway, await floor_rounds(body_length(answer), calls, rounds, auth, settle)


def summary(rounds: Rounds) -> str:
    walls = ", ".join(f"{w:.1f}" for w, _, _ in rounds)
    cpus, writes = sorted(c for _, c, _ in rounds), sorted(t for *_, t in rounds)
    return (
        f"{min(w for w, _, _ in rounds):.1f} us per call (best round; rounds: {walls}); "
        f"CPU {cpus[0]:.1f} us per call (best round; median {cpus[len(rounds) // 2]:.1f}); "
        f"to the answer's write {writes[0]:.1f} us (p50, best round; median {writes[len(rounds) // 2]:.1f})"
    )


def trace_env(endpoint: str, ratio: float) -> dict[str, str]:
    """The OpenTelemetry variables of a gateway with traces on, sampled at `ratio`, exported to `endpoint`."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(ratio),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.inproc")
    ap.add_argument("--encoding", choices=("float", "base64"), default="float")
    ap.add_argument("--input", choices=("texts", "token-ids"), default="texts")
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--team", choices=("limited", "free"), default="limited", help="the team with limits or without")
    ap.add_argument("--traces", type=float, default=None, metavar="RATIO", help="traces on, sampled at RATIO")
    ap.add_argument("--via", choices=("app", "server"), default="app", help="the ASGI app alone, or through the server")
    ap.add_argument(
        "--settle",
        action="store_true",
        help="--via server: the next request after what the loop queued behind an answer",
    )
    a = ap.parse_args(argv)
    port, sink_port = free_port(), free_port()
    helpers = [[sys.executable, "-m", "bench.standin", "--port", str(port), "--api-key", KEY]]
    if a.traces is not None:
        helpers.append([sys.executable, "-m", "bench.otlpsink", "--port", str(sink_port)])
    procs = [
        subprocess.Popen(args, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for args in helpers
    ]
    standin = procs[0]
    workdir = tempfile.TemporaryDirectory(prefix="bench-inproc-")
    try:
        wait_http(f"http://127.0.0.1:{port}/_stats", standin, 40.0)
        traces = {}
        if a.traces is not None:
            wait_http(f"http://127.0.0.1:{sink_port}/_stats", procs[1], 40.0)
            traces = trace_env(f"http://127.0.0.1:{sink_port}", a.traces)
        settings_env = env(
            **gateway_env(team_config(Path(workdir.name))),
            DASHSCOPE_API_KEY=KEY,
            DASHSCOPE_BASE_URL=f"http://127.0.0.1:{port}/api/v1",
            **traces,
        )
        os.environ.clear()  # no REDIS_URL, config file or other key of the caller's environment
        os.environ.update(settings_env)
        import logging.config

        from app.cli import log_config

        logging.config.dictConfig(log_config("info"))
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)  # the access log's lines (the gateway's own log lines too) go nowhere
        try:
            import uvloop

            auth = AUTH_FREE if a.team == "free" else AUTH

            run = measure(a.encoding, a.calls, a.rounds, a.input == "token-ids", auth, a.via, a.settle)
            rounds, floor = uvloop.run(run)
        finally:
            os.dup2(saved, 2)
        how = "in process" if a.via == "app" else "in process, through the server layer"
        print(
            f"cache hit of {len(TEXTS)} texts ({a.encoding}{', sent as token ids' if a.input == 'token-ids' else ''}), "
            f"{how}: {summary(rounds)}"
        )
        if floor:
            print(f"the raw-ASGI floor, the same way: {summary(floor)}")
    finally:
        for proc in procs:
            stop(proc)
        workdir.cleanup()


if __name__ == "__main__":
    main()
