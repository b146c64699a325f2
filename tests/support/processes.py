"""The real processes tests start: redis-server, the stand-in upstream, the gateway (fixtures in conftest.py).

Every process listens on a free loopback port and is stopped at the end; nothing here touches a Redis
the tests did not start. Process output goes to files under the session's log folder, so that tests
can read everything the gateway wrote (see test_secrets).
"""

from __future__ import annotations

import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.teams.keys import hash_key, new_key
from bench.procs import free_port, stop, wait_http, wait_redis
from tests.support.environment import clean_env

ROOT = Path(__file__).resolve().parents[2]
# Set by scripts/test.sh for the e2e stage, whose files run on several pytest-xdist workers: each worker's
# gateways write their logs (and, at the end, the secrets they were given) under this folder, one subfolder
# per worker (tests/conftest.py), so that the secrets scan run after the workers sees everything every
# gateway wrote (tests/e2e/test_secrets.py).
SHARED_LOGS = "EG_TEST_LOGS"
UPSTREAM_KEY = "sk-standin-0123456789abcdef"
DEFAULT_TEAM = "default"  # the team the factory adds to a config without keys (GatewayFactory.start)
# The local model: the factory starts gateways with LOCAL_MODEL=false unless asked (`local_model=True`). As
# installed, it costs every gateway process 5.3 s of CPU (importing torch, loading the model, in the background)
# and 400 MB (535 against 138 MB of RSS), and its /readyz says 503 until then; measured per start, median of
# 3, on a 2-core machine. The e2e stage starts about a hundred gateway processes, many several at a time for
# Redis, limits and load tests the model does not touch: with it on, test_limits_e2e's burst took 47 s
# where the window allows 18. The session's shared gateways (tests/conftest.py) and the local model's own
# tests run it as installed.
# The TLS context of the tests' one-off httpx clients (Gateway.post, Gateway.client), made once: httpx makes a
# new one for every client otherwise, loading the CA bundle (about 25 ms of CPU each; the gateways are plain
# HTTP, but every client builds it).
TLS = httpx.create_ssl_context()

SECRET_NAME = re.compile(r"key|secret|token|password", re.IGNORECASE)


def secrets_in(value: object, secret: bool = False) -> Iterator[str]:
    """String values found under secret-looking names (api_key, keys, token, ...) in a config mapping."""
    if isinstance(value, dict):
        for name, inner in value.items():
            yield from secrets_in(inner, secret or bool(SECRET_NAME.search(str(name))))
    elif isinstance(value, list):
        for inner in value:
            yield from secrets_in(inner, secret)
    elif secret and isinstance(value, str) and len(value) >= 8:
        yield value


@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


def start_redis(workdir: Path, port: int | None = None) -> RedisServer:
    """A redis-server of its own on a free port (or on `port`, to stand in for one that was killed)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run the README's test command, which installs it")
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--logfile",
            str(workdir / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if wait_redis(port):
        return RedisServer(port, proc, workdir)
    stop(proc)
    raise RuntimeError("redis-server did not start")


@dataclass
class StandIn:
    url: str
    proc: subprocess.Popen[bytes]
    # One client for the tests' control calls (reset, control, calls: thousands a session): httpx.get would
    # make a client per call, which loads the CA bundle into a TLS context first (about 25 ms of CPU each).
    http: httpx.Client = field(default_factory=httpx.Client, repr=False, compare=False)

    @property
    def dashscope_base(self) -> str:
        return self.url + "/api/v1"

    @property
    def openai_base(self) -> str:
        return self.url + "/v1"

    def reset(self) -> None:
        self.http.post(self.url + "/_reset?control=1").raise_for_status()

    def control(self, **values: Any) -> None:
        self.http.post(self.url + "/_control", json=values).raise_for_status()

    def calls(self) -> list[dict[str, Any]]:
        return list(self.http.get(self.url + "/_stats").json()["calls"])

    def digests(self) -> list[str]:
        return [d for c in self.calls() if not c.get("failed") for d in c["digests"]]


def start_standin(log: Path, *args: str) -> StandIn:
    port = free_port()
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.standin", "--port", str(port), "--api-key", UPSTREAM_KEY, *args],
        cwd=ROOT,
        env=clean_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_stats", proc)
    return StandIn(url, proc)


@dataclass
class Gateway:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    # The key of the team the factory added (auth is on unless the test turned it off); None when the
    # test's own config has teams with keys (it sends its own) or auth is off.
    key: str | None = field(default=None, repr=False)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def headers(self) -> dict[str, str]:
        """What a client sends to be let in: the factory's team key (nothing when it made none)."""
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    @property
    def header_lines(self) -> str:
        """The same headers as lines of a request head, for tests that write HTTP by hand."""
        return "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())

    def client(self, **options: Any) -> httpx.Client:
        """An httpx client for this gateway that sends its key."""
        return httpx.Client(base_url=self.url, headers=self.headers, **{"timeout": 30.0, "verify": TLS, **options})

    def post(self, path: str, **options: Any) -> httpx.Response:
        """One POST to `path` with the key (httpx.post's options)."""
        headers = {**self.headers, **options.pop("headers", {})}
        return httpx.post(self.url + path, headers=headers, **{"verify": TLS, **options})

    def counts(self, metric: str, label: str) -> dict[str, float]:
        """A counter of one label from the gateway's /metrics, by that label's value."""
        text = httpx.get(self.url + "/metrics", timeout=10, verify=TLS).text
        found = re.findall(rf'{metric}\{{{label}="(\w+)"\}} ([0-9.e+]+)', text)
        return {value: float(v) for value, v in found}


