"""app/metrics.py and the CLI's multiprocess set-up: bounded labels, series that exist from the start,
worker processes' values merged, dead workers' live gauges dropped."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from app.api.asgi.exchange import exchange_of
from app.cli import prepare_metrics_dir
from app.config.catalog import ModelSpec
from app.config.settings import MULTIPROC_ENV
from app.errors import RateLimited, UpstreamFailed, UpstreamTimeout
from app.inputs.items import text_item
from app.inputs.params import Params
from app.limits.window import TeamQuota
from app.metrics import FAILOVER_REASONS, LIMITS, Metrics
from app.runtime.tally import Tally
from app.service import EmbedRequest
from app.teams.team import Team
from app.upstreams.adapter import Batch, Result
from app.upstreams.caller import upstream_status
from app.upstreams.failures import error_from_response
from app.upstreams.http import Answer
from tests.support.misspath import miss_path
from tests.support.processes import ROOT, clean_env


def values(text: bytes | str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = text.decode() if isinstance(text, bytes) else text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_label_values_come_only_from_configuration() -> None:
    m = Metrics(CollectorRegistry(), models=["m1"], upstreams=["dashscope"], teams=["search"])
    assert (m.model("m1"), m.model("M1"), m.model("anything-a-client-sends")) == ("m1", "other", "other")
    assert (m.upstream("dashscope"), m.upstream("evil")) == ("dashscope", "other")
    assert (m.team("search"), m.team("nobody"), m.team(None)) == ("search", "other", "anonymous")


def test_series_that_alerts_divide_by_exist_at_zero_from_the_start() -> None:
    m = Metrics(CollectorRegistry(), models=["m1"], upstreams=["dashscope"], teams=["search"])
    m.init_routes(["openai"])
    m.init_model(["dashscope"], "m1", ["text", "image"])
    text = m.exposition()
    rejections = values(text, "gateway_ratelimit_rejections_total")
    assert set(rejections) == {(("limit", lim), ("team", t)) for lim in LIMITS for t in ("search", "anonymous")}
    assert set(rejections.values()) == {0.0}
    requests = values(text, "gateway_requests_total")
    assert len(requests) == 3 * 2 and set(requests.values()) == {0.0}
    assert set(values(text, "gateway_upstream_requests_total")) == {
        (("model", "m1"), ("status", s), ("upstream", "dashscope")) for s in ("200", "429")
    }
    assert len(values(text, "gateway_items_total")) == 4
    failovers = values(text, "gateway_upstream_failovers_total")
    assert {dict(k)["reason"] for k in failovers} == set(FAILOVER_REASONS) and set(failovers.values()) == {0.0}


def test_upstream_status_label_is_the_upstreams_own() -> None:
    answer = Answer(503, {}, orjson.dumps({"code": "ModelUnavailable", "message": "busy"}))
    err = error_from_response(answer, "dashscope")
    assert err.status == 502 and upstream_status(err) == "503"  # the client sees 502, the metric says 503
    throttled = error_from_response(Answer(429, {}, b"{}"), "dashscope")
    assert isinstance(throttled, RateLimited) and upstream_status(throttled) == "429"
    assert upstream_status(UpstreamTimeout("slow")) == "timeout"
    assert upstream_status(UpstreamFailed("garbage")) == "error"


def test_the_exchange_is_one_per_request_and_fills_the_log_line() -> None:
    scope = {"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": []}
    exchange = exchange_of(scope)
    assert exchange_of(scope) is exchange and len(exchange.request_id) == 32  # no Observe in front: a new id
    assert exchange.headers is None and exchange.team is None
    exchange.team = "search"
    line: dict[str, object] = {}
    exchange.log_fields(line)
    assert line == {"team": "search"}
    exchange.model, exchange.items, exchange.hits, exchange.misses = "m", 2, 1, 1
    exchange.log_fields(line)
    assert line == {"team": "search", "model": "m", "items": 2, "hits": 1, "misses": 1, "tokens": 0, "upstream_s": 0.0}


WORKER = """
import sys
from prometheus_client import CollectorRegistry
from app.metricfiles import multiprocess_dir
from app.metrics import Metrics
m = Metrics(CollectorRegistry(), multiprocess_dir=multiprocess_dir())
m.requests.labels("openai", "2xx", "anonymous").inc(int(sys.argv[1]))
m.in_flight.inc(int(sys.argv[2]))
m.breaker_open.labels("redis cache").set(int(sys.argv[3]))
print("ready", flush=True)
sys.stdin.read()  # stay alive until the test closes stdin
"""


def start_worker(directory: Path, *args: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, *map(str, args)],
        cwd=ROOT,
        env=clean_env(**{MULTIPROC_ENV: str(directory)}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout and proc.stdout.readline().strip() == "ready"
    return proc


def test_workers_values_are_merged_and_dead_workers_gauges_dropped(tmp_path: Path) -> None:
    reader = Metrics(CollectorRegistry(), multiprocess_dir=str(tmp_path))
    a, b = start_worker(tmp_path, 3, 2, 1), start_worker(tmp_path, 4, 5, 0)
    text = reader.exposition()
    assert sum(values(text, "gateway_requests_total").values()) == 7
    assert values(text, "gateway_requests_in_flight") == {(): 7}  # livesum
    assert values(text, "gateway_breaker_open") == {(("target", "redis cache"),): 1}  # livemax
    a.communicate("")  # worker a dies (as a crash would: nothing marks it dead)
    text = reader.exposition()
    assert sum(values(text, "gateway_requests_total").values()) == 7  # what it counted still counts
    assert values(text, "gateway_requests_in_flight") == {(): 5}
    assert values(text, "gateway_breaker_open") == {(("target", "redis cache"),): 0}
    b.communicate("")


def test_metrics_dir_made_for_several_workers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    assert prepare_metrics_dir(1) is None and MULTIPROC_ENV not in os.environ
    made = prepare_metrics_dir(2)
    try:
        assert made and os.path.isdir(made) and os.environ[MULTIPROC_ENV] == made
    finally:
        os.rmdir(made or "")
        os.environ.pop(MULTIPROC_ENV, None)  # monkeypatch.delenv of an absent name records nothing to undo


def test_metrics_dir_named_by_the_operator_is_emptied_of_old_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old counts")
    (tmp_path / "gauge_livesum_123.db").write_bytes(b"old gauge")
    (tmp_path / "notes.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    assert prepare_metrics_dir(1) is None  # not ours to remove at exit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    missing = tmp_path / "new"
    monkeypatch.setenv(MULTIPROC_ENV, str(missing))
    prepare_metrics_dir(4)
    assert missing.is_dir()


class FixedUpstream:
    """An upstream adapter (the Upstream protocol) that bills 7 tokens per item."""

    name, kind = "dashscope", "dashscope"

    async def embed(self, batch: Batch) -> Result:
        n = len(batch.items)
        return Result(np.ones((n, batch.params.dimension), dtype=np.float32), 7 * n)

    async def close(self) -> None:
        return None


async def test_tokens_billed_and_saved_are_counted_for_the_team_and_model() -> None:
    m = Metrics(CollectorRegistry(), models=["m1"], upstreams=["dashscope"], teams=["search"])
    service = miss_path({"dashscope": FixedUpstream()}, m, concurrency=2)
    spec = ModelSpec(name="m1", upstream="dashscope", upstream_model="m1", dimensions=(4,), default_dimension=4)
    params = Params(dimension=4, send_dimension=False)
    items = [text_item(t, spec, "input") for t in ("one text", "another, longer text")]
    search, stranger = Team("search", None, TeamQuota()), Team("not-configured", None, TeamQuota())
    await service.embed(search, EmbedRequest(spec, params, items))  # 2 misses: 14 tokens billed
    await service.embed(search, EmbedRequest(spec, params, items))  # 2 hits: their estimate saved
    await service.embed(stranger, EmbedRequest(spec, params, items[:1]))
    text = m.exposition()
    billed = values(text, "gateway_upstream_tokens_total")
    saved = values(text, "gateway_cache_saved_tokens_total")
    assert billed == {(("model", "m1"), ("team", "search")): 14.0}
    assert saved == {
        (("model", "m1"), ("team", "search")): float(sum(it.est_tokens for it in items)),
        (("model", "m1"), ("team", "other")): float(items[0].est_tokens),
    }


def samples(text: bytes) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample but the series' creation times."""
    return [
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if not s.name.endswith("_created")
    ]


