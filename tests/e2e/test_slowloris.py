"""Slowloris from a separate process (tests/support/slowloris.py): thousands of connections that never finish a
request head (or a body). Throughout, a real client's requests succeed within 1 s and /readyz answers;
the upstream's breaker stays closed; every partial connection is closed by the head deadline (or
evicted at the connection cap) and counted.

Two gateways: one with the default settings and the machine's descriptor limit (the deadline does the
work), one started with a 1,024-descriptor limit, where the attack is larger than the connection cap and
the cap (descriptor limit minus the reserve) keeps room for the upstream, Redis and health traffic."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
import threading
import time
import uuid

import httpx
import orjson
import pytest

from tests.support.polling import eventually
from tests.support.processes import ROOT, TLS, Gateway, GatewayFactory, StandIn, clean_env

HEAD_TIMEOUT_S = 10.0  # the default of http_head_timeout_s
ATTACK = 3000

SLOWLORIS = "tests/support/slowloris.py"  # run from ROOT


def closed_total(gw: Gateway) -> dict[str, float]:
    return gw.counts("gateway_connections_closed_total", "reason")


def breaker_open(gw: Gateway) -> bool:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    return any(float(v) > 0 for v in re.findall(r"gateway_breaker_open\{[^}]*\} ([0-9.e+]+)", text))


class RealClient(threading.Thread):
    """New connections, one request after another: embeddings (a new text each time) and /readyz."""

    def __init__(self, gw: Gateway) -> None:
        super().__init__(daemon=True)
        self.gw = gw
        self.stop = threading.Event()
        self.results: list[tuple[str, int, float]] = []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            body = {"model": "text-embedding-v4", "input": f"real client {i} {uuid.uuid4().hex[:8]}"}
            for path in ("/v1/embeddings", "/readyz"):
                t = time.monotonic()
                try:
                    if path == "/readyz":  # TLS: httpx would load the CA bundle for each call (~25 ms of CPU)
                        status = httpx.get(self.gw.url + path, timeout=5, verify=TLS).status_code
                    else:
                        status = self.gw.post(path, json=body, timeout=5).status_code
                except httpx.HTTPError:
                    status = 0
                self.results.append((path, status, time.monotonic() - t))
            time.sleep(0.2)  # paced: a client asking a few times a second, not a load test


def attack(gw: Gateway, *args: str) -> tuple[dict[str, object], RealClient]:
    port = gw.url.rsplit(":", 1)[1]
    client = RealClient(gw)
    client.start()
    eventually(lambda: client.results, what="the real client's first answer")  # served before the attack
    proc = subprocess.run(
        [sys.executable, SLOWLORIS, "--port", port, "--connections", str(ATTACK), "--hold", "60", *args],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    client.stop.set()
    client.join(10)
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(proc.stdout.strip().splitlines()[-1])
    return orjson.loads(proc.stdout.strip().splitlines()[-1]), client


def check_real_client(client: RealClient) -> None:
    worst = max(t for _, _, t in client.results)
    print(f"real client: {len(client.results)} requests, slowest {worst * 1000:.0f} ms")
    assert len(client.results) >= 20, client.results
    slow = [r for r in client.results if r[1] != 200 or r[2] > 1.0]
    assert not slow, f"{len(slow)} of {len(client.results)} real requests failed or took over 1 s: {slow[:5]}"


def test_partial_heads_are_closed_by_the_deadline_while_clients_are_served(
    gateways: GatewayFactory, standin: StandIn
) -> None:
    gw = gateways.start()
    summary, client = attack(gw)
    check_real_client(client)
    assert summary["opened"] == ATTACK and summary["still_open"] == 0, summary
    assert summary["closed_by_server"] == ATTACK, summary
    assert HEAD_TIMEOUT_S - 1 <= float(summary["closed_after_median"]) <= HEAD_TIMEOUT_S + 3, summary  # type: ignore[arg-type]
    assert float(summary["closed_after_max"]) <= HEAD_TIMEOUT_S + 5, summary  # type: ignore[arg-type]
    assert closed_total(gw).get("head_timeout", 0) >= ATTACK
    assert not breaker_open(gw)


def test_beyond_the_descriptor_budget_idle_connections_are_evicted(gateways: GatewayFactory, standin: StandIn) -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1024:
        pytest.skip("the hard descriptor limit is below 1024")
    gw = gateways.start(nofile=1024)
    summary, client = attack(gw)
    check_real_client(client)
    assert summary["still_open"] == 0 and summary["closed_by_server"] == ATTACK, summary
    counts = closed_total(gw)
    print(counts)
    assert counts.get("evicted_slow", 0) >= ATTACK - 1024, counts  # partial heads: slow after 0.1 s
    # A connection is refused only when none can go: every open one still inside its head's 0.1 s grace or
    # being answered. The attack opens its connections in bursts; a loaded CI run refused 63 of 3,000 so
    # (the real client above was served throughout): a few per cent at most.
    assert counts.get("refused", 0) <= ATTACK // 20, counts
    assert not breaker_open(gw)
    assert "Too many open files" not in gw.output()


def test_a_body_sent_too_slowly_is_closed_per_read(gateways: GatewayFactory, standin: StandIn) -> None:
    gw = gateways.start(env={"HTTP_BODY_TIMEOUT_S": "2"})
    port = gw.url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [sys.executable, SLOWLORIS, "--port", port, "--connections", "50", "--hold", "30", "--body",
         "--drip", "3"],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    summary = orjson.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["closed_by_server"] == 50 and float(summary["closed_after_max"]) < 6, summary
    assert closed_total(gw).get("body_timeout", 0) >= 50
    assert standin.calls() == []
