"""The gateway as a process on managed-Redis shapes: a password, TLS with a private CA, Sentinel. It caches
through each; given a wrong password or an untrusted certificate it still serves (uncached), and its log
and /readyz name the cause, never the password."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.support.polling import eventually
from tests.support.processes import Gateway, GatewayFactory, stop
from tests.support.redisfarm import SentinelSet, Single, redis_password, redis_sentinel, redis_tls, start_password

__all__ = ["redis_password", "redis_sentinel", "redis_tls"]


def embed(gw: Gateway, texts: list[str]) -> httpx.Response:
    body = {"model": "text-embedding-v4", "input": texts, "dimensions": 64}
    r = gw.post("/v1/embeddings", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r


def writes(gw: Gateway) -> float:
    """The cache writes the gateway has finished (its /metrics)."""
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    name = "gateway_cache_operation_duration_seconds_count{"
    return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(name) and 'op="write"' in x)


def readyz(gw: Gateway) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(gw.url + "/readyz", timeout=10).json()
    return body


def shared_cache(gateways: GatewayFactory, url: str, env: dict[str, str] | None = None) -> None:
    """Two gateways on `url`: what one fetched, the other serves from Redis (its own hot cache never saw it)."""
    a, b = gateways.start(redis_url=url, env=env), gateways.start(redis_url=url, env=env)
    try:
        texts = [f"shape {i} {uuid.uuid4()}" for i in range(3)]
        assert embed(a, texts).headers["x-cache-misses"] == "3"
        # The answer goes out while its vectors are written (a request of `a`'s own would wait on the flight,
        # one of `b`'s on the lease, and be counted as coalesced): ask `b` once the write is done.
        eventually(lambda: writes(a) >= 1, within=10, interval=0.05, what="a's cache write")
        assert embed(b, texts).headers["x-cache-hits"] == "3"
        assert readyz(b)["cache"]["shared"] is True
        listed = httpx.get(a.url + "/v1/batches", headers=a.headers, timeout=10)  # the jobs run on the same Redis
        assert listed.status_code == 200, listed.text
    finally:
        stop(a.proc)
        stop(b.proc)


def refused(
    gateways: GatewayFactory, url: str, secret: str | None, cause: str, env: dict[str, str] | None = None
) -> None:
    """A gateway on a Redis it cannot use: it serves every request uncached, and says why."""
    gw = gateways.start(redis_url=url, env=env)
    try:
        texts = [f"refused {uuid.uuid4()}"]
        assert embed(gw, texts).headers["x-cache-misses"] == "1"
        assert embed(gw, texts).headers["x-cache-hits"] in ("0", "1")  # the per-worker hot cache may answer
        state = readyz(gw)
        assert state["cache"]["shared"] is False and cause in state["cache"]["cause"]
        assert state["limits"]["shared"] is False and cause in state["limits"]["cause"]
        jobs = httpx.get(gw.url + "/v1/batches", headers=gw.headers, timeout=10)  # off, saying why
        assert jobs.status_code == 503 and cause in jobs.text, jobs.text
        assert secret is None or secret not in jobs.text
        eventually(lambda: cause in gw.output(), within=5, interval=0.1, what=f"{cause!r} logged")
        out = gw.output()
        assert f"cache: Redis at 127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}: {cause}" in out
        assert "ConnectionError" not in out and "Traceback" not in out
        assert out.count("batch jobs are off") == 1, out
        assert secret is None or secret not in out
    finally:
        stop(gw.proc)


def test_password(gateways: GatewayFactory, redis_password: Single) -> None:
    shared_cache(gateways, redis_password.url)
    wrong = redis_password.url.replace(redis_password.password or "", "wrong-password-123456")
    refused(gateways, wrong, "wrong-password-123456", "authentication failed")


def test_tls_with_a_private_ca(gateways: GatewayFactory, redis_tls: Single) -> None:
    # What is tested is the TLS shape, not the deadline: on a loaded runner a handshake took longer than
    # the default 0.25 s, and the gateway rightly answered uncached (x-cache-hits 0 where 3 were cached).
    patient = {"REDIS_TIMEOUT_S": "3"}
    shared_cache(gateways, f"{redis_tls.url}?ssl_ca_certs={redis_tls.ca}", patient)
    refused(gateways, redis_tls.url, redis_tls.password, "TLS verification failed", patient)


def test_sentinel(gateways: GatewayFactory, redis_sentinel: SentinelSet) -> None:
    shared_cache(gateways, redis_sentinel.url)


def test_jobs_redis_lost_later(gateways: GatewayFactory, tmp_path: Path) -> None:
    """The jobs' Redis goes away while the gateway runs: saq's loops say so in a line or two (one per change
    of cause), no traceback, no busy loop of log lines; embeddings are still served."""
    farm = start_password(tmp_path)
    gw = gateways.start(redis_url=farm.url)
    try:
        assert httpx.get(gw.url + "/v1/batches", headers=gw.headers, timeout=10).status_code == 200
        farm.node.kill()
        eventually(lambda: "batch jobs: Redis failed" in gw.output(), within=20, interval=0.2)
        time.sleep(3)  # saq's abort loop runs every second: three more rounds
        embed(gw, [f"lost {uuid.uuid4()}"])
        out = gw.output()
        assert 1 <= out.count("batch jobs: Redis failed") <= 3, out
        assert "Traceback" not in out and (farm.password or "") not in out
    finally:
        stop(gw.proc)
        farm.close()
