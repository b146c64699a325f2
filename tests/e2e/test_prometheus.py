"""A real Prometheus (the Debian package) scrapes a gateway running two worker processes while a known
traffic mix flows; the dashboards' and alert rules' PromQL is then evaluated against it.

One module-scoped run (about 20 seconds) feeds every test here: the counters equal what was sent, every
dashboard panel and every alert rule returns data, the alerts this traffic should raise are raised (and
only those), and a flood of requests with random model names adds no series.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import (
    DEFAULT_TEAM,
    Gateway,
    GatewayFactory,
    RedisServer,
    StandIn,
    free_port,
    start_redis,
    stop,
    wait_http,
)
from tests.support.promql import (
    ALERTS,
    ROOT,
    Prometheus,
    alert_rules,
    comparison_sides,
    dashboard_queries,
    dashboards,
    exported_names,
    is_number,
    label_values_query,
    metric_names,
    variable_query,
)
from tests.support.traffic import DS_MM, DS_TEXT, OPENAI, ROUTE_LABELS, Mix, ds_image_and_text, ds_text, openai, unique

V4, SMALL, PLUS = "text-embedding-v4", "text-embedding-3-small", "tongyi-embedding-vision-plus"
SLOW_S = 2.6  # above the p99 alert's 2.5s
# The alerts this traffic raises (5xx burst, slow requests, upstream 429s, Redis paused); the others
# (gateway down, cache hit ratio drop) must stay silent.
RAISED = {"GatewayHighErrorRate", "GatewayHighLatencyP99", "GatewayUpstreamThrottling", "GatewayRedisDown"}


@dataclass
class Run:
    gateway: Gateway
    prometheus: Prometheus
    standin: StandIn
    mix: Mix
    exposition: str  # /metrics after all traffic
    series_before_flood: set[str]
    series_after_flood: set[str]
    metrics_dir: str


def series(exposition: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in exposition.splitlines() if line and not line.startswith("#")}


def samples(exposition: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name
    ]


def start_prometheus(workdir: Path, target: str) -> tuple[Prometheus, subprocess.Popen[bytes]]:
    """Prometheus with the repository's config, pointed at `target`, scraping and evaluating every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run scripts/test.sh, which installs the Debian package")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    job = config["scrape_configs"][0]
    job.pop("dns_sd_configs")
    job["static_configs"] = [{"targets": [target]}]
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    args = [
        binary,
        f"--config.file={path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    proc = subprocess.Popen(args, stdout=(workdir / "prometheus.log").open("ab"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/-/ready", proc)
    return Prometheus(url), proc


def send_traffic(mix: Mix, standin: StandIn, redis: RedisServer) -> None:
    first = (
        [openai(V4, unique("alpha", 3)) for _ in range(15)]
        + [ds_text(V4, unique("beta", 2)) for _ in range(8)]
        + [openai(SMALL, unique("gamma", 2)) for _ in range(8)]
        + [ds_image_and_text(PLUS, text) for text in unique("delta", 4)]
    )
    mix.send(first, cache="miss")
    mix.send(first, cache="hit")  # the same requests again: every item from the cache
    standin.control(fail_rate=1.0, fail_modes=["429"])
    mix.send([openai(V4, unique("throttled", 1), status=429) for _ in range(10)])
    standin.control(fail_modes=["500"])
    mix.send([openai(V4, unique("failing", 1), status=502) for _ in range(20)])
    standin.control(fail_rate=0.0, latency_ms=SLOW_S * 1000)
    mix.send([openai(V4, unique("slow", 1)) for _ in range(6)], concurrency=6)
    standin.control(latency_ms=0)
    bad_image = ds_image_and_text(PLUS, "x", status=400)
    bad_image.body["input"]["contents"][0]["image"] = "data:image/png;base64,bm90IGFuIGltYWdl"
    mix.send([ds_text(V4, [], status=400), openai(V4, [], status=400), openai("", ["x"], status=400), bad_image])
    redis.pause()  # the cache times out, its breaker opens; requests are still answered
    try:
        deadline = time.monotonic() + 3.0
        mix.send([ds_text(V4, unique("paused", 1)) for _ in range(8)], concurrency=2)
        time.sleep(max(0.0, deadline - time.monotonic()))
    finally:
        redis.resume()


