"""The benchmark's processes: redis-server, the stand-in upstream, the ASGI baseline and the gateway, each
on a free loopback port, each stopped at the end (`with stack() as s: ...`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.config.settings import CONFIG_ENV
from bench.procs import free_port, wait_http, wait_redis
from bench.procs import stop as stop_process

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-bench"  # the stand-in upstream's key
# The benchmark's team: auth and limits are on in every measured scenario (nothing gets faster by doing
# less). Its limits are far above any load here, so every request is admitted, and every admission is made.
GATEWAY_KEY = "sk-bench-team-0123456789abcdef"  # a benchmark value, not a secret
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}
TEAM_LIMITS = {"rpm": 10**8, "tpm": 10**13}
# A second team without limits: its hits make no admission call, the split the report shows in one row.
FREE_KEY = "sk-bench-free-0123456789abcdef"
AUTH_FREE = {"Authorization": f"Bearer {FREE_KEY}"}


def team_config(workdir: Path) -> Path:
    """The gateway's config file: the team keyed by GATEWAY_KEY, with TEAM_LIMITS, and one without limits."""
    from app.teams.keys import hash_key

    path = workdir / "gateway-team.yaml"
    if not path.exists():
        teams = {
            "bench": {"keys": [hash_key(GATEWAY_KEY)], **TEAM_LIMITS},
            "bench-free": {"keys": [hash_key(FREE_KEY)]},
        }
        path.write_text(json.dumps({"teams": teams}))  # JSON is YAML
    return path


def upstream_env(standin: Proc, redis_url: str) -> dict[str, str]:
    """A gateway's upstreams (both wire formats) at the stand-in, and its Redis."""
    return {
        "DASHSCOPE_API_KEY": KEY,
        "DASHSCOPE_BASE_URL": standin.url + "/api/v1",
        "OPENAI_API_KEY": KEY,
        "OPENAI_BASE_URL": standin.url + "/v1",
        "REDIS_URL": redis_url,
    }


def gateway_env(config: Path, **extra: str) -> dict[str, str]:
    """What every benchmarked gateway runs with: auth required, the team's config, the local model off
    (not benchmarked; its background load, importing torch, would share the cores)."""
    return {"GATEWAY_AUTH": "required", "LOCAL_MODEL": "false", CONFIG_ENV: str(config), **extra}


@dataclass
class Proc:
    name: str
    url: str
    proc: subprocess.Popen[bytes]


def wait_ready(p: Proc, path: str, timeout: float = 40.0) -> None:
    wait_http(p.url + path, p.proc, timeout)


def stop(p: Proc) -> None:
    stop_process(p.proc)


def env(**extra: str) -> dict[str, str]:
    ours = ("REDIS_", "DASHSCOPE_", "OPENAI_", "EMBEDDING_", "OTEL_")  # never the developer's own settings
    out = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    out.update({"PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    out.update(extra)
    return out


class Stack:
    """The processes of one run; every one is stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def spawn(self, name: str, args: list[str], port: int, extra: dict[str, str] | None = None) -> Proc:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, cwd=ROOT, env=env(**(extra or {})), stdout=log, stderr=subprocess.STDOUT)
        p = Proc(name, f"http://127.0.0.1:{port}", proc)
        self.procs.append(p)
        return p

    def redis(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.spawn("redis", [*args, "--dir", str(self.workdir)], port)
        if not wait_redis(port):
            raise RuntimeError("redis-server did not start")
        return f"redis://127.0.0.1:{port}/0"

    def standin(self, *args: str) -> Proc:
        """The stand-in upstream (bench/standin.py), answering once it is up."""
        port = free_port()
        args = ("--port", str(port), "--api-key", KEY, *args)
        p = self.spawn("standin", [sys.executable, "-m", "bench.standin", *args], port)
        wait_ready(p, "/_stats")
        return p

    def gateway(self, name: str, standin: Proc, redis_url: str, workers: int) -> Proc:
        port = free_port()
        extra = gateway_env(team_config(self.workdir), **upstream_env(standin, redis_url))
        args = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)]
        return self.spawn(name, args, port, extra)

    def close(self) -> None:
        for p in reversed(self.procs):
            stop(p)


@contextmanager
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        s = Stack(Path(tmp))
        try:
            yield s
        finally:
            s.close()