class GatewayFactory:
    """Starts `embedding-gateway serve` processes wired to the stand-in (and a Redis when given), with the
    product's defaults otherwise: auth required (the factory's team and key unless the config has keyed
    teams: `Gateway.key`, `.headers`, `.client()`), the hot cache on. The local model as installed (the
    product's default) with `local_model=True`, else off: "The local model" above says why. A test of what a
    setting changes says so in `env` (GATEWAY_AUTH=off, with its reason)."""

    def __init__(self, standin: StandIn, logdir: Path) -> None:
        self.standin = standin
        self.logdir = logdir
        self.started: list[Gateway] = []
        # Every secret a gateway of this session was given (environment and config files): test_secrets
        # greps everything the gateways wrote for them. Tests that pass secrets another way add them here.
        self.secrets: set[str] = set()
        # Called with each gateway as it starts: conftest ties it to the fixture (or test) that started it,
        # which stops it when its scope ends.
        self.on_start: Callable[[Gateway], None] = lambda gw: None
        # The key of the team the factory adds to a config without keyed teams: one for the session, so that
        # gateways started from one config serve one team, as replicas do.
        self.key = new_key()
        self.secrets.add(self.key)

    def start(
        self,
        *,
        redis_url: str | None = None,
        config: str | None = None,
        workers: int = 1,
        env: dict[str, str] | None = None,
        upstream_key: str = UPSTREAM_KEY,
        nofile: int | None = None,
        local_model: bool = False,
    ) -> Gateway:
        """A gateway process on a free port, once it answers /healthz. A port taken by another process between
        its pick and the gateway's bind ("address already in use") is picked again (twice at most); any other
        failure to start raises with the end of the gateway's log."""
        for attempt in range(3):
            gw = self._launch(free_port(), redis_url, config, workers, env, upstream_key, nofile, local_model)
            try:
                wait_http(gw.url + "/healthz", gw.proc)
                return gw
            except RuntimeError as exc:
                text = gw.log.read_text(errors="replace") if gw.log.exists() else ""
                if gw.proc.poll() is not None and "address already in use" in text and attempt < 2:
                    continue
                raise RuntimeError(f"{exc}; the end of {gw.log.name}:\n{text[-3000:]}") from None
        raise AssertionError("unreachable")

    def _launch(
        self,
        port: int,
        redis_url: str | None,
        config: str | None,
        workers: int,
        env: dict[str, str] | None,
        upstream_key: str,
        nofile: int | None,
        local_model: bool,
    ) -> Gateway:
        extra = {
            **({} if local_model else {"LOCAL_MODEL": "false"}),  # see "The local model" above
            "DASHSCOPE_API_KEY": upstream_key,
            "DASHSCOPE_BASE_URL": self.standin.dashscope_base,
            "OPENAI_API_KEY": upstream_key,
            "OPENAI_BASE_URL": self.standin.openai_base,
            **(env or {}),
        }
        if redis_url:
            extra["REDIS_URL"] = redis_url
        key = None
        if extra.get("GATEWAY_AUTH", "required") != "off":
            config, key = self._with_a_team(config, self.logdir / f"gateway-{port}.yaml")
        self.secrets.update(self._env_secrets(extra))
        if config:
            self.secrets.update(secrets_in(yaml.safe_load(Path(config).read_text())))
        args = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)]
        if config:
            args += ["--config", config]
        log = self.logdir / f"gateway-{port}.log"
        limit = None if nofile is None else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        proc = subprocess.Popen(
            args, cwd=ROOT, env=clean_env(**extra), stdout=log.open("ab"), stderr=subprocess.STDOUT, preexec_fn=limit
        )
        gw = Gateway(f"http://127.0.0.1:{port}", proc, log, extra, key)
        self.started.append(gw)
        self.on_start(gw)
        return gw

    def _with_a_team(self, config: str | None, path: Path) -> tuple[str | None, str | None]:
        """Auth is on, as users run it: a config whose teams hold no key gets the factory's team (in a copy
        at `path`), whose key the Gateway carries; a config with keyed teams is the test's own."""
        body = (yaml.safe_load(Path(config).read_text()) or {}) if config else {}
        if any(team.get("keys") for team in (body.get("teams") or {}).values()):
            return config, None
        body["teams"] = {**(body.get("teams") or {}), DEFAULT_TEAM: {"keys": [hash_key(self.key)]}}
        path.write_text(yaml.safe_dump(body))
        return str(path), self.key

    @staticmethod
    def _env_secrets(env: dict[str, str]) -> set[str]:
        return {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= 8}

    def close(self) -> None:
        for gw in self.started:
            stop(gw.proc)