def flood(mix: Mix) -> tuple[set[str], set[str]]:
    """Requests with random model names, paths and request ids: the series before and after."""
    with httpx.Client(base_url=mix.url, headers=mix.headers, timeout=10) as client:
        mix.other(client, "/no-such-route")  # the first of its kind creates its series
        before = series(client.get("/metrics").text)
        for i in range(20):
            name = f"model-{uuid.uuid4().hex}"
            headers = {"x-request-id": uuid.uuid4().hex}
            for path, body in (
                (OPENAI, {"model": name, "input": "x"}),
                (DS_TEXT, {"model": name, "input": {"texts": ["x"]}}),
                (DS_MM, {"model": name, "input": {"contents": [{"text": "x"}]}}),
            ):
                assert client.post(path, json=body, headers=headers).status_code == 404
                mix.requests[(ROUTE_LABELS[path], "4xx")] += 1
            mix.other(client, f"/{name}/{i}")
        after = series(client.get("/metrics").text)
    return before, after


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, standin_session: StandIn, gateways: GatewayFactory) -> Iterator[Run]:
    standin_session.reset()
    workdir = tmp_path_factory.mktemp("prometheus")
    redis = start_redis(workdir / "redis")
    # One upstream answer per call (no retries, no circuit breaker): the traffic mix expects each request's
    # own status and compares the counters with what the stand-in saw.
    env = {"REDIS_RETRY_AFTER_S": "1", "RETRY_ATTEMPTS": "1", "BREAKER_FAILURES": "1000000"}
    # A team with a budget (and no key: the traffic is the factory's team's): its budget gauges are exported.
    config = workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump({"teams": {"budgeted": {"budget": {"daily": 100, "monthly": 1000}}}}))
    gw = gateways.start(redis_url=redis.url, workers=2, env=env, config=str(config))
    prom, proc = start_prometheus(workdir, gw.url.removeprefix("http://"))
    try:
        prom.wait(lambda: prom.query('up{job="embedding-gateway"} == 1'), "a first scrape of the gateway")
        mix = Mix(gw.url, gw.headers)
        send_traffic(mix, standin_session, redis)
        before, after = flood(mix)
        exposition = httpx.get(gw.url + "/metrics").text
        total = sum(v for _, v in samples(exposition, "gateway_requests_total"))
        prom.wait(lambda: prom.query(f"sum(gateway_requests_total) == {total}"), "a scrape of the final counts")
        found = re.search(r"metrics: multiprocess mode in (\S+)", gw.output())
        assert found, "the gateway did not say where its workers' metrics live"
        yield Run(gw, prom, standin_session, mix, exposition, before, after, found.group(1))
    finally:
        stop(proc)
        stop(redis.proc)


def by(pairs: list[tuple[dict[str, str], float]], *labels: str) -> Counter[tuple[str, ...]]:
    out: Counter[tuple[str, ...]] = Counter()
    for lab, value in pairs:
        out[tuple(lab[k] for k in labels)] += int(value)
    return +out  # drop zeros


def test_both_workers_served_and_their_counts_are_merged(run: Run) -> None:
    per_worker = {}
    for path in Path(run.metrics_dir).glob("counter_*.db"):
        merged = MultiProcessCollector.merge([str(path)])
        per_worker[path.name] = sum(s.value for m in merged for s in m.samples if s.name == "gateway_requests_total")
    assert sum(1 for v in per_worker.values() if v > 0) >= 2, per_worker
    assert sum(per_worker.values()) == sum(run.mix.requests.values())


def test_counters_equal_the_traffic_sent(run: Run) -> None:
    text, mix = run.exposition, run.mix
    assert by(samples(text, "gateway_requests_total"), "route", "status_class") == +mix.requests
    assert by(samples(text, "gateway_items_total"), "model", "modality", "cache") == +mix.items
    assert by(samples(text, "gateway_upstream_tokens_total"), "model") == {(m,): n for m, n in mix.billed.items()}
    assert by(samples(text, "gateway_cache_saved_tokens_total"), "model") == {(m,): n for m, n in mix.saved.items()}
    # Every embedding request is the key's team's (the configured team's series exist, at 0); a path that
    # is no route is counted before any key is read.
    teams = {(lab["route"], lab["team"]) for lab, v in samples(text, "gateway_requests_total") if v}
    assert teams == {(route, DEFAULT_TEAM) for route in ROUTE_LABELS.values()} | {("other", "anonymous")}, teams
    rejections = samples(text, "gateway_ratelimit_rejections_total")
    assert rejections and all(v == 0 for _, v in rejections)  # present, at 0: no limit refused anything
    assert sum(v for _, v in samples(text, "gateway_requests_in_flight")) == 0


