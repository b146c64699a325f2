"""The gateway's own CPU time on cache misses, without server sockets: one process calls the ASGI app directly.

    python -m bench.inmiss [--concurrency 16] [--calls 2000] [--rounds 3] [--no-redis]
                           [--upstream dashscope|openai|openai-base64]

It starts a redis-server and the stand-in upstream, builds the app with `create_app` as `serve` does (auth
off, REDIS_URL set unless `--no-redis`, access log on and written to /dev/null), then sends requests of 2
texts never seen before (base64 answers, as the benchmark's "miss, 2 new texts" row) from `--concurrency`
tasks at once, `--calls` per round, and prints the CPU time of this process per request for each round:
the gateway's whole miss path (service, flights, the upstream call over HTTP to the stand-in, the answer's
JSON, Redis round trips) without the server layer, the load generator's share of the cores or the socket
writes that wake it. On a shared machine this moves far less than req/s does (bench/README.md, "Miss path,
fifth measurement"); `python -m bench.run` and `python -m bench.ab --scenario miss` remain the measure of
throughput. `--upstream openai` sends the same requests to `text-embedding-3-small` (1,024 dimensions) through
the OpenAI-compatible wire format, which the gateway asks for floats; `openai-base64` sets that upstream's
`encoding_format: base64` (docs/deployments.md): the two differ only in the upstream answer's encoding.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging.config
import os
import time
import uuid
from typing import Any

import orjson

from bench.inproc import scope_of
from bench.stack import KEY, env, gateway_env, stack, team_config

TEXTS = ("miss a", "miss b")
OPENAI_MODEL = "text-embedding-3-small"
MODELS = {"dashscope": "text-embedding-v4", "openai": OPENAI_MODEL, "openai-base64": OPENAI_MODEL}


async def measure(concurrency: int, calls: int, rounds: int, model: str) -> list[tuple[float, float]]:
    """Per round: requests per second (wall clock) and CPU microseconds per request (this process)."""
    from app.config.settings import Settings
    from app.main import create_app

    app = create_app(Settings())
    run, numbers = uuid.uuid4().hex[:8], itertools.count()

    async def call() -> None:
        n = next(numbers)
        body = orjson.dumps(
            {
                "model": model,
                "input": [f"{t} {n} {run}" for t in TEXTS],
                "encoding_format": "base64",
                "dimensions": 1024,
            }
        )
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope_of(body), receive, send)
        headers = dict(sent[0]["headers"])
        if sent[0]["status"] != 200 or headers.get(b"x-cache-hits") != b"0":
            raise SystemExit(f"not a whole miss: {sent[0]['status']} {headers}")

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    async with app.router.lifespan_context(app):
        await asyncio.gather(*(worker(5) for _ in range(concurrency)))  # connections opened, code warm
        out = []
        for _ in range(rounds):
            each = max(1, calls // concurrency)
            t0, c0 = time.perf_counter(), time.process_time()
            await asyncio.gather(*(worker(each) for _ in range(concurrency)))
            done = each * concurrency
            out.append((done / (time.perf_counter() - t0), (time.process_time() - c0) / done * 1e6))
        return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.inmiss", description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    ap.add_argument("--calls", type=int, default=2000, help="requests per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-redis", action="store_true", help="the in-process cache and leases instead of Redis")
    ap.add_argument("--upstream", choices=sorted(MODELS), default="dashscope", help="the upstream's wire format")
    a = ap.parse_args(argv)
    with stack() as s:
        redis_url = s.redis()
        standin = s.standin()
        config = team_config(s.workdir)
        if a.upstream == "openai-base64":
            body = json.loads(config.read_text())
            openai = {"kind": "openai", "base_url": f"{standin.url}/v1", "api_key_env": "OPENAI_API_KEY"}
            body["upstreams"] = {"openai": {**openai, "encoding_format": "base64"}}
            config = s.workdir / "gateway-base64.yaml"
            config.write_text(json.dumps(body))  # JSON is YAML
        settings = env(
            **gateway_env(config),
            DASHSCOPE_API_KEY=KEY,
            DASHSCOPE_BASE_URL=f"{standin.url}/api/v1",
            OPENAI_API_KEY=KEY,
            OPENAI_BASE_URL=f"{standin.url}/v1",
            **({} if a.no_redis else {"REDIS_URL": redis_url}),
        )
        os.environ.clear()  # no config file or other key of the caller's environment
        os.environ.update(settings)
        from app.cli import log_config

        logging.config.dictConfig(log_config("info"))
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)  # the access log's lines (the gateway's own log lines too) go nowhere
        try:
            import uvloop

            rounds = uvloop.run(measure(a.concurrency, a.calls, a.rounds, MODELS[a.upstream]))
        finally:
            os.dup2(saved, 2)
    cpu = sorted(c for _, c in rounds)
    print(
        f"miss of {len(TEXTS)} new texts (base64, {a.concurrency} at once, upstream {a.upstream}, "
        f"{'in-process cache' if a.no_redis else 'Redis'}), in process: CPU {cpu[0]:.0f} us per request (best "
        f"round; median {cpu[len(cpu) // 2]:.0f}; rounds: {', '.join(f'{c:.0f}' for _, c in rounds)}); "
        f"{', '.join(f'{r:,.0f}' for r, _ in rounds)} req/s"
    )


if __name__ == "__main__":
    main()
