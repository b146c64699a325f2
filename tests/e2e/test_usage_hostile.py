"""The largest page of the usage routes, asked by a team's own key: GET /v1/organization/costs with 180 buckets
of a day reads 4,320 hour hashes of the ledger, each holding every team's fields (the key's filter applies
after the read). With 180 days of history for 6 teams (252 fields an hour, written into the gateway's Redis
as the ledger keeps them), one such call read them all at once: the gateway's peak memory (VmHWM, reset
before the call) rose by ~260 MB (436 MB for 10 teams, whose call held the event loop for up to 1.6 s: a
/healthz waited that long). Read and folded 48 hashes at a time, it rose by ~4 MB. Defaults otherwise
(auth on, Redis)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis
import yaml

from tests.support.memory import PeakGrowth
from tests.support.processes import GatewayFactory, start_redis, stop
from tests.support.teamkit import write_config

DAYS = 180
METRICS = ("requests", "items", "hits", "tokens", "saved_tokens", "cost:USD", "saved:USD")


def test_a_team_reading_180_days_of_costs_holds_a_slice_of_the_ledger_at_a_time(
    gateways: GatewayFactory, tmp_path: Path
) -> None:
    server = start_redis(tmp_path / "redis")
    cfg = tmp_path / "gateway.yaml"
    keys = write_config(cfg, {"alpha": {}})
    g = gateways.start(redis_url=server.url, config=str(cfg))
    try:
        tag = "{" + yaml.safe_load(cfg.read_text())["cache_namespace"] + ":usage}"
        teams = ["alpha", *(f"team{t}" for t in range(5))]
        fields = {f"{team}|key_{k:012d}|{m}|model-{md}": 5
                  for team in teams for k in range(2) for m in METRICS for md in range(3)}  # fmt: skip
        hour = int(time.time()) // 3600 * 3600
        with redis.Redis.from_url(server.url) as r:
            for start in range(0, DAYS * 24, 240):
                pipe = r.pipeline(transaction=False)
                for h in range(start, start + 240):
                    pipe.hset(f"{tag}:h:{hour - h * 3600}", mapping=fields)
                pipe.execute()
        peak = PeakGrowth(g.proc.pid)
        query = {
            "start_time": hour - (DAYS - 1) * 86_400,
            "bucket_width": "1d",
            "limit": DAYS,
            "group_by": "project_id",
        }
        r = httpx.get(g.url + "/v1/organization/costs", params=query,
                      headers={"Authorization": f"Bearer {keys['alpha']}"}, timeout=120)  # fmt: skip
        grown_mb = peak.mb()
        assert r.status_code == 200, r.text
        buckets = r.json()["data"]
        assert len(buckets) == DAYS and {x["project_id"] for b in buckets for x in b["results"]} == {"alpha"}
        assert grown_mb < 100, f"one page of costs raised the gateway's peak memory by {grown_mb:.0f} MB"
    finally:
        stop(g.proc)
        stop(server.proc)