def test_upstream_counters_equal_what_the_upstream_saw(run: Run) -> None:
    calls = run.standin.calls()
    seen = Counter(str(c["status"]) for c in calls)
    assert by(samples(run.exposition, "gateway_upstream_requests_total"), "status") == {
        (s,): n for s, n in seen.items()
    }
    # Concurrent misses share upstream calls (micro-batching): at least one call, at most one per request.
    assert 1 <= seen["429"] <= 10 and 1 <= seen["500"] <= 20
    count = sum(v for _, v in samples(run.exposition, "gateway_upstream_batch_size_count"))
    items = sum(v for _, v in samples(run.exposition, "gateway_upstream_batch_size_sum"))
    assert (count, items) == (len(calls), sum(c["n_items"] for c in calls))
    errors = by(samples(run.exposition, "gateway_upstream_errors_total"), "reason")
    assert errors[("RateLimited",)] == seen["429"] and errors[("UpstreamFailed",)] == seen["500"]


def test_prometheus_sees_the_same_counts(run: Run) -> None:
    prom, mix = run.prometheus, run.mix
    assert prom.values("sum by (cache) (gateway_items_total)", "cache") == {
        cache: float(sum(n for (_, _, c), n in mix.items.items() if c == cache)) for cache in ("hit", "miss")
    }
    assert prom.value("sum(gateway_upstream_tokens_total)") == sum(mix.billed.values())
    assert prom.value("sum(gateway_cache_saved_tokens_total)") == sum(mix.saved.values())
    assert prom.value('sum(gateway_requests_total{status_class="5xx"})') == mix.requests[("openai", "5xx")]
    assert prom.value('sum(gateway_redis_errors_total{op="read"})') > 0


def test_random_model_names_add_no_series(run: Run) -> None:
    assert run.series_after_flood == run.series_before_flood
    names = {line.split('model="')[1].split('"')[0] for line in run.series_after_flood if 'model="' in line}
    catalog = {m["id"] for m in httpx.get(run.gateway.url + "/v1/models", headers=run.gateway.headers).json()["data"]}
    assert {V4, SMALL, PLUS} <= names <= catalog | {"other"}


def test_every_dashboard_panel_returns_data(run: Run) -> None:
    exported = exported_names(run.exposition)
    boards = dashboards()
    assert set(boards) == {"overview.json", "cache-and-cost.json", "upstreams.json", "teams.json"}
    checked = 0
    for name, board in boards.items():
        for query in dashboard_queries(name, board):
            missing = metric_names(query.expr) - exported
            assert not missing, f"{query.where} queries {sorted(missing)}, which the gateway does not export"
            assert run.prometheus.has_data(query.expr), f"{query.where} returns no data: {query.expr}"
            checked += 1
    assert checked >= 40


def test_every_dashboard_variable_has_values(run: Run) -> None:
    for name, board in dashboards().items():
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            parsed = label_values_query(variable_query(var))
            assert parsed, f"{name}: variable {var['name']} is not a label_values() query"
            selector, label = parsed
            selector = selector.replace("$job", ".*")
            values = run.prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": selector})
            assert values, f"{name}: variable {var['name']} has no values"


def test_a_panel_on_a_metric_the_gateway_lacks_fails(run: Run) -> None:
    """The checks above can fail: a made-up metric is caught by name and returns no data."""
    expr = "sum(rate(gateway_made_up_total[1m]))"
    assert metric_names(expr) - exported_names(run.exposition) == {"gateway_made_up_total"}
    assert not run.prometheus.has_data(expr)


def test_alert_rules_are_loaded_and_healthy(run: Run) -> None:
    def loaded() -> dict[str, dict[str, object]]:
        groups = run.prometheus.get("/api/v1/rules")["groups"]
        return {r["name"]: r for g in groups for r in g["rules"]}

    assert set(loaded()) == {rule["alert"] for rule in alert_rules()}
    run.prometheus.wait(lambda: all(r["health"] != "unknown" for r in loaded().values()), "every rule evaluated")
    for name, rule in loaded().items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))


def test_every_alert_expression_returns_data(run: Run) -> None:
    for rule in alert_rules():
        run.prometheus.query(rule["expr"])  # accepted as a whole
        for side in comparison_sides(rule["expr"]):
            if not is_number(side):
                assert run.prometheus.has_data(side), f"{rule['alert']}: {side!r} returns no data"


def test_the_traffic_raises_exactly_the_alerts_it_should(run: Run) -> None:
    prom = run.prometheus

    def raised() -> set[str]:
        return set(prom.values("max by (alertname) (max_over_time(ALERTS[10m]))", "alertname"))

    with contextlib.suppress(AssertionError):
        prom.wait(lambda: raised() >= RAISED, "the alerts this traffic raises")
    assert raised() == RAISED


def test_stopping_the_gateway_removes_its_metrics_dir(run: Run) -> None:
    assert os.path.isdir(run.metrics_dir)
    stop(run.gateway.proc)
    assert run.gateway.proc.returncode == 0
    assert not os.path.exists(run.metrics_dir)