def test_the_tally_applies_what_prometheus_client_would_once_per_loop_turn() -> None:
    """The hot path's updates (metrics.Tally) with several workers: the same exposition as the same updates
    made directly, bucket bounds included; nothing reaches the registry (the worker's files, which other
    workers' scrapes read) before the loop turn ends, except through /metrics."""
    direct, tallied = (Metrics(CollectorRegistry(), models=["m1"], teams=["search"]) for _ in range(2))
    tallied.tally = Tally(per_turn=True)  # as Metrics makes it with a multiprocess directory
    observed = [0.0, 0.00004, 0.0001, 0.00010001, 0.0003, 0.5, 1.0, 7.0, 100.0]  # 0.0001, 1.0: bucket bounds

    async def updates() -> None:
        for v in observed:
            direct.child(direct.overhead, "openai").observe(v)
            direct.child(direct.requests, "openai", "2xx", "search").inc()
            direct.in_flight.inc()
            tallied.tally.observe(tallied.child(tallied.overhead, "openai"), v)
            tallied.tally.inc(tallied.child(tallied.requests, "openai", "2xx", "search"))
            tallied.tally.inc(tallied.in_flight)
        direct.in_flight.dec(2)
        tallied.tally.inc(tallied.in_flight, -2)
        assert tallied.registry.get_sample_value("gateway_requests_in_flight") == 0.0  # not before the turn ends
        await asyncio.sleep(0)
        assert tallied.registry.get_sample_value("gateway_requests_in_flight") == len(observed) - 2
        tallied.tally.inc(tallied.in_flight)  # and a scrape flushes first
        direct.in_flight.inc()
        assert samples(tallied.exposition()) == samples(direct.exposition())

    asyncio.run(updates())
    assert values(tallied.exposition(), "gateway_overhead_seconds_count") == {(("route", "openai"),): len(observed)}


