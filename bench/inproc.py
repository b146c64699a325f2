"""The gateway's own time on a cache hit, without sockets: one process calls the ASGI app directly.

    python -m bench.inproc [--encoding float|base64] [--input texts|token-ids] [--calls 3000] [--rounds 5]
                           [--team limited|free] [--traces RATIO]

It starts the stand-in upstream (to fill the cache once), builds the app with `create_app` as `serve` does
(auth off, in-process cache, access log on and written to /dev/null), then sends the same request of 8
texts `--calls` times per round and prints the microseconds per call of each round. No server, client or
kernel is on the measured path, so the figure moves little between runs of a noisy machine: it is the one
to compare when changing the hot path (bench/README.md lists its history). `--input token-ids` sends the
same texts as tiktoken ids (cl100k_base), as LangChain does: the gateway decodes them to the same texts.
`--traces RATIO` turns OpenTelemetry traces on (parentbased_traceidratio at RATIO, exported over OTLP/HTTP
to bench/otlpsink.py on loopback). The full benchmark (`python -m bench.run`) remains the measure of
throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
    encoding: str, calls: int, rounds: int, token_ids: bool = False, auth: dict[str, str] = AUTH
) -> list[tuple[float, float]]:
    """Per round: wall-clock and CPU (this process, every thread) microseconds per call."""
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

    async def call() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope_of(body, auth), receive, send)
        return sent

    async with app.router.lifespan_context(app):
        for expected in (b"0", b"8"):  # the first call fills the cache, the second must be a whole hit
            start = (await call())[0]
            headers = dict(start["headers"])
            if start["status"] != 200 or headers.get(b"x-cache-hits") != expected:
                raise SystemExit(f"unexpected answer: {start['status']} {headers}")
        out = []
        for _ in range(rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(calls):
                await call()
                await asyncio.sleep(0)  # one loop turn per request, as under a server
            out.append(((time.perf_counter() - t0) / calls * 1e6, (time.process_time() - c0) / calls * 1e6))
        return out


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

            rounds = uvloop.run(measure(a.encoding, a.calls, a.rounds, a.input == "token-ids", auth))
        finally:
            os.dup2(saved, 2)
        print(
            f"cache hit of {len(TEXTS)} texts ({a.encoding}{', sent as token ids' if a.input == 'token-ids' else ''}), "
            "in process: "
            f"{min(w for w, _ in rounds):.1f} us per call (best round; rounds: "
            f"{', '.join(f'{w:.1f}' for w, _ in rounds)}); CPU {min(c for _, c in rounds):.1f} us per call (best "
            f"round; median {sorted(c for _, c in rounds)[len(rounds) // 2]:.1f})"
        )
    finally:
        for proc in procs:
            stop(proc)
        workdir.cleanup()


if __name__ == "__main__":
    main()
