"""The server edge under production's load shapes (issue 19), each shape from its own process
(tests/support/loadshapes.py, slowloris.py), bounded in count and time, on loopback, while a probe client
in this process measures its own requests throughout:

- 150 connections ask for a 26 MB answer (2,048 cached 1,024-float vectors) and never read it: the
  answers are written in slices with backpressure, so memory stays bounded, the write deadline closes
  every stalled connection, the probe is served within 250 ms (p99), and RSS comes back down after;
- one team's 64 unread answers hold its share of the memory budget and no more: another team's large
  answers still find room (before the share, they waited and got 503);
- 5,000 connections drip a body one byte every 8 s: the rate rule closes them, the probe is served;
- 5,000 kept-alive clients send a cache hit each second: no request is lost;
- 32 connections loop on /metrics (no key needed): it is rendered at most ten times a second, the probe is
  served.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import orjson

from bench.standin import expected_vector
from tests.support.loadshapes import KEY_ENV
from tests.support.polling import eventually
from tests.support.processes import ROOT, Gateway, GatewayFactory, RedisServer, StandIn, clean_env
from tests.support.teamkit import write_config

MODEL = "text-embedding-v4"  # the stand-in answers 1,024 floats by default
BIG = 2048  # vectors in a big answer: max_input_items' default
WIDE, WIDE_UPSTREAM = "text-embedding-3-small", "text-embedding-3-small"  # the stand-in's OpenAI route
# Stalled answers of one team: each holds two slices (~0.5 MB) of the memory budget, 75 MB for 150, within
# one team's share of the default budget (a quarter of 384 MiB)
STALLED = 150


def closed_total(gw: Gateway) -> dict[str, float]:
    return gw.counts("gateway_connections_closed_total", "reason")


def rss_mb(gw: Gateway) -> float:
    status = Path(f"/proc/{gw.proc.pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


class Probe(threading.Thread):
    """A client of its own: a small cache hit every 50 ms on a kept-alive connection, each timed; also
    samples the gateway's RSS."""

    def __init__(self, gw: Gateway) -> None:
        super().__init__(daemon=True)
        self.gw = gw
        self.stop = threading.Event()
        self.times: list[float] = []
        self.failures: list[str] = []
        self.peak_rss = 0.0
        self.client = gw.client(timeout=10)
        self.client.post("/v1/embeddings", json={"model": MODEL, "input": "probe"}).raise_for_status()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak_rss = max(self.peak_rss, rss_mb(self.gw))
            t = time.monotonic()
            try:
                r = self.client.post("/v1/embeddings", json={"model": MODEL, "input": "probe"})
                if r.status_code != 200:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
            self.times.append(time.monotonic() - t)
            self.stop.wait(0.05)

    def finish(self) -> float:
        self.stop.set()
        self.join(15)
        self.client.close()
        times = sorted(self.times)
        p99 = times[int(len(times) * 0.99)]
        print(f"probe: {len(times)} requests, p50 {times[len(times) // 2] * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        assert len(times) >= 20 and not self.failures, (len(times), self.failures[:5])
        return p99


def shape_process(
    gw: Gateway, tmp_path: Path, mode: str, body: dict[str, object], *args: str, key: str | None = None
) -> subprocess.Popen[str]:
    body_file = tmp_path / f"{mode}.json"
    body_file.write_bytes(orjson.dumps(body))
    port = gw.url.rsplit(":", 1)[1]
    return subprocess.Popen(
        [sys.executable, "tests/support/loadshapes.py", mode, "--port", port, "--body-file", str(body_file), *args],
        cwd=ROOT, env=clean_env(**{KEY_ENV: key or gw.key or ""}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def summary_of(proc: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    summary: dict[str, object] = orjson.loads(out.strip().splitlines()[-1])
    print(summary)
    return summary


def quiet(bound_s: float) -> float:
    """`bound_s` on a machine whose cores are not oversubscribed; past two runnable processes per core the
    probe's time is mostly waiting for a core, so the bound grows with the load: four times it at two per
    core, eight at four or more (a fresh-clone run at load 12.5 on 2 cores: p99 1.25 s against 1.0)."""
    per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    if per_core <= 2:
        return bound_s
    factor = min(8.0, 2 * per_core)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: bound {bound_s * factor:.2f} s")
    return bound_s * factor


def test_big_answers_to_readers_that_never_read(gateways: GatewayFactory, standin: StandIn, tmp_path: Path) -> None:
    write_timeout = 3.0  # the rule is the same at the default (20 s), the test is shorter
    gw = gateways.start(env={"HTTP_WRITE_TIMEOUT_S": str(write_timeout)})
    big = {"model": MODEL, "input": [f"big answer item {i}" for i in range(BIG)]}
    with gw.client(timeout=120) as client:
        first = client.post("/v1/embeddings", json=big)  # fills the cache: the attack asks for hits
        assert first.status_code == 200 and len(first.json()["data"]) == BIG
        assert len(first.content) > 20_000_000
    probe = Probe(gw)
    time.sleep(1.0)
    before = rss_mb(gw)
    probe.start()
    release = tmp_path / "read-now"
    proc = shape_process(
        gw, tmp_path, "stall", big, "--connections", str(STALLED), "--hold", "150", "--release-file", str(release)
    )
    # Each answer's vectors (8.5 MB) and two slices of its text (0.5 MB) are taken from the memory budget: the
    # team's share (96 MiB) holds about ten of them at once, which the write rule closes (3 s); the rest wait
    # for the team's own bytes (5 s: some get the room of those closed) and get 429.
    ended = lambda: closed_total(gw)["write_timeout"] + waits(gw).get("over_share", 0)  # noqa: E731
    eventually(lambda: ended() >= STALLED, within=150, interval=0.2, what="all closed or refused")
    release.touch()
    summary = summary_of(proc, 60)
    p99 = probe.finish()
    print(f"RSS before {before:.0f} MB, peak {probe.peak_rss:.0f} MB; closed {closed_total(gw)}, budget {waits(gw)}")
    assert summary["sent"] == STALLED and summary["cut"] == STALLED and summary["complete"] == 0, summary
    assert closed_total(gw)["write_timeout"] >= 5 and waits(gw).get("refused", 0) == 0
    assert p99 < quiet(0.25)
    # The answers held share their vectors with the hot cache; each holds two slices, its request's state
    # (2,048 parsed items and keys, the body) and allocator slack: 1.5 MB per connection at most.
    assert probe.peak_rss < before + 300, (before, probe.peak_rss)
    # Handed back once the budget is idle (gc, malloc_trim): within 10 % on a quiet machine (8 % measured);
    # on a loaded one the residue measured up to 18 %: the bound here is 20 % (docs/operations.md).

    def given_back() -> float:
        rss = rss_mb(gw)
        assert rss <= before * 1.2, f"RSS did not come back: {before:.0f} -> {rss:.0f} MB"  # the last figure
        return rss

    print(f"RSS after {eventually(given_back, within=30, interval=0.2):.0f} MB")


def test_one_teams_unread_answers_leave_other_teams_room(
    gateways: GatewayFactory, standin: StandIn, tmp_path: Path
) -> None:
    """Team alpha's readers never read: each answer holds its 2,048 vectors (8.5 MB) and two slices of its
    text (0.5 MB), 64 of them 17 times the whole budget (32 MiB); its share (a quarter, 8 MiB) holds one of
    them (alpha's oldest request, bound by the budget alone), the others wait for alpha's own bytes and get
    429. Team beta's large answers meanwhile find room at once. (Before the share, alpha's stalled answers
    took the whole budget and beta's waited memory_wait_s, then got 503.)"""
    cfg = tmp_path / "gateway.yaml"
    keys = write_config(cfg, {"alpha": {}, "beta": {}})
    gw = gateways.start(config=str(cfg), env={"MEMORY_BUDGET_BYTES": str(32 << 20), "HTTP_WRITE_TIMEOUT_S": "30"})
    big = {"model": MODEL, "input": [f"shared answer item {i}" for i in range(BIG)]}
    beta = httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {keys['beta']}"}, timeout=60)
    first = beta.post("/v1/embeddings", json=big)  # fills the cache: both teams ask for hits
    assert first.status_code == 200 and len(first.content) > 20_000_000, first.text[:300]
    release = tmp_path / "read-now"
    stalled = 64
    proc = shape_process(gw, tmp_path, "stall", big, "--connections", str(stalled), "--hold", "60",
                         "--release-file", str(release), key=keys["alpha"])  # fmt: skip
    try:
        # alpha's answers that found no room have waited memory_wait_s (5 s) and been refused: 429 for its
        # share (before the share: the budget's own 503 for ~30, the others holding the whole budget)
        refusals = lambda: waits(gw).get("over_share", 0) + waits(gw).get("refused", 0)  # noqa: E731
        eventually(lambda: refusals() >= stalled - 2, within=30, interval=0.2, what="alpha's refusals")
        took = []
        for _ in range(3):
            t0 = time.monotonic()
            r = beta.post("/v1/embeddings", json=big)
            took.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text[:300]
            assert [d["index"] for d in r.json()["data"]] == list(range(BIG))
        print(f"beta's answers while alpha held its share: {[f'{t:.2f}' for t in took]} s; budget {waits(gw)}")
        assert max(took) < 5.0  # never waited out memory_wait_s for room alpha held
        assert waits(gw).get("refused", 0) == 0  # nobody got the budget's own 503
        assert waits(gw)["over_share"] >= stalled - 2  # alpha held 2 at most
    finally:
        release.touch()
        beta.close()
    summary = summary_of(proc, 90)
    # the answers alpha's share held come whole once read; the 429s are short answers, not counted complete
    assert summary["sent"] == stalled and 1 <= int(summary["complete"]) <= 2, summary  # type: ignore[call-overload]


def test_distinct_unread_answers_count_their_vectors_in_the_share(
    gateways: GatewayFactory, standin: StandIn, tmp_path: Path
) -> None:
    """Each of alpha's stalled readers asks for its own 2,048 texts: their vectors (8.5 MB a request, as
    float32 bytes that no other request shares) are held until the answer is read, and count toward alpha's
    share of the budget (8 MiB of 32 MiB) with the answer's slices (0.5 MB). One of alpha's answers holds (its
    oldest request is bound by the budget alone); the others wait for alpha's own bytes, then get 429 before
    any upstream call. Beta's requests meanwhile find room. (Before, only the slices counted: alpha's held
    answers kept their vectors beside the share, and a flood of such readers grew the process without bound.)
    The answers are of 2,048 vectors (~21 MB of JSON) so that the kernel's socket buffers cannot take one
    whole: an answer of 512 sometimes went there entirely, and its request ended."""
    cfg = tmp_path / "gateway.yaml"
    keys = write_config(cfg, {"alpha": {}, "beta": {}})
    gw = gateways.start(config=str(cfg), env={"MEMORY_BUDGET_BYTES": str(32 << 20), "HTTP_WRITE_TIMEOUT_S": "30"})
    body = {"model": MODEL, "input": [f"own vectors {i}" for i in range(BIG)]}
    release = tmp_path / "read-now"
    stalled = 24
    standin.reset()
    proc = shape_process(gw, tmp_path, "stall", body, "--connections", str(stalled), "--distinct", "--hold", "60",
                         "--release-file", str(release), key=keys["alpha"])  # fmt: skip
    try:

        def refused() -> bool:
            assert waits(gw).get("over_share", 0) >= stalled - 2, (waits(gw), len(standin.digests()))
            return True

        eventually(refused, within=40, interval=0.2)
        upstream = len(standin.digests())
        with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {keys['beta']}"}, timeout=60) as beta:
            for n in range(2):
                r = beta.post("/v1/embeddings", json={**body, "input": [f"beta's {n} {i}" for i in range(BIG)]})
                assert r.status_code == 200, r.text[:300]
                assert [d["index"] for d in r.json()["data"]] == list(range(BIG))
        print(f"budget {waits(gw)}; upstream items for alpha's {stalled} requests: {upstream}")
        assert waits(gw).get("refused", 0) == 0  # nobody got the budget's own 503
        assert upstream <= 2 * BIG  # the refused requests cost nothing upstream
    finally:
        release.touch()
    summary = summary_of(proc, 90)
    assert summary["sent"] == stalled and 1 <= int(summary["complete"]) <= 2, summary  # type: ignore[call-overload]


def test_requests_refused_for_room_never_read_their_vectors(
    gateways: GatewayFactory, standin: StandIn, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Room for a request's vectors is taken before they are read from the cache, so a request that waits
    for it and is refused holds nothing meanwhile. One gateway fills Redis; a second one, sharing it with
    its hot cache empty, gets alpha's 12 stalled readers, each asking for its own 2,048 cached vectors of
    1,536 dimensions (12.6 MB a request, new bytes read from Redis): one holds (its oldest), the others wait
    5 s for alpha's share and get 429. Had each read its vectors first, the waiters would have held ~140 MB
    beside a 32 MiB budget (measured: +132 MB of RSS; +35 MB with the room taken first): less than 60 MB."""
    cfg = tmp_path / "gateway.yaml"
    keys = write_config(cfg, {"alpha": {}})
    env = {"MEMORY_BUDGET_BYTES": str(32 << 20), "HTTP_WRITE_TIMEOUT_S": "30"}
    stalled = 12
    body = {"model": WIDE, "input": [f"cached wide {uuid.uuid4().hex[:8]} {i}" for i in range(BIG)], "dimensions": 1536}
    filler = gateways.start(config=str(cfg), env=env, redis_url=redis_server.url)
    with httpx.Client(base_url=filler.url, headers={"authorization": f"Bearer {keys['alpha']}"}, timeout=120) as c:
        for n in range(stalled):  # the texts loadshapes' --distinct sends: each connection's own, cached now
            r = c.post("/v1/embeddings", json={**body, "input": [f"{t} #{n}" for t in body["input"]]})
            assert r.status_code == 200, r.text[:300]
    gw = gateways.start(config=str(cfg), env=env, redis_url=redis_server.url)
    time.sleep(1.0)
    before, peak, sampling = rss_mb(gw), [0.0], threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], rss_mb(gw))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    release = tmp_path / "read-now"
    proc = shape_process(gw, tmp_path, "stall", body, "--connections", str(stalled), "--distinct", "--hold", "60",
                         "--release-file", str(release), key=keys["alpha"])  # fmt: skip
    try:
        eventually(lambda: waits(gw).get("over_share", 0) >= stalled - 2, within=40, interval=0.2, what="refusals")
    finally:
        release.touch()
        sampling.set()
        sampler.join(5)
    summary = summary_of(proc, 90)
    print(f"RSS before {before:.0f} MB, peak while refused {peak[0]:.0f} MB; budget {waits(gw)}")
    assert summary["sent"] == stalled and 1 <= int(summary["complete"]) <= 2, summary  # type: ignore[call-overload]
    assert peak[0] < before + 60, (before, peak[0])


def test_wide_misses_wait_for_room_for_their_upstream_answers(gateways: GatewayFactory, standin: StandIn) -> None:
    """An upstream answer is held whole while it is received: a call of 170 vectors of 1,536 floats takes
    6 MiB of the calls' own room (a share of the memory budget) before it is sent. One request of 2,048 new
    texts (13 calls; its own vectors 12.6 MB) at a 96 MiB budget (the calls' room 24 MiB): 4 calls in flight
    at once at most (all 13 at once before), every vector right, in order."""
    calls_at_once(gateways, standin, 96 << 20, latency_ms=300, most=4)


def test_wide_misses_are_answered_when_their_vectors_fill_the_budget(
    gateways: GatewayFactory, standin: StandIn
) -> None:
    """The request's own vectors (12.6 MB) fill the 16 MiB budget but for 4 MB, less than one call's 6 MiB:
    the calls have room of their own (4 MiB, the share), each takes it whole, one at a time, and the request
    is answered. (Calls taking room from the requests' budget waited for the request that waited for them,
    and it got 503.)"""
    calls_at_once(gateways, standin, 16 << 20, latency_ms=20, most=1)


def calls_at_once(gateways: GatewayFactory, standin: StandIn, budget: int, latency_ms: int, most: int) -> None:
    gw = gateways.start(env={"MEMORY_BUDGET_BYTES": str(budget)})
    standin.control(latency_ms=latency_ms)  # each call in flight long enough to overlap the others
    salt = uuid.uuid4().hex[:8]
    texts = [f"wide {salt} {i}" for i in range(BIG)]
    with gw.client(timeout=120) as client:
        r = client.post("/v1/embeddings", json={"model": WIDE, "input": texts, "dimensions": 1536})
    assert r.status_code == 200, r.text[:300]
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(BIG))
    for i in (0, 777, BIG - 1):
        want = expected_vector(WIDE_UPSTREAM, 1536, texts[i])
        np.testing.assert_allclose(np.asarray(data[i]["embedding"], dtype=np.float32), want, rtol=1e-6)
    calls = [c for c in standin.calls() if c["model"] == WIDE_UPSTREAM and not c["failed"]]
    assert sum(c["n_items"] for c in calls) == BIG and len(calls) == 13, [c["n_items"] for c in calls]
    overlap = max(sum(1 for o in calls if o["t"] <= c["t"] < o["done"]) for c in calls)
    print(f"calls in flight at once: {overlap} of {len(calls)}; budgets {waits(gw)} {waits(gw, 'calls')}")
    assert overlap <= most
    assert waits(gw, "calls")["waited"] >= 1 and not any(waits(gw).values())  # the calls waited, for their room


def waits(gw: Gateway, budget: str = "requests") -> dict[str, float]:
    """gateway_memory_budget_total of one budget (requests or calls), by outcome."""
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    found = re.findall(rf'gateway_memory_budget_total\{{budget="{budget}",outcome="(\w+)"\}} ([0-9.e+]+)', text)
    return {outcome: float(v) for outcome, v in found}


def test_slow_bodies_are_closed_by_the_rate_rule(gateways: GatewayFactory, standin: StandIn) -> None:
    gw = gateways.start()  # the defaults: 240 B/s on average once past a 5 s grace
    probe = Probe(gw)
    probe.start()
    port = gw.url.rsplit(":", 1)[1]
    proc = subprocess.run(
        [sys.executable, "tests/support/slowloris.py", "--port", port, "--connections", "5000", "--body", "--drip", "8",
         "--hold", "40", "--batch", "500"],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    p99 = probe.finish()
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = orjson.loads(proc.stdout.strip().splitlines()[-1])
    print(summary)
    assert summary["opened"] == 5000 and summary["closed_by_server"] == 5000, summary
    assert float(summary["closed_after_max"]) < 5.0 + quiet(4.0), summary  # the grace, then the next sweeps
    assert closed_total(gw)["slow_body"] >= 5000
    assert p99 < quiet(1.0)


def test_thousands_of_kept_alive_clients_lose_nothing(
    gateways: GatewayFactory, standin: StandIn, tmp_path: Path
) -> None:
    gw = gateways.start()
    hit = {"model": MODEL, "input": "kept-alive client"}
    gw.post("/v1/embeddings", json=hit, timeout=10).raise_for_status()
    probe = Probe(gw)
    probe.start()
    args = ("--connections", "5000", "--duration", "15", "--answer-timeout", "90")
    summary = summary_of(shape_process(gw, tmp_path, "keepalive", hit, *args), 200)
    p99 = probe.finish()
    print(f"5,000 kept-alive clients at 1 request/s: probe p99 {p99 * 1000:.0f} ms; closes {closed_total(gw)}")
    assert summary["lost"] == 0 and summary["connect_failed"] == 0 and summary["not_ok"] == 0, summary
    # Every client served again and again on its kept-alive connection (up to 15 each; at load 14, with the
    # client's own process starved too, 14,683: so at least 2 each, not 3)
    assert int(summary["ok"]) >= 5000 * 2, summary  # type: ignore[call-overload]
    closed = closed_total(gw)
    assert closed["evicted"] == 0 and closed["refused"] == 0, closed


def test_a_head_that_grows_past_the_header_cap_is_refused_before_it_ends(gateways: GatewayFactory) -> None:
    """llhttp buffers a header without a limit of its own: a head that never ends would grow until the
    head deadline. Past max_header_bytes (and the request line), it gets 431 and the connection closes."""
    gw = gateways.start()
    port = int(gw.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nX-Big: ")
        with contextlib.suppress(OSError):  # the server may close while we still send
            for _ in range(40):
                sock.sendall(b"a" * 4096)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"code":"headers_too_large"' in answer
    with gw.client(timeout=10) as client:  # a normal large body is not a large head
        r = client.post("/v1/embeddings", json={"model": MODEL, "input": [f"{i} " + "x" * 20_000 for i in range(5)]})
        assert r.status_code == 200, r.text[:300]


def test_near_the_cap_answers_announce_the_close(gateways: GatewayFactory, standin: StandIn) -> None:
    """Past 7/8 of the cap every answer says Connection: close, so clients reconnect and the cap is not
    reached by kept-alive connections (eviction at the cap: tests/unit/test_edge_rules.py, test_slowloris)."""
    gw = gateways.start(env={"HTTP_MAX_CONNECTIONS": "16"})
    port = int(gw.url.rsplit(":", 1)[1])
    body = orjson.dumps({"model": MODEL, "input": "near the cap"})
    request = (
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
    )
    request %= (gw.header_lines.encode(), len(body), body)

    def ask(sock: socket.socket) -> bytes:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        return answer.split(b"\r\n\r\n", 1)[0].lower()

    opened = []
    for n in range(1, 15):  # one at a time: each is open on the server's side once answered
        opened.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        head = ask(opened[-1])
        assert (b"connection: close" in head) == (n >= 14), (n, head)  # 7/8 of 16 = 14
    closes = closed_total(gw)
    assert closes["evicted"] == 0 and closes["refused"] == 0, closes
    for s in opened:
        s.close()


def test_a_scrape_loop_cannot_take_the_worker(gateways: GatewayFactory, standin: StandIn) -> None:
    """/metrics needs no key, and a render is milliseconds of the worker's CPU in one step of its event loop:
    32 connections looping on it took the worker from every team. A process renders it at most ten times a
    second (after a burst of five); the scrapes between get the last rendering. 32 connections scrape as fast
    as they are answered for 3 s while two others send hits without a pause (their counts change every
    rendering): at most one distinct answer per 0.1 s and the burst (on the old code, one per render:
    hundreds, and the probe's p50 was 138 ms), the probe's median within its bound, and a scrape after the
    loop is fresh again."""
    gw = gateways.start()
    probe = Probe(gw)
    probe.start()
    bodies: list[bytes] = []
    hits: list[float] = []

    async def flood() -> float:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=gw.url, headers=gw.headers, limits=limits, timeout=30) as c:
            t0 = time.monotonic()
            end = t0 + 3.0

            async def scraping() -> None:
                while time.monotonic() < end:
                    r = await c.get("/metrics")
                    assert r.status_code == 200
                    bodies.append(r.content)

            async def hitting() -> None:
                while time.monotonic() < end:
                    t = time.monotonic()
                    r = await c.post("/v1/embeddings", json={"model": MODEL, "input": "probe"})
                    assert r.status_code == 200, r.text
                    hits.append(time.monotonic() - t)

            await asyncio.gather(*(scraping() for _ in range(32)), hitting(), hitting())
            return time.monotonic() - t0

    took = asyncio.run(flood())
    probe.finish()
    p50 = sorted(probe.times)[len(probe.times) // 2]
    distinct = len(set(bodies))
    hits.sort()
    print(f"{len(bodies)} scrapes in {took:.1f} s, {distinct} distinct; {len(hits)} hits, p50 "
          f"{hits[len(hits) // 2] * 1000:.1f} ms")  # fmt: skip
    assert len(bodies) >= 150 and len(hits) >= 10, (len(bodies), len(hits))
    assert distinct <= took / 0.1 + 5 + 2, (distinct, took)
    assert p50 < quiet(0.05)  # the median: a loaded machine's tail is its own (138 ms on the old code, quiet)

    def counted() -> float:
        found = re.findall(
            r'gateway_requests_total\{route="openai",[^}]*\} ([0-9.e+]+)', httpx.get(gw.url + "/metrics").text
        )
        return sum(float(v) for v in found)

    time.sleep(0.15)
    before = counted()
    time.sleep(0.15)
    with gw.client() as c:
        c.post("/v1/embeddings", json={"model": MODEL, "input": "probe"}).raise_for_status()
    time.sleep(0.15)
    assert counted() == before + 1  # the next scrape renders again