def test_one_process_tallies_until_a_scrape_which_sees_every_update() -> None:
    """In one process only /metrics reads the registry: the updates wait for it (no flush per loop turn), and
    a scrape right after them sees each one, as the same updates made directly."""
    direct, tallied = (Metrics(CollectorRegistry(), models=["m1"], teams=["search"]) for _ in range(2))
    assert tallied.tally.scrape_only

    async def updates() -> None:
        for round_ in range(3):
            for v in (2**-15, 2**-13, 0.25, 128.0):  # sums exact in binary; 0.25 is a bucket's bound
                direct.child(direct.overhead, "openai").observe(v)
                direct.child(direct.requests, "openai", "2xx", "search").inc()
                tallied.tally.observe(tallied.child(tallied.overhead, "openai"), v)
                tallied.tally.inc(tallied.child(tallied.requests, "openai", "2xx", "search"))
            await asyncio.sleep(0)
            seen = tallied.registry.get_sample_value("gateway_overhead_seconds_count", {"route": "openai"})
            assert seen == 4.0 * round_  # the last scrape's: no flush at the turn's end
            assert samples(tallied.exposition()) == samples(direct.exposition())

    asyncio.run(updates())
    assert values(tallied.exposition(), "gateway_overhead_seconds_count") == {(("route", "openai"),): 12}
